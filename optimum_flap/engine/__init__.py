"""The calibration engine: one block-by-block pipeline that drives pruning methods through hooks."""

from .activations import STORAGES, ActivationStore
from .apply import apply_layer_plan
from .block_inputs import layer_attention_type
from .pipeline import BlockContext, CalibrationPipeline
from .statistics import ChannelStatistics

__all__ = [
    "STORAGES",
    "ActivationStore",
    "BlockContext",
    "CalibrationPipeline",
    "ChannelStatistics",
    "apply_layer_plan",
    "layer_attention_type",
]
