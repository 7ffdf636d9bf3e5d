"""What a structured recipe can reach, from shapes alone, before calibrating.

Every layer keeps at least `min_head_groups` head groups and `min_channels` MLP channels, and with
`round_to` a kept MLP width is a multiple of it. A `round_to` at or above a layer's MLP width leaves that
MLP nothing to remove (and bias compensation then makes the model larger); a `pruning_ratio` above what
the minimums leave removable ends with every layer at its minimum. The first is refused, the second
warned about with the reachable maximum, by the structured methods' `check`.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

from ..plan import LayerCost
from .flap.selection import BudgetError


class UnreachableTargetWarning(UserWarning):
    """`pruning_ratio` is above what the per-layer minimums (and `round_to`) let a run remove."""


def smallest_kept_width(round_to: int | None, min_channels: int) -> int:
    """The narrowest MLP a layer may keep: `min_channels` rounded up to a multiple of `round_to`."""
    unit = round_to or 1
    return math.ceil(max(min_channels, 1) / unit) * unit


def check_round_to(widths: Sequence[int], round_to: int | None, min_channels: int) -> None:
    """Refuse a `round_to` that leaves some layer's MLP nothing to remove, naming the layer and what to use."""
    if not round_to:
        return
    smallest = smallest_kept_width(round_to, min_channels)
    frozen = [i for i, width in enumerate(widths) if smallest >= width]
    if frozen:
        narrowest = min(widths)
        raise BudgetError(
            f"round_to={round_to} leaves no MLP channel removable in layer(s) {frozen} (MLP width "
            f"{widths[frozen[0]]}): the narrowest kept width that is a multiple of {round_to} and keeps "
            f"min_channels={min_channels} is {smallest}. Use round_to below {narrowest} (a divisor of it, such "
            f"as {_largest_proper_divisor(narrowest)}), or leave round_to unset."
        )


def _largest_proper_divisor(width: int) -> int:
    return next((d for d in range(width // 2, 0, -1) if width % d == 0), 1)


def reachable_ratio(
    costs: Sequence[LayerCost], removable_groups: Sequence[int], widths: Sequence[int], min_channels: int,
    round_to: int | None,
) -> float:
    """The largest fraction of the decoder's linear parameters a run can remove (net of compensation biases)."""
    floor = smallest_kept_width(round_to, min_channels)
    removed = sum(
        groups * cost.group_cost + max(width - floor, 0) * cost.channel_cost - cost.added_bias
        for cost, groups, width in zip(costs, removable_groups, widths)
    )
    total = sum(cost.total for cost in costs)
    return max(removed, 0) / total if total else 0.0


def warn_if_unreachable(ratio: float, reachable: float, config: object) -> None:
    """Warn (`UnreachableTargetWarning`) when `ratio` exceeds `reachable`, saying what limits it and what to do."""
    if ratio <= reachable + 1e-9:
        return
    limits = f"min_head_groups={config.min_head_groups}, min_channels={config.min_channels}"
    if config.round_to:
        limits += f", round_to={config.round_to}"
    highest = math.floor(reachable * 1000) / 1000
    warnings.warn(
        f"pruning_ratio={ratio} cannot be reached: with {limits} at most {reachable:.2%} of the decoder's linear "
        f"parameters can be removed, and the run will stop there. Use pruning_ratio <= {highest}, or lower the "
        "minimums.",
        UnreachableTargetWarning,
        stacklevel=3,
    )
