"""Export dense and pruned checkpoints to GGUF for llama.cpp, Ollama and LM Studio (see docs/serving.md).

The names below are imported on first access, so the command line's `--help` does not pay for torch.
"""

from __future__ import annotations

import importlib
from typing import Any

#: public name -> module defining it
_EXPORTS = {
    "OUTTYPES": ".outtypes",
    "GGUFExportError": ".tensors",
    "choose_architecture": ".writer",
    "to_gguf": ".writer",
}


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name], __name__), name)
    globals()[name] = value
    return value


__all__ = sorted(_EXPORTS)
