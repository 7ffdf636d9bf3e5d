"""Unstructured and N:M sparsity numerics: masks, Wanda / magnitude / SparseGPT scores and LLM-Barber's rebuild.

Pure tensor functions (no model loops): the calibration pipeline feeds them statistics and turns
their keep-masks (True = kept, shaped like the Linear weight) into `MaskLayerPlan`s. See docs/barber.md.
"""

from .barber import (
    BARBER_GRANULARITIES,
    SquaredGradientMean,
    barber_scores,
    rebuild_mask,
    rebuild_masks,
    rebuild_n_m_mask,
    swap_counts,
)
from .barber_block import dense_gradient_statistics, rebuild_block_masks
from .magnitude import magnitude_scores
from .masks import (
    GRANULARITIES,
    NMPattern,
    follows_n_m,
    n_m_mask,
    parse_sparsity_type,
    pruned_count,
    unstructured_mask,
)
from .sparsegpt import HessianAccumulator, sparsegpt_prune
from .wanda import input_norm, wanda_scores

__all__ = [
    "BARBER_GRANULARITIES",
    "GRANULARITIES",
    "HessianAccumulator",
    "NMPattern",
    "SquaredGradientMean",
    "barber_scores",
    "dense_gradient_statistics",
    "follows_n_m",
    "input_norm",
    "magnitude_scores",
    "n_m_mask",
    "parse_sparsity_type",
    "pruned_count",
    "rebuild_block_masks",
    "rebuild_mask",
    "rebuild_masks",
    "rebuild_n_m_mask",
    "sparsegpt_prune",
    "swap_counts",
    "unstructured_mask",
    "wanda_scores",
]
