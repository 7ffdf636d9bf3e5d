"""Pieces every benchmark script shares: the dense model they start from, and optional plotting."""

from __future__ import annotations

import os
from typing import Any


def load_dense(model_dir: str | None) -> tuple[str, Any, Any]:
    """(checkpoint dir, tokenizer, float32 model in eval mode); SmolLM2-135M when `model_dir` is None."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from optimum_flap.utils.gguf import smollm2_checkpoint

    torch.manual_seed(0)
    model_dir = model_dir or smollm2_checkpoint()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    return model_dir, tokenizer, model


def model_name(model_dir: str) -> str:
    """The model as the results name it: the checkpoint directory's name, never a local path."""
    return os.path.basename(os.path.normpath(model_dir))


def pyplot() -> Any | None:
    """matplotlib's pyplot on the file-only Agg backend, or None (with a note) when it is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no plot written")
        return None
    return plt


def save_figure(fig: Any, path: str) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"plot written to {path}")
