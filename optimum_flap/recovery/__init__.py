"""Recovery of pruned models with the transformers Trainer: CFSP's importance-guided LoRA (PEFT) or full
fine-tuning, on next-token labels or distilled from the dense model."""

from .configuration import DEFAULT_TARGET_MODULES, FINETUNING, OBJECTIVES, RANK_ALLOCATIONS, RecoveryConfig
from .distillation import check_same_tokenizer, distillation_loss, load_teacher, teacher_targets
from .lora import (
    adapted_modules,
    block_costs,
    build_lora_config,
    layer_ranks,
    lora_parameter_count,
    measure_importance,
    recorded_importance,
)
from .sparsity import apply_zero_masks, zero_masks
from .teacher_cache import TeacherLogitsCache
from .train import RECOVERY_KEY, RecoveryResult, TokenWindows, recover, training_arguments
from .trainer import DistillationTrainer, NonFiniteLossError

__all__ = [
    "DEFAULT_TARGET_MODULES",
    "FINETUNING",
    "OBJECTIVES",
    "RANK_ALLOCATIONS",
    "RECOVERY_KEY",
    "DistillationTrainer",
    "NonFiniteLossError",
    "RecoveryConfig",
    "RecoveryResult",
    "TeacherLogitsCache",
    "TokenWindows",
    "adapted_modules",
    "apply_zero_masks",
    "block_costs",
    "build_lora_config",
    "check_same_tokenizer",
    "distillation_loss",
    "load_teacher",
    "teacher_targets",
    "zero_masks",
    "layer_ranks",
    "lora_parameter_count",
    "measure_importance",
    "recorded_importance",
    "recover",
    "training_arguments",
]
