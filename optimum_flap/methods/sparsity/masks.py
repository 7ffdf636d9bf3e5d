"""Keep-masks for unstructured and N:M sparsity, built from any per-weight score (higher = more important).

Every mask here is a boolean tensor shaped like the Linear weight `[out_features, in_features]`,
True where the weight is kept. A *comparison group* is the set of weights ranked against each other:

    "output1"  one group per output row (Wanda §3: the weights feeding one output neuron)
    "input1"   one group per input column
    "layer"    the whole matrix (magnitude pruning's global threshold)

N:M patterns ("N:M" = N weights kept of every M along the input dimension) are parsed in
`optimum_flap.methods.sparse.patterns`, which imports no torch.
"""

from __future__ import annotations

import math

import torch

from ..sparse.patterns import NMPattern, check_ratio, parse_sparsity_type  # noqa: F401 (re-exported)

GRANULARITIES = ("output1", "input1", "layer")


def pruned_count(size: int, ratio: float) -> int:
    """Weights zeroed in a comparison group of `size`: floor(size * ratio), as Wanda (tolerant of float noise)."""
    return math.floor(size * ratio + 1e-9)


def check_granularity(granularity: str, allowed: tuple[str, ...] = GRANULARITIES) -> None:
    if granularity not in allowed:
        raise ValueError(f"Unknown granularity {granularity!r}; allowed: {', '.join(allowed)}.")


def check_scores(scores: torch.Tensor, keep: torch.Tensor | None = None) -> None:
    """Scores must be a finite 2-D matrix; a keep-mask, when given, a boolean tensor of the same shape."""
    if scores.dim() != 2:
        raise ValueError(f"Scores must be a 2-D weight-shaped matrix, got shape {tuple(scores.shape)}.")
    if not torch.isfinite(scores).all():
        raise ValueError("Scores contain NaN or infinite values; check the calibration statistics.")
    if keep is not None:
        if keep.dtype != torch.bool or keep.shape != scores.shape:
            raise ValueError(
                f"Mask must be a bool tensor shaped like the scores {tuple(scores.shape)}, "
                f"got {keep.dtype} {tuple(keep.shape)}."
            )


def as_groups(matrix: torch.Tensor, granularity: str) -> torch.Tensor:
    """A `[groups, group_size]` view/copy of `matrix` with one comparison group per row."""
    if granularity == "output1":
        return matrix
    if granularity == "input1":
        return matrix.T.contiguous()
    return matrix.reshape(1, -1)


def from_groups(grouped: torch.Tensor, granularity: str, shape: torch.Size) -> torch.Tensor:
    """Inverse of `as_groups`."""
    if granularity == "input1":
        return grouped.T.contiguous()
    return grouped.reshape(shape)


def first_ranked(values: torch.Tensor, counts: torch.Tensor, descending: bool) -> torch.Tensor:
    """Bool mask of the first `counts[...]` entries of each row of `values` in sorted order (last dim).

    Sorting is stable, so ties go to the lower index and exactly `counts` entries are selected.
    """
    order = torch.argsort(values, dim=-1, descending=descending, stable=True)
    take = torch.arange(values.shape[-1], device=values.device) < counts.unsqueeze(-1)
    return torch.zeros_like(take).scatter(-1, order, take)


def unstructured_mask(scores: torch.Tensor, ratio: float, granularity: str = "output1") -> torch.Tensor:
    """Keep-mask zeroing the floor(size * ratio) lowest-scored weights of every comparison group."""
    check_scores(scores)
    check_ratio(ratio)
    check_granularity(granularity)
    groups = as_groups(scores, granularity)
    counts = torch.full(groups.shape[:1], pruned_count(groups.shape[1], ratio), device=scores.device)
    return from_groups(~first_ranked(groups, counts, descending=False), granularity, scores.shape)


def check_n_m_shape(shape: torch.Size, group: int) -> None:
    if shape[-1] % group:
        raise ValueError(
            f"N:M sparsity with M={group} needs in_features divisible by {group}, got shape {tuple(shape)}."
        )


def n_m_mask(scores: torch.Tensor, kept: int, group: int) -> torch.Tensor:
    """Keep-mask keeping the `kept` highest scores in every `group` consecutive weights of each row."""
    check_scores(scores)
    parse_sparsity_type(f"{kept}:{group}")
    check_n_m_shape(scores.shape, group)
    grouped = scores.reshape(scores.shape[0], -1, group)
    counts = torch.full(grouped.shape[:2], kept, device=scores.device)
    return first_ranked(grouped, counts, descending=True).reshape(scores.shape)


def follows_n_m(keep: torch.Tensor, kept: int, group: int) -> bool:
    """True when every group of `group` consecutive weights along the input dimension keeps exactly `kept`."""
    check_n_m_shape(keep.shape, group)
    return bool((keep.reshape(keep.shape[0], -1, group).sum(-1) == kept).all())
