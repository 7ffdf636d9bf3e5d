"""CFSP's fine-grained scores: which FFN channels (and optionally head groups) a block keeps.

a_j = sqrt(E[x_j^2]) is the activation norm of intermediate channel j (the input of `down_proj`,
act(gate) * up) over the calibration tokens, up to the constant sqrt(#tokens).

`"activation"` (default): score_j = a_j. The released default `three_w_one_wa` is

    M_ij = [ |Wd_ij| a_j^b / sum_i |Wd_ij| a_j^b + |Wu_ji| / sum_i |Wu_ji| + |Wg_ji| / sum_i |Wg_ji| ] a_j^c,
    score_j = mean_i M_ij,

and since each bracketed term is normalised over its own column it sums to 1 over i: score_j =
3 a_j^c / d_hidden exactly, a monotone function of a_j (`released_three_w_one_wa` checks it).

`"weight-activation"`: the paper's Eq. 8 as quoted publicly (we could not check the PDF), with every
term normalised *across channels*, so the weights do matter:

    score_j = sum_i |Wd_ij| a_j / sum_k |Wd_ik| a_k  +  sum_i |Wu_ji| / sum_k |Wu_ki|  +  sum_i |Wg_ji| / sum_k |Wg_ki|

i.e. channel j's share of each output's (down) or each input's (up, gate) weight mass, summed.
Head groups (optional): the activation norm of each group's `o_proj` input channels.
"""

from __future__ import annotations

import torch

from ...engine.statistics import ChannelStatistics
from .config import CHANNEL_SCORES


def activation_norms(stats: ChannelStatistics) -> torch.Tensor:
    """a_j = sqrt(E[x_j^2]) per input channel."""
    return stats.mean_square.sqrt()


def channel_scores(
    kind: str,
    stats: ChannelStatistics,
    down: torch.Tensor,
    up: torch.Tensor | None = None,
    gate: torch.Tensor | None = None,
) -> torch.Tensor:
    """Score of each FFN intermediate channel; `down` is `[hidden, N]`, `up`/`gate` are `[N, hidden]`."""
    a = activation_norms(stats)
    if kind == "activation":
        return a.clone()
    if kind != "weight-activation":
        raise ValueError(f"Unknown CFSP channel score {kind!r}; allowed: {', '.join(CHANNEL_SCORES)}.")
    if up is None or gate is None:
        raise ValueError("The weight-activation score needs the up and gate projections.")
    d = down.detach().to(torch.float32).abs() * a[None, :]
    score = (d / d.sum(dim=1, keepdim=True).clamp_min(1e-30)).sum(dim=0)
    for w in (up, gate):
        w = w.detach().to(torch.float32).abs()
        score = score + (w / w.sum(dim=0, keepdim=True).clamp_min(1e-30)).sum(dim=1)
    return score


def head_group_scores(stats: ChannelStatistics, group_width: int) -> torch.Tensor:
    """Activation norm of each head group's `o_proj` input channels."""
    return stats.mean_square.reshape(-1, group_width).sum(dim=1).sqrt()


def released_three_w_one_wa(
    down: torch.Tensor, up: torch.Tensor, gate: torch.Tensor, a: torch.Tensor, b: float = 1.0, c: float = 1.0
) -> torch.Tensor:
    """The released `--local_metrics three_w_one_wa` score, written as in `lib/prune.py` (for comparison)."""
    wd = down.detach().to(torch.float32).abs() * a[None, :] ** b
    wu = up.detach().to(torch.float32).abs().t()
    wg = gate.detach().to(torch.float32).abs().t()
    m = (wd / wd.sum(dim=0) + wu / wu.sum(dim=0) + wg / wg.sum(dim=0)) * a[None, :] ** c
    return m.mean(dim=0)
