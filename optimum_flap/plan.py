"""What a method decides, independent of how it scored: typed plans, and what a run achieved.

Methods return plans; they never edit the model. The pruner applies a plan (surgery for a
`StructuredLayerPlan`, masking for a `MaskLayerPlan`), records the layout and builds the report from
one parameter accounting. A `PruningPlan` holds one layer plan per decoder layer, all of one kind.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import torch

PlanKind = Literal["structured", "mask"]


@dataclass
class LayerCost:
    """Parameter accounting of one decoder layer (weights and biases of its seven projections)."""

    group_cost: int
    channel_cost: int
    total: int
    #: parameters bias compensation adds to this layer (new o_proj / down_proj biases)
    added_bias: int = 0


@dataclass
class StructuredLayerPlan:
    """One layer of a structured plan: the units it keeps, and the terms that compensate the others.

    Bias compensation (FLAP §3.4) is carried as the calibration mean of each output projection's
    inputs; the removed inputs' mean contribution is folded into that projection's bias when the plan
    is applied. None means no compensation for that module.
    """

    #: sorted indices of the key/value head groups kept (a group is one KV head and its query heads)
    kept_groups: torch.Tensor
    #: sorted indices of the MLP intermediate channels kept
    kept_channels: torch.Tensor
    #: mean of the attention output projection's inputs over the calibration tokens (full dense width)
    attention_input_mean: torch.Tensor | None = None
    #: mean of the MLP output projection's inputs over the calibration tokens (full dense width)
    mlp_input_mean: torch.Tensor | None = None
    #: sorted indices of the residual (hidden-size) channels kept: the layer's projections read and write
    #: only these, and its residual norms keep only their weights (None: the hidden size is unchanged)
    kept_hidden: torch.Tensor | None = None


@dataclass
class MaskLayerPlan:
    """One layer of a mask plan: a boolean keep-mask per Linear weight, shapes unchanged.

    Keys are module paths relative to the decoder layer (e.g. `"self_attn.q_proj"`). `weights`
    optionally replaces the kept values (a SparseGPT reconstruction); masked entries end at zero.
    """

    masks: dict[str, torch.Tensor]
    weights: dict[str, torch.Tensor] = field(default_factory=dict)


@dataclass
class ModelShapePlan:
    """The model-wide cuts of a stock-shaped plan, applied after every layer's own plan.

    `kept_hidden` also slices the embeddings, the final norm and the LM head (the layers' projections
    and norms are cut by their `StructuredLayerPlan.kept_hidden`); `kept_layers` removes every other
    decoder layer and trims the config's per-layer lists (`layer_types`) to match.
    """

    #: sorted indices of the residual channels kept; None keeps the hidden size
    kept_hidden: torch.Tensor | None = None
    #: sorted indices of the decoder layers kept; None keeps them all
    kept_layers: list[int] | None = None
    #: the candidate shapes a search scored (sizes, ratio, parameters, score), for the report
    search: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class PruningPlan:
    """A method's whole decision: one layer plan per decoder layer, and what to record beside it."""

    kind: PlanKind
    layers: list[StructuredLayerPlan] | list[MaskLayerPlan]
    #: method-specific records written into `model.config` (e.g. CFSP's block importances)
    config_records: dict[str, Any] = field(default_factory=dict)
    #: model-wide cuts (hidden size, depth) of a stock-shaped method, or None
    shape: ModelShapePlan | None = None


@dataclass
class PruningReport:
    """What a pruning run achieved, for logs, model cards and benchmarks."""

    method: str
    #: the budget structure, for the methods that have one (FLAP family); None otherwise. For a mask plan
    #: the ratios and the decoder counts are of decoder linear weights (zeroed, non-zero), not parameters
    structure: str | None
    target_ratio: float
    achieved_ratio: float
    decoder_parameters_before: int
    decoder_parameters_after: int
    parameters_before: int
    parameters_after: int
    seconds: float
    #: "structured" (units removed, shapes shrink) or "mask" (weights zeroed in place, shapes kept)
    kind: PlanKind = "structured"
    #: the candidate shapes a shape search scored (minitron), each with its sizes, ratio and score
    shape_search: list[dict[str, Any]] = field(default_factory=list)

    def summary(self) -> str:
        name = " ".join(filter(None, (self.method, self.structure)))
        if self.kind == "mask":  # a masked model keeps its size: its result is a sparsity
            return (
                f"{name}: sparsity {self.achieved_ratio:.2%} of decoder linear weights set to zero "
                f"(target {self.target_ratio:.2%}); non-zero decoder linear weights "
                f"{self.decoder_parameters_before:,} -> {self.decoder_parameters_after:,}; {self.seconds:.1f} s"
            )
        summary = (
            f"{name}: removed {self.achieved_ratio:.2%} of "
            "decoder linear parameters "
            f"(target {self.target_ratio:.2%}); parameters {self.parameters_before:,} -> "
            f"{self.parameters_after:,}; {self.seconds:.1f} s"
        )
        for candidate in self.shape_search:
            summary += "\n  " + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                          for k, v in candidate.items())
        return summary
