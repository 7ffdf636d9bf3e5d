"""CFSP (Wang et al., COLING 2025): coarse block budgets from hidden-state angular distance, fine FFN channel scores."""

from ..widths import apportion
from .allocation import ALLOCATIONS, keep_ratios, sigmoid_weights
from .importance import IMPORTANCE_METRICS, BlockImportance, token_distances
from .method import BLOCK_IMPORTANCE_KEY, CfspMethod
from .scores import CHANNEL_SCORES, channel_scores, head_group_scores, released_three_w_one_wa

__all__ = [
    "ALLOCATIONS",
    "BLOCK_IMPORTANCE_KEY",
    "CHANNEL_SCORES",
    "IMPORTANCE_METRICS",
    "BlockImportance",
    "CfspMethod",
    "apportion",
    "channel_scores",
    "head_group_scores",
    "keep_ratios",
    "released_three_w_one_wa",
    "sigmoid_weights",
    "token_distances",
]
