"""Wanda's score (Sun et al. 2023, arXiv 2306.11695, §3 Eq. 1): weight magnitude times input activation norm.

S_ij = |W_ij| * ||X_j||_2, where X_j is input channel j over all calibration tokens. Pair with
`masks.unstructured_mask(scores, ratio, "output1")` (Wanda's per-output comparison group) or `masks.n_m_mask`.
"""

from __future__ import annotations

import torch

from ...engine.statistics import ChannelStatistics


def input_norm(statistics: ChannelStatistics) -> torch.Tensor:
    """||X_j||_2 per input channel over the calibration tokens: sqrt(mean(x_j^2) * tokens)."""
    return torch.sqrt(statistics.mean_square * statistics.count)


def wanda_scores(weight: torch.Tensor, norm: torch.Tensor) -> torch.Tensor:
    """|W| * ||X_j||_2 in float32, broadcast along the input dimension; `norm` from `input_norm`."""
    if norm.shape != weight.shape[-1:]:
        raise ValueError(
            f"Input norm has shape {tuple(norm.shape)}; the weight {tuple(weight.shape)} needs ({weight.shape[-1]},)."
        )
    return weight.detach().float().abs() * norm.to(device=weight.device, dtype=torch.float32)
