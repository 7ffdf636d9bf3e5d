"""`to_gguf`: a dense or pruned checkpoint as one GGUF file that llama.cpp (and Ollama, LM Studio) runs.

Which llama.cpp architecture describes the model:

| model | architecture |
|---|---|
| Llama or Mistral, every layer the same size | `llama` (biases are optional there) |
| Qwen2, dense shapes, no output biases | `qwen2` |
| any other pruned Llama / Mistral / Qwen2 | `deci`: each layer built from its own head, kv head and FFN counts |

Qwen3 (q/k RMSNorm) and Gemma have no llama.cpp architecture with per-layer widths and their norms, so
they are refused, as is anything else the file could load but compute differently.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import gguf
import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from ..architectures import UnsupportedArchitectureError, attention_geometry, get_architecture
from ..checkpoint.finite import finite_stream
from ..checkpoint.target import check_output_file
from .outtypes import OUTTYPES, WRITER_TYPES
from .tensors import GGUFExportError, LayerSizes, decoder_tensors, measure_layers, padded_width
from .tokenizer import add_tokenizer

#: the `gguf` library's file type for each type it writes directly
FILE_TYPES = {
    "f32": gguf.LlamaFileType.ALL_F32,
    "f16": gguf.LlamaFileType.MOSTLY_F16,
    "bf16": gguf.LlamaFileType.MOSTLY_BF16,
    "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0,
}
EXPORTABLE_FAMILIES = ("llama", "mistral", "qwen2")
REFUSED_FAMILIES = {
    "qwen3": "Qwen3 normalises every query and key head (q_norm, k_norm); llama.cpp's only architecture with "
             "per-layer widths (deci) has no such norms, so a pruned Qwen3 would load and compute something else",
    "gemma": "Gemma's (1 + weight) norms and scaled embeddings have no llama.cpp architecture with per-layer widths",
}
#: the first bytes of every GGUF file: what `overwrite` may replace
GGUF_MAGIC = b"GGUF"
Q8_BLOCK = 32  # elements per Q8_0 block (one scale per block)


def _load(model_or_dir: nn.Module | str | os.PathLike, tokenizer: Any) -> tuple[nn.Module, Any]:
    from transformers import AutoTokenizer

    if isinstance(model_or_dir, nn.Module):
        model = model_or_dir
        source = getattr(model, "name_or_path", None) or getattr(model.config, "_name_or_path", None)
    else:
        from ..checkpoint import load_pruned_model

        source = os.fspath(model_or_dir)
        if not os.path.isfile(os.path.join(source, "config.json")):
            raise GGUFExportError(f"{source} is not a checkpoint directory (no config.json)")
        model = load_pruned_model(source, dtype=torch.float32)
    if tokenizer is None:
        if not source or not os.path.isdir(source):
            raise GGUFExportError("pass tokenizer=...: the model has no local directory to read its tokenizer from")
        tokenizer = AutoTokenizer.from_pretrained(source, config=model.config)
    return model, tokenizer


def _family(config: Any) -> str:
    model_type = config.model_type
    for refused, reason in REFUSED_FAMILIES.items():
        if model_type.startswith(refused):
            raise GGUFExportError(f"cannot export model_type={model_type!r} to GGUF: {reason}")
    if model_type not in EXPORTABLE_FAMILIES:
        try:
            get_architecture(config)
        except UnsupportedArchitectureError as error:
            raise GGUFExportError(str(error)) from None
        raise GGUFExportError(f"cannot export model_type={model_type!r} to GGUF; supported: "
                              f"{', '.join(EXPORTABLE_FAMILIES)}")
    if getattr(config, "hidden_act", "silu") != "silu":
        raise GGUFExportError(f"hidden_act={config.hidden_act!r}: llama.cpp's llama/deci FFN is SiLU-gated")
    if getattr(config, "partial_rotary_factor", 1.0) != 1.0:
        raise GGUFExportError("partial rotary embeddings cannot be written: llama.cpp's deci rotates whole heads")
    return model_type


def choose_architecture(model: nn.Module, family: str, sizes: list[LayerSizes]) -> str:
    """The stock llama.cpp architecture when it can describe the model, `deci` otherwise (see module doc)."""
    uniform = len({(s.num_heads, s.num_kv_heads, s.ffn_width) for s in sizes}) == 1
    if not uniform:
        return "deci"
    if family != "qwen2":
        return "llama"
    arch = get_architecture(model)
    dense_width = sizes[0].num_heads * attention_geometry(model.config)[2] == model.config.hidden_size
    output_bias = any(getattr(arch.attention(layer), arch.attention_output).bias is not None
                      or getattr(arch.mlp(layer), arch.mlp_output).bias is not None
                      for layer in arch.decoder_layers(model))
    # llama.cpp's qwen2 sizes attn_output as hidden x hidden and loads no attn_output / ffn_down bias
    return "qwen2" if dense_width and not output_bias else "deci"


def _rope_frequency_factors(model: nn.Module, size: int, theta: float) -> np.ndarray | None:
    """llama.cpp's `rope_freqs` (default frequency / model frequency) for scaled RoPE, None when unscaled."""
    rotary = model.get_submodule("model.rotary_emb")
    if getattr(rotary, "attention_scaling", 1.0) != 1.0:
        raise GGUFExportError("RoPE scaling with an attention factor (YaRN, LongRoPE) cannot be written")
    default = 1.0 / theta ** (torch.arange(0, size, 2, dtype=torch.float64) / size)
    factors = default / rotary.inv_freq.detach().double().cpu()
    if torch.allclose(factors, torch.ones_like(factors), rtol=1e-6):
        return None
    return factors.float().numpy()


