"""Keep-masks for unstructured and N:M sparsity, built from any per-weight score (higher = more important).

Every mask here is a boolean tensor shaped like the Linear weight `[out_features, in_features]`,
True where the weight is kept. A *comparison group* is the set of weights ranked against each other:

    "output1"  one group per output row (Wanda §3: the weights feeding one output neuron)
    "input1"   one group per input column
    "layer"    the whole matrix (magnitude pruning's global threshold)

N:M convention: "N:M" means **N weights are kept** in every group of M consecutive weights along the
input dimension (the hardware meaning of 2:4 sparse tensor cores), so the sparsity is 1 - N/M. For
2:4 and 4:8 this equals the released Wanda / SparseGPT / LLM-Barber code, whose `prune_n` counts the
*zeroed* weights (prune_n = M - N); for other patterns ("1:4" = 75% sparse here) the two differ.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

GRANULARITIES = ("output1", "input1", "layer")


@dataclass(frozen=True)
class NMPattern:
    """Keep `kept` of every `group` consecutive weights along the input dimension."""

    kept: int
    group: int

    @property
    def ratio(self) -> float:
        """Fraction of weights zeroed."""
        return 1.0 - self.kept / self.group

    def __str__(self) -> str:
        return f"{self.kept}:{self.group}"


def parse_sparsity_type(text: str, ratio: float | None = None) -> NMPattern | None:
    """`"unstructured"` -> None; `"N:M"` -> NMPattern(N kept of M), checked against `ratio` when given.

    Raises ValueError for malformed text, for N outside 1..M-1, and for a `ratio` other than 1 - N/M.
    """
    if text == "unstructured":
        if ratio is not None:
            check_ratio(ratio)
        return None
    parts = text.split(":")
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
        raise ValueError(
            f"Sparsity type {text!r} is neither 'unstructured' nor 'N:M' with integers N < M (e.g. '2:4')."
        )
    kept, group = (int(p) for p in parts)
    if not 0 < kept < group:
        raise ValueError(
            f"Sparsity type {text!r}: N (weights kept per group) must satisfy 0 < N < M, got N={kept}, M={group}."
        )
    pattern = NMPattern(kept, group)
    if ratio is not None and not math.isclose(ratio, pattern.ratio, abs_tol=1e-9):
        raise ValueError(
            f"Sparsity type {text!r} keeps {kept} of every {group} weights, i.e. sparsity {pattern.ratio:g}; "
            f"the requested ratio {ratio!r} does not match."
        )
    return pattern


def check_ratio(ratio: float) -> None:
    if not 0.0 <= ratio < 1.0:
        raise ValueError(f"Sparsity ratio must be in [0, 1), got {ratio!r}.")


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
