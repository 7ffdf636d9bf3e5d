"""Coarse-grained block importance of CFSP: how much a decoder block changes its hidden states.

CFSP (Wang et al., COLING 2025, arXiv 2409.13199), §3 coarse-grained importance; the formulas are those
of the released `lib/block_metrics.py::block_influence`. For block l with input x and output y (the
whole block: attention, MLP and both residuals), per token t:

    angular:  arccos(cos(x_t, y_t)) / pi      (default; a NaN cosine counts as 0.5, as released)
    cosine:   1 - cos(x_t, y_t)
    mse:      mean_i (x_ti - y_ti)^2

I_l is the **mean** over calibration tokens. The released code sums over tokens, so its budget depends
on `nsamples x seqlen`; with a mean it does not (the default temperature absorbs the 128 x 1024).
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist

from ...engine.distributed import collective_device, distributed_world
from .config import IMPORTANCE_METRICS


def token_distances(inputs: torch.Tensor, outputs: torch.Tensor, metric: str = "angular") -> torch.Tensor:
    """Per-token distance between a block's input and output hidden states `[..., hidden]`, in float32."""
    if metric not in IMPORTANCE_METRICS:
        raise ValueError(f"Unknown block importance metric {metric!r}; allowed: {', '.join(IMPORTANCE_METRICS)}.")
    x = inputs.detach().reshape(-1, inputs.shape[-1]).to(torch.float32)
    y = outputs.detach().reshape(-1, outputs.shape[-1]).to(torch.float32)
    if metric == "mse":
        return ((x - y) ** 2).mean(dim=1)
    cos = torch.nn.functional.cosine_similarity(x, y, dim=1, eps=1e-12)
    if metric == "cosine":
        return torch.nan_to_num(1.0 - cos, nan=1.0)
    angle = torch.arccos(cos.clamp(-1.0, 1.0)) / math.pi
    return torch.nan_to_num(angle, nan=0.5)


class BlockImportance:
    """Running mean of one block's input/output distance over calibration batches."""

    def __init__(self, metric: str = "angular") -> None:
        if metric not in IMPORTANCE_METRICS:
            raise ValueError(f"Unknown block importance metric {metric!r}; allowed: {', '.join(IMPORTANCE_METRICS)}.")
        self.metric = metric
        self.total = 0.0
        self.count = 0

    def update(self, inputs: torch.Tensor, outputs: torch.Tensor) -> None:
        distances = token_distances(inputs, outputs, self.metric)
        self.total += float(distances.to(torch.float64).sum())
        self.count += distances.numel()

    def all_reduce(self) -> None:
        """Sum every torch.distributed rank's distance total and token count (a no-op in one process)."""
        if distributed_world()[1] == 1:
            return
        totals = torch.tensor([self.total, float(self.count)], dtype=torch.float64, device=collective_device())
        dist.all_reduce(totals)
        self.total, self.count = float(totals[0]), int(totals[1])

    @property
    def value(self) -> float:
        if self.count == 0:
            raise RuntimeError("No hidden states were recorded for this block.")
        return self.total / self.count