def _rope_theta(config: Any) -> float:
    parameters = getattr(config, "rope_parameters", None) or {}
    return float(parameters.get("rope_theta", getattr(config, "rope_theta", 10000.0)))


def _add_hyperparameters(writer: gguf.GGUFWriter, model: nn.Module, sizes: list[LayerSizes], pad_to: int,
                         per_layer: bool) -> None:
    config = model.config
    size = attention_geometry(config)[2]
    heads = [s.num_heads for s in sizes]
    kv_heads = [s.num_kv_heads for s in sizes]
    widths = [padded_width(s.ffn_width, pad_to) for s in sizes]
    writer.add_block_count(len(sizes))
    writer.add_context_length(int(config.max_position_embeddings))
    writer.add_embedding_length(int(config.hidden_size))
    writer.add_feed_forward_length(widths if per_layer else widths[0])
    writer.add_head_count(heads if per_layer else heads[0])
    writer.add_head_count_kv(kv_heads if per_layer else kv_heads[0])
    # llama.cpp would derive the head size from layer 0 (hidden / heads), wrong once heads are pruned
    writer.add_key_length(size)
    writer.add_value_length(size)
    writer.add_rope_dimension_count(size)
    writer.add_rope_freq_base(_rope_theta(config))
    writer.add_layer_norm_rms_eps(float(config.rms_norm_eps))
    writer.add_vocab_size(int(config.vocab_size))


def _encode(tensor: torch.Tensor, outtype: str) -> tuple[np.ndarray, gguf.GGMLQuantizationType]:
    """The tensor in the file's type: vectors stay f32; matrices whose rows are not whole Q8_0 blocks use f16."""
    data = tensor.detach().to(device="cpu", dtype=torch.float32).numpy()
    if data.ndim == 1 or outtype == "f32":
        return data, gguf.GGMLQuantizationType.F32
    if outtype == "q8_0" and data.shape[-1] % Q8_BLOCK == 0:
        qtype = gguf.GGMLQuantizationType.Q8_0
    elif outtype == "bf16":
        qtype = gguf.GGMLQuantizationType.BF16
    else:
        return data.astype(np.float16), gguf.GGMLQuantizationType.F16
    return gguf.quants.quantize(data, qtype), qtype


