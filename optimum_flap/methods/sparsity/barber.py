"""LLM-Barber's mask rebuild (Su et al. 2024, arXiv 2408.10631): swap weights across the mask by a gradient score.

Score (§3, the "WD" metric): S = |W| * sqrt(E_n[g_n^2]), with g_n the gradient of one calibration
sample's block loss at the dense weights (see `barber_block.py`).

Rank-matched rebuild inside a comparison group (the released `mask_rebuild`): with P the pruned
positions sorted by S descending (g_0 >= g_1 >= ...) and K the kept ones sorted ascending
(p_0 <= p_1 <= ...), R = #{t < min(|P|, |K|) : g_t > p_t} counts the pairs whose swap raises the
score and k = floor(alpha * R). The k best pruned weights are revived and the k worst kept weights
pruned, so every group keeps its count exactly. Ties are broken by position (stable sort); the
released code thresholds with `S > g_k` / `S < p_k` instead, which revives and prunes different
numbers when scores tie, and revives |P| - 1 when k = |P|.

Granularities: "output1" (per output row), "input1" (per input column), "layer" (whole matrix) and
"block" (all matrices of one block pooled; `rebuild_masks` takes the list).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .masks import (
    GRANULARITIES,
    as_groups,
    check_granularity,
    check_n_m_shape,
    check_scores,
    first_ranked,
    from_groups,
)

BARBER_GRANULARITIES = (*GRANULARITIES, "block")


class SquaredGradientMean:
    """Running mean E_n[g_n^2] of one weight's gradient over calibration samples, in float32."""

    def __init__(self) -> None:
        self.count = 0
        self.mean_square: torch.Tensor | None = None

    def update(self, grad: torch.Tensor) -> None:
        """Add the gradient of one sample's loss."""
        grad = grad.detach().to(torch.float32)
        self.count += 1
        if self.mean_square is None:
            self.mean_square = grad * grad
        else:  # in place, no weight-sized temporary: m <- m (n-1)/n + g^2 / n
            self.mean_square.mul_((self.count - 1) / self.count).addcmul_(grad, grad, value=1.0 / self.count)


def barber_scores(weight: torch.Tensor, gradient_mean_square: torch.Tensor) -> torch.Tensor:
    """S = |W| * sqrt(E[g^2]) in float32 (§3, "WD")."""
    if gradient_mean_square.shape != weight.shape:
        raise ValueError(
            f"Gradient statistics shape {tuple(gradient_mean_square.shape)} differs from "
            f"the weight's {tuple(weight.shape)}."
        )
    return weight.detach().float().abs() * gradient_mean_square.to(weight.device, torch.float32).sqrt()


def check_alpha(alpha: float) -> None:
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha (fraction of the beneficial swaps made) must be in [0, 1], got {alpha!r}.")


def swap_counts(scores: torch.Tensor, keep: torch.Tensor, alpha: float) -> torch.Tensor:
    """k = floor(alpha * R) per row of `[groups, size]` scores, R the rank-matched beneficial swaps."""
    growth = scores.masked_fill(keep, float("-inf")).sort(dim=-1, descending=True).values  # pruned, best first
    shrink = scores.masked_fill(~keep, float("inf")).sort(dim=-1).values  # kept, worst first
    beneficial = (growth > shrink).sum(dim=-1)  # padding (-inf vs +inf) never counts
    return torch.floor(alpha * beneficial.double()).long()


