"""Integer MLP widths: apportion fractional targets and align widths to hardware-friendly multiples.

Shared by every structured method: CFSP turns its keep ratios into widths with `apportion`, and
`round_to` (CFSP's "cuda friendly" option) rounds any method's per-layer widths with
`round_kept_channels`, keeping the total as close as possible to what the method selected.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from ..plan import StructuredLayerPlan


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
    own score order. Head groups are untouched. Returns new `StructuredLayerPlan`s.
    """
    widths = [int(s.numel()) for s in channel_scores]
    counts = [int(p.kept_channels.numel()) for p in plans]
    kept = apportion(counts, widths, unit=round_to, minimum=min_channels, allow_full=True)
    out = []
    for plan, scores, n in zip(plans, channel_scores, kept):
        order = torch.sort(scores, descending=True, stable=True).indices
        out.append(StructuredLayerPlan(plan.kept_groups, order[:n].sort().values))
    return out
