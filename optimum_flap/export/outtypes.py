"""The GGUF tensor types `to_gguf` writes, by name: importable without torch or gguf (the CLI's --help)."""

#: types written directly by the `gguf` library
WRITER_TYPES = ("f32", "f16", "bf16", "q8_0")
#: types produced by llama.cpp's own quantiser (llama-cpp-python) from an f32 file
QUANTIZER_TYPES = ("q4_0", "q4_1", "q5_0", "q5_1", "q4_k_m", "q5_k_m", "q6_k")
OUTTYPES = (*WRITER_TYPES, *QUANTIZER_TYPES)