def _write_file(path: Path, model: nn.Module, tokenizer: Any, outtype: str, pad_to: int) -> str:
    config = model.config
    family = _family(config)
    arch = get_architecture(config)
    sizes = measure_layers(model, arch)
    llama_arch = choose_architecture(model, family, sizes)
    writer = gguf.GGUFWriter(path, llama_arch)
    writer.add_name(str(getattr(config, "_name_or_path", "") or family).rsplit("/", 1)[-1] or family)
    writer.add_file_type(int(FILE_TYPES[outtype]))
    _add_hyperparameters(writer, model, sizes, pad_to, per_layer=llama_arch == "deci")
    with tempfile.TemporaryDirectory(prefix="gguf-tokenizer-") as tokenizer_dir:
        tokenizer.save_pretrained(tokenizer_dir)
        add_tokenizer(writer, tokenizer, Path(tokenizer_dir), int(config.vocab_size))
    tensors: Iterable[tuple[str, torch.Tensor]] = decoder_tensors(
        model, arch, sizes, pad_to, interleave_rotary=llama_arch != "qwen2")
    factors = _rope_frequency_factors(model, attention_geometry(config)[2], _rope_theta(config))
    if factors is not None:
        writer.add_tensor("rope_freqs.weight", factors)
    with torch.no_grad():
        for name, tensor in tqdm(list(finite_stream(tensors, "export GGUF")), desc="encoding tensors", leave=False):
            data, qtype = _encode(tensor, outtype)
            writer.add_tensor(name, data, raw_dtype=qtype if qtype != gguf.GGMLQuantizationType.F32 else None)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file(progress=False)
    writer.close()
    return llama_arch


def _quantize(source: Path, target: Path, outtype: str) -> None:
    """Run llama.cpp's quantiser (through llama-cpp-python) on an f32 GGUF file."""
    try:
        import llama_cpp
    except ImportError:
        raise GGUFExportError(f"outtype {outtype!r} uses llama.cpp's quantiser: pip install llama-cpp-python, or "
                              "export f32/f16 and run llama.cpp's llama-quantize") from None
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{outtype.upper()}")
    status = llama_cpp.llama_model_quantize(os.fsencode(source), os.fsencode(target), params)
    if status != 0:
        raise GGUFExportError(f"llama.cpp's quantiser failed on {source} (status {status})")


def to_gguf(model_or_dir: nn.Module | str | os.PathLike, path: str | os.PathLike, outtype: str = "f16",
            pad_to: int = 32, tokenizer: Any = None, overwrite: bool = False) -> str:
    """Write a dense or pruned Llama / Mistral / Qwen2 model, its tokenizer and chat template to one GGUF file.

    `model_or_dir` is a loaded model or a checkpoint directory (either checkpoint kind). FFN widths are
    zero-padded to a multiple of `pad_to` (exact; 1 turns it off) so every matrix quantises. `outtype`:
    f32, f16, bf16 and q8_0 are written directly; q4_0, q4_k_m, ... come from llama.cpp's quantiser and need
    llama-cpp-python. The file is written atomically. An existing `path` is replaced only with
    `overwrite` and only when it is a GGUF file outside the model's directory (`check_output_file`):
    never a directory, a weights file or anything else. Non-finite weights are refused
    (`NonFiniteError`). Returns the llama.cpp architecture written (`llama`, `qwen2` or `deci`).
    """
    if outtype not in OUTTYPES:
        raise GGUFExportError(f"outtype={outtype!r}; allowed: {', '.join(OUTTYPES)}")
    if not isinstance(pad_to, int) or pad_to < 1:
        raise GGUFExportError(f"pad_to={pad_to!r}; allowed: an integer >= 1 (1 disables padding)")
    target = Path(path)
    if not target.parent.is_dir():
        raise GGUFExportError(f"cannot write {target}: directory {target.parent} does not exist")
    source = None if isinstance(model_or_dir, nn.Module) else os.fspath(model_or_dir)
    if source is None:
        from ..checkpoint.save import source_directory

        source = source_directory(model_or_dir)
    check_output_file(target, overwrite, GGUF_MAGIC, "GGUF", {"model": source})
    model, tokenizer = _load(model_or_dir, tokenizer)
    handle, staging_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent)
    os.close(handle)
    staging = Path(staging_name)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(staging, 0o666 & ~umask)  # mkstemp's 0600 would make the served file private
    try:
        if outtype in WRITER_TYPES:
            llama_arch = _write_file(staging, model, tokenizer, outtype, pad_to)
        else:
            unquantized = staging.with_suffix(".f32")
            try:
                llama_arch = _write_file(unquantized, model, tokenizer, "f32", pad_to)
                _quantize(unquantized, staging, outtype)
            finally:
                unquantized.unlink(missing_ok=True)
        os.replace(staging, target)
    finally:
        staging.unlink(missing_ok=True)
    return llama_arch
