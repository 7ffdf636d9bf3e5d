"""Turn per-layer scores into a pruning plan under a parameter budget (FLAP §3.3, structures).

    UL-UM  uniform layers, uniform modules: each layer drops round(p * groups) head groups and the
           channels that bring the layer to ratio p, ranked by raw scores inside the layer. With a
           whole number of groups (p * groups an integer) both modules lose the same share, as in
           the paper; otherwise (SmolLM2 has 3 groups per layer) the MLP absorbs the rounding, so the
           model is pruned by p and not by p plus a rounding of the heads.
    UL-MM  uniform layers, manual modules: each layer drops remove_heads / L heads; channels fill the
           rest of the layer's parameter budget.
    AL-MM  adaptive layers, manual modules: remove_heads heads and the budget's channels are taken
           globally by standardized score.
    AL-AM  adaptive layers, adaptive modules: one global threshold over standardized head-group and
           channel scores. Units are taken in score order, each counted at its true parameter cost
           (a GQA group of g query heads costs (2g + 2) * head_dim * hidden, a channel 3 * hidden,
           plus biases), and the cut is where the kept cost is closest to the target.

Every layer keeps its best `min_groups` groups and `min_channels` channels whatever the budget.
With `across_layers`, the adaptive structures standardize each module type once over all layers instead
of per layer (scores in residual units of a post-norm family, see scores.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ...plan import LayerCost, StructuredLayerPlan
from .scores import pool_groups, standardize, standardize_across


@dataclass
class LayerScores:
    """Channel-level scores of one layer: `attention` has one entry per o_proj input channel."""

    attention: torch.Tensor
    mlp: torch.Tensor


class BudgetError(ValueError):
    """The requested budget is impossible under the per-layer minimums."""


def select(
    structure: str,
    scores: list[LayerScores],
    costs: list[LayerCost],
    group_width: int,
    ratio: float,
    min_groups: int,
    min_channels: int,
    remove_groups: int | None = None,
    across_layers: bool = False,
) -> list[StructuredLayerPlan]:
    """The plan for `structure`; `remove_groups` is the manual head budget of UL-MM / AL-MM, in groups."""
    adaptive = structure.startswith("AL")
    attention, channels = [s.attention for s in scores], [s.mlp for s in scores]
    if adaptive and across_layers:
        attention, channels = standardize_across(attention), standardize_across(channels)
    elif adaptive:
        attention, channels = [standardize(a) for a in attention], [standardize(c) for c in channels]
    groups = [pool_groups(a, group_width) for a in attention]
    _check_minimums(groups, channels, min_groups, min_channels)
    if structure in ("UL-UM", "UL-MM"):
        # per layer: a re-pruned model's layers need not have the same number of groups
        removable = [max(g.numel() - min_groups, 0) for g in groups]
        if structure == "UL-UM":  # the ratio's share of every layer's groups
            per_layer = [min(round(ratio * g.numel()), n) for g, n in zip(groups, removable)]
        else:  # the manual count, spread evenly
            count = remove_groups // len(groups)
            short = [i for i, n in enumerate(removable) if count > n]
            if short:
                raise BudgetError(
                    f"UL-MM cannot remove {count} head groups per layer with min_head_groups={min_groups}: layer "
                    f"{short[0]} has {groups[short[0]].numel()} head groups. Lower remove_heads, or use AL-MM."
                )
            per_layer = [count] * len(groups)
        plans = []
        for g, c, cost, n_groups in zip(groups, channels, costs, per_layer):
            # channels take up the rest of the layer's budget, so the ratio holds to one channel per layer
            target = ratio * cost.total + cost.added_bias - n_groups * cost.group_cost
            n_channels = min(max(round(target / cost.channel_cost), 0), max(c.numel() - min_channels, 0))
            plans.append(_plan(g, c, n_groups, n_channels))
        return plans
    if structure == "AL-MM":
        total = sum(cost.total for cost in costs)
        group_masks = _lowest_globally(groups, remove_groups, min_groups, "head groups")
        removed_cost = sum(int((~m).sum()) * cost.group_cost for m, cost in zip(group_masks, costs))
        # every layer has the same channel cost in the supported families
        target = ratio * total + sum(cost.added_bias for cost in costs) - removed_cost
        n_channels = max(round(target / costs[0].channel_cost), 0)
        n_channels = min(n_channels, sum(max(c.numel() - min_channels, 0) for c in channels))
        channel_masks = _lowest_globally(channels, n_channels, min_channels, "channels")
        return [StructuredLayerPlan(_kept(gm), _kept(cm)) for gm, cm in zip(group_masks, channel_masks)]
    if structure == "AL-AM":
        return _global_threshold(groups, channels, costs, ratio, min_groups, min_channels)
    raise ValueError(f"Unknown structure {structure!r}.")


def _check_minimums(groups, channels, min_groups: int, min_channels: int) -> None:
    """Refuse minimums no layer can keep (a re-pruned layer narrower than a minimum keeps all it has)."""
    most_groups, most_channels = max(g.numel() for g in groups), max(c.numel() for c in channels)
    if min_groups > most_groups:
        raise BudgetError(f"min_head_groups={min_groups} exceeds the {most_groups} head groups per layer.")
    if min_channels > most_channels:
        raise BudgetError(f"min_channels={min_channels} exceeds the {most_channels} MLP channels per layer.")


def _plan(groups: torch.Tensor, channels: torch.Tensor, n_groups: int, n_channels: int) -> StructuredLayerPlan:
    """Drop the `n_groups` lowest groups and the `n_channels` lowest channels of one layer."""
    kept_groups = keep_top(groups, groups.numel() - n_groups)
    return StructuredLayerPlan(kept_groups, keep_top(channels, channels.numel() - n_channels))


def keep_top(scores: torch.Tensor, count: int) -> torch.Tensor:
    """Sorted indices of the `count` highest scores; ties go to the lower index, the same on every run."""
    order = torch.sort(scores, descending=True, stable=True).indices
    return order[:count].sort().values


def _kept(mask: torch.Tensor) -> torch.Tensor:
    return mask.nonzero().flatten()


def _protected(scores: torch.Tensor, minimum: int) -> torch.Tensor:
    mask = torch.zeros_like(scores, dtype=torch.bool)
    mask[keep_top(scores, minimum)] = True
    return mask


def _lowest_globally(scores: list[torch.Tensor], count: int, minimum: int, what: str) -> list[torch.Tensor]:
    """Keep-masks after removing the `count` lowest-scoring units across all layers."""
    protected = [_protected(s, minimum) for s in scores]
    candidates = torch.cat([torch.where(p, torch.inf, s) for s, p in zip(scores, protected)])
    removable = int(sum((~p).sum() for p in protected))
    if count > removable:
        raise BudgetError(f"Cannot remove {count} {what}: only {removable} can go while each layer keeps "
                          f"its minimum of {minimum}.")
    keep = torch.ones_like(candidates, dtype=torch.bool)
    keep[torch.sort(candidates, stable=True).indices[:count]] = False
    return list(keep.split([s.numel() for s in scores]))


def _global_threshold(groups, channels, costs, ratio, min_groups, min_channels) -> list[StructuredLayerPlan]:
    """AL-AM: keep units in score order until the kept parameters are closest to (1 - ratio) of the total."""
    scores, unit_costs, protected = [], [], []
    for g, c, cost in zip(groups, channels, costs):
        scores += [g, c]
        unit_costs += [torch.full_like(g, cost.group_cost, dtype=torch.float64),
                       torch.full_like(c, cost.channel_cost, dtype=torch.float64)]
        protected += [_protected(g, min_groups), _protected(c, min_channels)]
    flat_scores = torch.cat(scores)
    flat_costs = torch.cat(unit_costs)
    flat_protected = torch.cat(protected)
    total = sum(cost.total for cost in costs)
    target_kept = (1.0 - ratio) * total - sum(cost.added_bias for cost in costs)
    target_kept -= float(flat_costs[flat_protected].sum())
    order = torch.sort(torch.where(flat_protected, -torch.inf, flat_scores), descending=True, stable=True).indices
    order = order[: int((~flat_protected).sum())]
    cumulative = torch.cat([torch.zeros(1, dtype=torch.float64), flat_costs[order].cumsum(0)])
    n_kept = int(torch.argmin((cumulative - target_kept).abs()))
    keep = flat_protected.clone()
    keep[order[:n_kept]] = True
    masks = keep.split([s.numel() for s in scores])
    return [StructuredLayerPlan(_kept(masks[2 * i]), _kept(masks[2 * i + 1])) for i in range(len(groups))]
