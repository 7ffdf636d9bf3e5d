"""CFSP's per-block budget: keep ratios from a sigmoid of the centred block importances.

As the released `prune_cfsp` (see docs/cfsp.md), with the importances as means and an explicit
temperature T (the released code's 1e4 / `--a` on token sums):

    s_l = sigmoid((I_l - mean(I)) / T)
    safety rescale, if max(s) / mean(s) * (1 - p) >= 1:
        s_l <- mean(s) + (s_l - mean(s)) * kappa,  kappa = mean(s) (1/(1-p) - 1) / (max(s) - mean(s)) / 1.05
    keep ratio r_l = s_l / mean(s) * (1 - p)

so mean(r) = 1 - p, 0 < r_l < 1, and a block that changes its input more keeps more. `"uniform"`
gives every block 1 - p (the ablation). Integer widths are then apportioned by `..widths.apportion`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .config import ALLOCATIONS

#: the released code's margin below 100% for the most important block
SAFETY_MARGIN = 1.05


def sigmoid_weights(importance: Sequence[float] | torch.Tensor, temperature: float) -> torch.Tensor:
    """s_l / mean(s) with s_l = sigmoid((I_l - mean(I)) / T), float64: mean 1, increasing in I_l."""
    values = torch.as_tensor(importance, dtype=torch.float64)
    s = torch.sigmoid((values - values.mean()) / temperature)
    return s / s.mean()


def keep_ratios(
    importance: Sequence[float] | torch.Tensor,
    ratio: float,
    allocation: str = "sigmoid",
    temperature: float = 1e4 / (128 * 1024),
) -> torch.Tensor:
    """Per-block keep ratios with mean `1 - ratio`, each in (0, 1) when 0 < ratio < 1."""
    if allocation not in ALLOCATIONS:
        raise ValueError(f"Unknown allocation {allocation!r}; allowed: {', '.join(ALLOCATIONS)}.")
    if not 0.0 <= ratio < 1.0:
        raise ValueError(f"ratio must be in [0, 1), got {ratio}.")
    n = len(importance)
    keep = 1.0 - ratio
    if allocation == "uniform" or n == 1:
        return torch.full((n,), keep, dtype=torch.float64)
    s = sigmoid_weights(importance, temperature)  # mean 1
    top = float(s.max())
    if top * keep >= 1.0 and top > 1.0:  # safety rescale: shrink deviations, the mean stays 1
        kappa = (1.0 / keep - 1.0) / (top - 1.0) / SAFETY_MARGIN
        s = 1.0 + (s - 1.0) * kappa
    return s * keep
