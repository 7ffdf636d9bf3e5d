"""What a structured method decides, independent of how it scored: per-layer kept units and their costs."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class LayerCost:
    """Parameter accounting of one decoder layer (weights and biases of its seven projections)."""

    group_cost: int
    channel_cost: int
    total: int
    #: parameters bias compensation adds to this layer (new o_proj / down_proj biases)
    added_bias: int = 0


@dataclass
class LayerPlan:
    """Sorted indices of the head groups and MLP channels one layer keeps."""

    kept_groups: torch.Tensor
    kept_channels: torch.Tensor


@dataclass
class PruningReport:
    """What a pruning run achieved, for logs, model cards and benchmarks."""

    method: str
    structure: str
    target_ratio: float
    achieved_ratio: float
    decoder_parameters_before: int
    decoder_parameters_after: int
    parameters_before: int
    parameters_after: int
    seconds: float

    def summary(self) -> str:
        return (
            f"{self.method} {self.structure}: removed {self.achieved_ratio:.2%} of decoder linear parameters "
            f"(target {self.target_ratio:.2%}); parameters {self.parameters_before:,} -> "
            f"{self.parameters_after:,}; {self.seconds:.1f} s"
        )
