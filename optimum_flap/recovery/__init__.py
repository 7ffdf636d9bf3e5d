"""Recovery of pruned models with the transformers Trainer: CFSP's importance-guided LoRA (PEFT) or full
fine-tuning, on next-token labels or distilled from the dense model.

The names below are imported on first access, so `RecoveryConfig` (and the command line's `--help`)
does not pay for torch, transformers and peft.
"""

from __future__ import annotations

from ..utils.lazy import lazy_exports

#: public name -> module defining it
_EXPORTS = {
    "DEFAULT_TARGET_MODULES": ".configuration",
    "FINETUNING": ".configuration",
    "OBJECTIVES": ".configuration",
    "RANK_ALLOCATIONS": ".configuration",
    "RecoveryConfig": ".configuration",
    "check_same_tokenizer": ".distillation",
    "distillation_loss": ".distillation",
    "load_teacher": ".distillation",
    "teacher_targets": ".distillation",
    "adapted_modules": ".lora",
    "block_costs": ".lora",
    "build_lora_config": ".lora",
    "layer_ranks": ".lora",
    "lora_parameter_count": ".lora",
    "measure_importance": ".lora",
    "recorded_importance": ".lora",
    "apply_zero_masks": ".sparsity",
    "zero_masks": ".sparsity",
    "TeacherLogitsCache": ".teacher_cache",
    "teacher_identity": ".teacher_cache",
    "RECOVERY_KEY": ".train",
    "RecoveryResult": ".train",
    "TokenWindows": ".train",
    "recover": ".train",
    "training_arguments": ".train",
    "DistillationTrainer": ".trainer",
    "NonFiniteLossError": ".trainer",
}


__getattr__ = lazy_exports(__name__, _EXPORTS)

__all__ = sorted(_EXPORTS)
