"""CFSP's per-block budget: keep ratios from a sigmoid of the centred block importances.

As the released `prune_cfsp` (see docs/cfsp.md), with the importances as means and an explicit
temperature T (the released code's 1e4 / `--a` on token sums):

    s_l = sigmoid((I_l - mean(I)) / T)
    safety rescale, if max(s) / mean(s) * (1 - p) >= 1:
        s_l <- mean(s) + (s_l - mean(s)) * kappa,  kappa = mean(s) (1/(1-p) - 1) / (max(s) - mean(s)) / 1.05
    keep ratio r_l = s_l / mean(s) * (1 - p)

so mean(r) = 1 - p, 0 < r_l < 1, and a block that changes its input more keeps more. `"uniform"`
gives every block 1 - p (the ablation). Integer widths are then apportioned so that their *total*
stays as close as possible to the target, in multiples of `round_to` (largest remainders first).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

ALLOCATIONS = ("sigmoid", "uniform")
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


def apportion(
    targets: Sequence[float],
    totals: Sequence[int],
    unit: int = 1,
    minimum: int = 1,
    allow_full: bool = False,
) -> list[int]:
    """Integer kept widths near `targets`, multiples of `unit`, whose sum is nearest the targets' sum.

    Each width lies in [max(minimum, unit) rounded up to `unit`, totals[l]] and, unless `allow_full`, below
    totals[l] (no block keeps 100%). A layer narrower than that range keeps everything. Rounding goes
    to the layers with the largest fractional parts first (largest-remainder apportionment).
    """
    lows, highs, fixed = [], [], []
    for total in totals:
        low = max(1, math.ceil(max(minimum, 1) / unit))
        high = total // unit
        if not allow_full and high * unit >= total:
            high -= 1
        fixed.append(high < low)
        lows.append(low)
        highs.append(max(high, low))
    wanted = [t / unit for t in targets]
    base = [min(max(math.floor(w), lo), hi) for w, lo, hi in zip(wanted, lows, highs)]
    frac = [w - math.floor(w) for w in wanted]
    budget = round(sum(w for w, f in zip(wanted, fixed) if not f)) - sum(b for b, f in zip(base, fixed) if not f)
    step = 1 if budget > 0 else -1
    order = sorted(range(len(base)), key=lambda i: (-frac[i], i) if step > 0 else (frac[i], -i))
    changed = True
    while budget and changed:
        changed = False
        for i in order:
            if budget and not fixed[i] and lows[i] <= base[i] + step <= highs[i]:
                base[i] += step
                budget -= step
                changed = True
    return [total if f else b * unit for b, f, total in zip(base, fixed, totals)]


def round_kept_channels(plans: list, channel_scores: Sequence[torch.Tensor], round_to: int, min_channels: int = 1):
    """Make each plan's kept MLP width a multiple of `round_to`, keeping the total nearest the selected one.

    For any method's plans (FLAP's structures included): channels are added or dropped by each layer's
    own score order. Head groups are untouched. Returns new `LayerPlan`s.
    """
    from ...plan import LayerPlan

    widths = [int(s.numel()) for s in channel_scores]
    counts = [int(p.kept_channels.numel()) for p in plans]
    kept = apportion(counts, widths, unit=round_to, minimum=min_channels, allow_full=True)
    out = []
    for plan, scores, n in zip(plans, channel_scores, kept):
        order = torch.sort(scores, descending=True, stable=True).indices
        out.append(LayerPlan(plan.kept_groups, order[:n].sort().values))
    return out
