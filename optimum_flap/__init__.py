"""optimum-flap: retraining-free structured pruning of LLMs for the Hugging Face ecosystem."""

from .architectures import UnsupportedArchitectureError
from .configuration import FlapConfig
from .data import CalibrationDataError
from .methods.flap.selection import BudgetError
from .pruner import FlapPruner
from .version import __version__

__all__ = [
    "BudgetError",
    "CalibrationDataError",
    "FlapConfig",
    "FlapPruner",
    "UnsupportedArchitectureError",
    "__version__",
]
