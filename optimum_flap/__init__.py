"""optimum-flap: retraining-free structured pruning of LLMs for the Hugging Face ecosystem.

The public names are imported on first access, so ``import optimum_flap`` (and the command line's
``--help``) does not pay for torch and transformers; `FlapConfig` itself never imports them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .utils.lazy import lazy_exports
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

__getattr__ = lazy_exports(__name__, _EXPORTS)


def __dir__() -> list[str]:
    return sorted(__all__)


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
