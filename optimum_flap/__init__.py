"""optimum-flap: retraining-free structured pruning of LLMs for the Hugging Face ecosystem."""

from .architectures import UnsupportedArchitectureError
from .checkpoint import CheckpointError, load_pruned_model, push_to_hub, save_pruned_model
from .configuration import FlapConfig
from .data import CalibrationDataError
from .methods.flap.selection import BudgetError
from .models import register_auto_classes
from .pruner import FlapPruner
from .recovery import RecoveryConfig
from .version import __version__

# `AutoModelForCausalLM.from_pretrained(pruned_dir)` works with no flag once the package is imported
register_auto_classes()

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
