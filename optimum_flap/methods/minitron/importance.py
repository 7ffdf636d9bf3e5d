"""Activation importance of Minitron (Muralidharan et al. 2024, §2.2), from one calibration pass.

Every unit gets a per-token magnitude, aggregated over all calibration tokens (batch and sequence):

    head group g:      ||A_g(x_t)||_2, the norm of the group's query heads' attention output (o_proj input)
    MLP channel i:     |m_i(x_t)|, the gated activation act(gate) * up (down_proj input)
    embedding chan. i: |n_i(x_t)|, the outputs of the layer's norms (the q/k/v and gate/up inputs),
                       summed over the layers
    block (cheap depth): 1 - cos(x_t, y_t) of the block's input and output (ShortGPT's block importance)

`mean` aggregates by the mean magnitude over tokens, `rms` by the root mean square (the L2 norm over
tokens, divided by sqrt(tokens)); docs/minitron.md compares both on SmolLM2. Sums are kept in float64
and merged across torch.distributed ranks by summation, so every rank ranks the units identically.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist

from ...engine.distributed import collective_device, distributed_world


class MagnitudeSums:
    """Per-unit sums of |v| and v^2 over calibration tokens, for the `mean` and `rms` aggregations."""

    def __init__(self) -> None:
        self.abs_sum: torch.Tensor | None = None
        self.square_sum: torch.Tensor | None = None
        self.count = 0

    def update(self, values: torch.Tensor) -> None:
        """Add `[tokens, units]` non-negative magnitudes (or signed values: only |v| and v^2 are kept)."""
        v = values.detach().reshape(-1, values.shape[-1]).to(torch.float64)
        abs_sum, square_sum = v.abs().sum(dim=0), (v * v).sum(dim=0)
        if self.abs_sum is None:
            self.abs_sum, self.square_sum = abs_sum, square_sum
        else:
            self.abs_sum, self.square_sum = self.abs_sum + abs_sum, self.square_sum + square_sum
        self.count += v.shape[0]

    def all_reduce(self) -> None:
        """Sum every rank's sums and token count (a no-op in one process)."""
        if distributed_world()[1] == 1 or self.abs_sum is None:
            return
        home = self.abs_sum.device
        payload = torch.cat([self.abs_sum, self.square_sum, torch.tensor([float(self.count)], dtype=torch.float64,
                                                                         device=home)]).to(collective_device())
        dist.all_reduce(payload)
        payload = payload.to(home)
        units = self.abs_sum.numel()
        self.abs_sum, self.square_sum, self.count = payload[:units], payload[units:2 * units], int(payload[-1])

    def aggregate(self, aggregation: str) -> torch.Tensor:
        """Per-unit importance: mean |v| ("mean") or sqrt(mean v^2) ("rms"), in float64."""
        if self.abs_sum is None or self.count == 0:
            raise RuntimeError("No calibration activations were recorded for this module.")
        if aggregation == "mean":
            return self.abs_sum / self.count
        if aggregation == "rms":
            return (self.square_sum / self.count).sqrt()
        raise ValueError(f"Unknown aggregation {aggregation!r}; allowed: mean, rms.")


def group_norms(attention_output: torch.Tensor, group_width: int) -> torch.Tensor:
    """Per token, the L2 norm of each head group's slice of the attention output `[..., groups * group_width]`."""
    x = attention_output.detach().reshape(-1, attention_output.shape[-1]).to(torch.float32)
    return x.reshape(x.shape[0], -1, group_width).norm(dim=-1)


@dataclass
class LayerImportance:
    """One layer's importances: per head group, per MLP channel, per residual channel, and of the block."""

    groups: torch.Tensor
    channels: torch.Tensor
    hidden: torch.Tensor
    block: float


def top_indices(scores: torch.Tensor, count: int) -> torch.Tensor:
    """The sorted indices of the `count` highest scores (ties to the lower index)."""
    order = torch.sort(scores, descending=True, stable=True).indices[:count]
    return torch.sort(order).values
