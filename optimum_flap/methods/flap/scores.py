"""Channel importance of FLAP and of its two baselines, all formulas in one place.

Every score is per *input channel* of a layer's output projection (`o_proj` for attention, whose
input channels are the concatenated head outputs; `down_proj` for the MLP). W is that projection's
weight (out x in), x_j the j-th input channel over the calibration tokens.

FLAP, An et al. 2024, §3.1 (metrics) and §3.2 (standardization):
    IFV_j  = Var(x_j)                                   input feature variance (fluctuation)
    WIFV_j = Var(x_j) * ||W[:, j]||_2^2                  weighted fluctuation, the paper's default
    WIFN_j = mean_i |W_ij| * sqrt(E[x_j^2])              weighted input feature norm
    attention channel scores are squared before pooling to heads (as the released code does;
    the paper is silent on it)
Baselines from FLAP's experiments:
    wanda-sp:     mean_i |W_ij| * ||x_j||_2              (Wanda's |W|*||x|| pooled over a column)
    magnitude-sp: ||W[:, j]||_2                          (weights only)
Pooling to GQA head groups (a key/value head and the query heads that share it): the mean of the
group's channel scores; standardization (S - mean) / std is taken per layer and module type.

Families with a norm after each sub-block (Gemma 2/3, OLMo-2): the methods that read activations pass
W' = diag(g) W and statistics weighted per token by 1 / rms^2 of the post-norm's input, so the same
formulas measure the change a channel makes in the residual stream (derivation: engine/post_norm.py,
docs/flap.md); the adaptive structures then standardize with one mean and std per module type over all
layers (`standardize_across`), so that the post-norm's per-layer scale survives into the global threshold.
"""

from __future__ import annotations

import torch

from ...engine.statistics import ChannelStatistics
from .config import METRICS


def channel_scores(
    method: str, metric: str, weight: torch.Tensor, stats: ChannelStatistics | None
) -> torch.Tensor:
    """Importance of each input channel of an output projection with weight `weight` (float32)."""
    w = weight.detach().to(torch.float32)
    if method == "magnitude-sp":
        return w.norm(dim=0)
    if stats is None:
        raise ValueError(f"method={method!r} needs calibration statistics.")
    if method == "wanda-sp":
        return w.abs().mean(dim=0) * (stats.mean_square * stats.count).sqrt()
    if metric == "ifv":
        return stats.variance.clone()
    if metric == "wifv":
        return stats.variance * (w * w).sum(dim=0)
    if metric == "wifn":
        return (w.abs() * stats.mean_square.sqrt()).mean(dim=0)
    raise ValueError(f"Unknown metric {metric!r}; allowed: {', '.join(METRICS)}.")


def attention_channel_scores(method: str, metric: str, weight: torch.Tensor, stats: ChannelStatistics | None):
    """Channel scores of `o_proj`: FLAP squares them before pooling to heads, the baselines do not."""
    scores = channel_scores(method, metric, weight, stats)
    return scores**2 if method == "flap" else scores


def standardize(scores: torch.Tensor) -> torch.Tensor:
    """(S - mean(S)) / std(S) over one layer's channels of one module type (FLAP §3.2)."""
    std = scores.std()
    if not torch.isfinite(std) or std == 0:
        return torch.zeros_like(scores)
    return (scores - scores.mean()) / std


def standardize_across(layers: list[torch.Tensor]) -> list[torch.Tensor]:
    """(S - mean) / std with one mean and std over every layer's channels of one module type (post-norm families)."""
    flat = torch.cat(layers)
    std = flat.std()
    if not torch.isfinite(std) or std == 0:
        return [torch.zeros_like(s) for s in layers]
    return [(s - flat.mean()) / std for s in layers]


def pool_groups(channel_scores_: torch.Tensor, group_width: int) -> torch.Tensor:
    """Mean score of each head group of `group_width` consecutive channels."""
    return channel_scores_.reshape(-1, group_width).mean(dim=1)
