"""Export dense and pruned checkpoints to GGUF for llama.cpp, Ollama and LM Studio (see docs/serving.md).

The names below are imported on first access, so the command line's `--help` does not pay for torch.
"""

from __future__ import annotations

from ..utils.lazy import lazy_exports

#: public name -> module defining it
_EXPORTS = {
    "OUTTYPES": ".outtypes",
    "GGUFExportError": ".tensors",
    "choose_architecture": ".writer",
    "to_gguf": ".writer",
}


__getattr__ = lazy_exports(__name__, _EXPORTS)

__all__ = sorted(_EXPORTS)
