"""CFSP (Wang et al., COLING 2025): coarse block budgets from hidden-state angular distance, fine FFN channel scores.

Importing this package registers the method and imports no torch; the computational names below are
loaded on first access.
"""

from __future__ import annotations

from ...utils.lazy import lazy_exports
from ..registry import register_method
from .config import ALLOCATIONS, CHANNEL_SCORES, IMPORTANCE_METRICS, CfspOptions

register_method("cfsp", CfspOptions, "optimum_flap.methods.cfsp.method:CfspMethod",
                "CFSP: block importance budgets, FFN channel scores (coarse-to-fine)")

#: name -> submodule defining it (imported on first access: they need torch)
_LAZY = {
    "apportion": "..widths",
    "keep_ratios": ".allocation",
    "sigmoid_weights": ".allocation",
    "BlockImportance": ".importance",
    "token_distances": ".importance",
    "BLOCK_IMPORTANCE_KEY": ".method",
    "CfspMethod": ".method",
    "channel_scores": ".scores",
    "head_group_scores": ".scores",
    "released_three_w_one_wa": ".scores",
}


__getattr__ = lazy_exports(__name__, _LAZY)

__all__ = ["ALLOCATIONS", "CHANNEL_SCORES", "IMPORTANCE_METRICS", "CfspOptions", *_LAZY]
