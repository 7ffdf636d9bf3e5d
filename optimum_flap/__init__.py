"""optimum-flap: retraining-free structured pruning of LLMs for the Hugging Face ecosystem.

The public names are imported on first access, so ``import optimum_flap`` (and the command line's
``--help``) does not pay for torch and transformers; `FlapConfig` itself never imports them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._auto_registration import register_when_transformers_loads
from .version import __version__

#: public name -> module defining it
_EXPORTS = {
    "BudgetError": ".methods.flap.selection",
    "CalibrationDataError": ".data",
    "CheckpointError": ".checkpoint",
    "FlapConfig": ".configuration",
    "FlapPruner": ".pruner",
    "RecoveryConfig": ".recovery",
    "UnsupportedArchitectureError": ".architectures",
    "load_pruned_model": ".checkpoint",
    "push_to_hub": ".checkpoint",
    "save_pruned_model": ".checkpoint",
}

if TYPE_CHECKING:
    from .architectures import UnsupportedArchitectureError
    from .checkpoint import CheckpointError, load_pruned_model, push_to_hub, save_pruned_model
    from .configuration import FlapConfig
    from .data import CalibrationDataError
    from .methods.flap.selection import BudgetError
    from .pruner import FlapPruner
    from .recovery import RecoveryConfig


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name], __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


# `AutoModelForCausalLM.from_pretrained(pruned_dir)` works with no flag once the package is imported
register_when_transformers_loads()

__all__ = [
    "BudgetError",
    "CalibrationDataError",
    "CheckpointError",
    "FlapConfig",
    "FlapPruner",
    "RecoveryConfig",
    "UnsupportedArchitectureError",
    "__version__",
    "load_pruned_model",
    "push_to_hub",
    "save_pruned_model",
]
