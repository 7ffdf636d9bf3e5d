"""LoRA recovery of pruned models with PEFT and the transformers Trainer (CFSP's importance-guided LoRA)."""

from .configuration import DEFAULT_TARGET_MODULES, RANK_ALLOCATIONS, RecoveryConfig
from .lora import (
    adapted_modules,
    block_costs,
    build_lora_config,
    layer_ranks,
    lora_parameter_count,
    measure_importance,
    recorded_importance,
)
from .train import RECOVERY_KEY, RecoveryResult, TokenWindows, recover, training_arguments

__all__ = [
    "DEFAULT_TARGET_MODULES",
    "RANK_ALLOCATIONS",
    "RECOVERY_KEY",
    "RecoveryConfig",
    "RecoveryResult",
    "TokenWindows",
    "adapted_modules",
    "block_costs",
    "build_lora_config",
    "layer_ranks",
    "lora_parameter_count",
    "measure_importance",
    "recorded_importance",
    "recover",
    "training_arguments",
]