def _swap(scores: torch.Tensor, keep: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """Revive the `counts` best pruned and prune the `counts` worst kept weights of each row."""
    revive = first_ranked(scores.masked_fill(keep, float("-inf")), counts, descending=True)
    drop = first_ranked(scores.masked_fill(~keep, float("inf")), counts, descending=False)
    return (keep | revive) & ~drop


#: groups are rebuilt in this many chunks of rows: the sorts' temporaries (values, int64 indices) then
#: weigh a fraction of the matrix instead of several times it
_CHUNKS = 8


def _rebuild_groups(scores: torch.Tensor, keep: torch.Tensor, alpha: float) -> torch.Tensor:
    """Rebuild each row (comparison group) of `[groups, size]` scores on its own, a chunk of rows at a time."""
    chunk = -(-scores.shape[0] // _CHUNKS)
    return torch.cat([_swap(s, k, swap_counts(s, k, alpha)) for s, k in zip(scores.split(chunk), keep.split(chunk))])


def rebuild_mask(scores: torch.Tensor, keep: torch.Tensor, alpha: float, granularity: str = "output1") -> torch.Tensor:
    """One matrix's rebuilt keep-mask; the kept count of every comparison group is unchanged."""
    check_scores(scores, keep)
    check_alpha(alpha)
    check_granularity(granularity)
    rebuilt = _rebuild_groups(as_groups(scores, granularity), as_groups(keep, granularity), alpha)
    return from_groups(rebuilt, granularity, keep.shape)


def rebuild_masks(
    pairs: Sequence[tuple[torch.Tensor, torch.Tensor]], alpha: float, granularity: str = "output1"
) -> list[torch.Tensor]:
    """Rebuilt keep-masks of several matrices given as (scores, keep) pairs.

    With "block" the matrices form one comparison group (the block's kept total is unchanged);
    otherwise each matrix is rebuilt on its own at `granularity`.
    """
    check_granularity(granularity, BARBER_GRANULARITIES)
    if granularity != "block":
        return [rebuild_mask(scores, keep, alpha, granularity) for scores, keep in pairs]
    check_alpha(alpha)
    for scores, keep in pairs:
        check_scores(scores, keep)
    pooled_scores = torch.cat([scores.reshape(1, -1) for scores, _ in pairs], dim=1)
    pooled_keep = torch.cat([keep.reshape(1, -1) for _, keep in pairs], dim=1)
    rebuilt = _swap(pooled_scores, pooled_keep, swap_counts(pooled_scores, pooled_keep, alpha))[0]
    pieces = rebuilt.split([keep.numel() for _, keep in pairs])
    return [piece.reshape(keep.shape) for piece, (_, keep) in zip(pieces, pairs)]


def rebuild_n_m_mask(scores: torch.Tensor, keep: torch.Tensor, alpha: float, group: int) -> torch.Tensor:
    """Rebuilt N:M keep-mask: every group of `group` consecutive inputs keeps its count.

    Per output row, k = floor(alpha * R) is found over the whole row as in `rebuild_mask`, and the k
    best-scored pruned weights are revived; then, inside each group, as many of its worst-scored
    originally kept weights are pruned as were revived there. A group revives at most as many
    weights as it keeps: this never binds for 2:4 and 4:8 (identical to the release there); for
    patterns keeping fewer than half, the release could empty a group instead.
    """
    check_scores(scores, keep)
    check_alpha(alpha)
    check_n_m_shape(scores.shape, group)
    rows, cols = scores.shape
    grouped_scores = scores.reshape(rows, -1, group)
    grouped_keep = keep.reshape(rows, -1, group)
    kept = grouped_keep.sum(dim=-1)
    capacity = torch.minimum(kept, group - kept)  # pruned weights a group can trade for kept ones
    eligible = first_ranked(grouped_scores.masked_fill(grouped_keep, float("-inf")), capacity, descending=True)
    counts = torch.minimum(swap_counts(scores, keep, alpha), eligible.reshape(rows, cols).sum(dim=-1))
    candidates = scores.masked_fill(~eligible.reshape(rows, cols), float("-inf"))
    revive = first_ranked(candidates, counts, descending=True).reshape(rows, -1, group)
    drop = first_ranked(grouped_scores.masked_fill(~grouped_keep, float("inf")), revive.sum(dim=-1), descending=False)
    return ((grouped_keep | revive) & ~drop).reshape(rows, cols)
