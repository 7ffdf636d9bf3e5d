"""What a change in a sub-block's output becomes in the residual stream when a norm follows the sub-block.

Gemma 2 / 3 ("sandwich" norm, Gemma 2 report §2) and OLMo-2 apply an RMSNorm to the attention and MLP
outputs before the residual add: the residual receives N(y) = g * y / rms(y), rms(y) = sqrt(mean_i y_i^2 + eps),
with y = W x + b the output projection's output and g the norm's per-dimension gain. Removing input
channel j of W (and adding the constant c_j to the bias) changes y_t by dy_t = W[:, j] (c_j - x_tj); to first
order the residual changes by

    dN_t = g * dy_t / rms(y_t)            (minus the part of dy_t along y_t, which we drop: an upper bound)

so the residual sees the projection with weight diag(g) W applied to the input x_t / rms(y_t). Every
channel score computed from that weight and from the statistics of x weighted per token by
w_t = 1 / rms(y_t)^2 (`WeightedChannelStatistics`) is therefore in residual units:

    E ||dN_t||^2 = ||g * W[:, j]||^2 * E[w_t (x_tj - c_j)^2],

minimised by the weighted mean c_j = E[w x_j] / E[w] (the bias compensation under a post-norm), where it
equals ||g * W[:, j]||^2 * sum_t w_t (x_tj - m_j)^2 / N: FLAP's WIFV with the weighted statistics
(which divide by N - 1, as the plain ones).
With no post-norm (g = 1, w = 1) these are the plain statistics and weights, which the methods then use
unchanged.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from ..architectures import ATTENTION_OUTPUT, MLP_OUTPUT, DecoderArchitecture
from .statistics import WeightedChannelStatistics


def has_post_norms(arch: DecoderArchitecture) -> bool:
    """Whether the family normalises its sub-block outputs before the residual add."""
    return arch.attention_post_norm is not None or arch.mlp_post_norm is not None


def post_norm_gain(arch: DecoderArchitecture, layer: nn.Module, role: str) -> torch.Tensor | None:
    """The per-dimension gain g (float32) of the norm after output projection `role`, or None without one."""
    path = arch.post_norm_path(role)
    if path is None:
        return None
    weight = layer.get_submodule(path).weight.detach().to(torch.float32)
    return weight + arch.norm_weight_offset


def residual_weight(weight: torch.Tensor, gain: torch.Tensor | None) -> torch.Tensor:
    """diag(g) W: the output projection as the residual stream sees it (W itself without a post-norm)."""
    w = weight.detach().to(torch.float32)
    return w if gain is None else gain.to(w.device)[:, None] * w


def _epsilon(norm: nn.Module) -> float:
    """The norm's epsilon (`eps` in Gemma's RMSNorm, `variance_epsilon` in OLMo-2's)."""
    for name in ("eps", "variance_epsilon"):
        value = getattr(norm, name, None)
        if value is not None:
            return float(value)
    raise ValueError(f"{type(norm).__name__} has no eps / variance_epsilon; cannot measure its gain.")


class ResidualObserver:
    """Statistics of one output projection's input, weighted per token by 1 / rms^2 of the post-norm's input.

    The projection's pre-hook runs first and holds the batch's input; the post-norm's pre-hook then sees
    the same tokens' sub-block output, computes each token's weight and adds the held batch.
    """

    def __init__(self, norm: nn.Module) -> None:
        self.stats = WeightedChannelStatistics()
        self._epsilon = _epsilon(norm)
        self._held: torch.Tensor | None = None

    def projection_input(self, inputs: torch.Tensor) -> None:
        self._held = inputs.detach()

    def norm_input(self, outputs: torch.Tensor) -> None:
        if self._held is None:
            raise RuntimeError("The post-norm ran before its output projection; the family spec names the wrong norm.")
        y = outputs.detach().to(torch.float32)
        weights = 1.0 / (y.pow(2).mean(dim=-1) + self._epsilon)
        self.stats.update(self._held, weights)
        self._held = None


def residual_observers(arch: DecoderArchitecture, layer: nn.Module
                       ) -> tuple[dict[str, Callable[[torch.Tensor], None]], dict[str, WeightedChannelStatistics]]:
    """Observers (module path -> function of its input) for both output projections of a post-norm layer.

    Returns them with the statistics they fill, keyed by the projection's path. A projection without a
    post-norm after it gets none here (the caller keeps its plain statistics).
    """
    observers: dict[str, Callable[[torch.Tensor], None]] = {}
    statistics: dict[str, WeightedChannelStatistics] = {}
    for role in (ATTENTION_OUTPUT, MLP_OUTPUT):
        norm_path = arch.post_norm_path(role)
        if norm_path is None:
            continue
        observer = ResidualObserver(layer.get_submodule(norm_path))
        observers[arch.path(role)] = observer.projection_input
        observers[norm_path] = observer.norm_input
        statistics[arch.path(role)] = observer.stats
    return observers, statistics
