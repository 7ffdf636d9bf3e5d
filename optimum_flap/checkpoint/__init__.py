"""Pruned checkpoints that reload with plain transformers (see docs/checkpoint-format.md)."""

from .card import CARD_TAGS, build_model_card, pruning_stats
from .hub import push_to_hub
from .save import (
    CHECKPOINT_FORMATS,
    DENSE_SIZES_KEY,
    FORMAT_KEY,
    REMOTE_CODE_FORMAT,
    STOCK_FORMAT,
    CheckpointError,
    CheckpointPlan,
    load_pruned_model,
    plan_checkpoint,
    pruned_model_class,
    save_pruned_model,
)
from .target import check_output_dir

__all__ = [
    "CARD_TAGS",
    "CHECKPOINT_FORMATS",
    "DENSE_SIZES_KEY",
    "FORMAT_KEY",
    "REMOTE_CODE_FORMAT",
    "STOCK_FORMAT",
    "CheckpointError",
    "CheckpointPlan",
    "build_model_card",
    "check_output_dir",
    "load_pruned_model",
    "plan_checkpoint",
    "pruned_model_class",
    "pruning_stats",
    "push_to_hub",
    "save_pruned_model",
]
