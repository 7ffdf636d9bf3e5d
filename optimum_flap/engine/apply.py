"""Apply one decoder layer's plan in place: the single place where a method's decision edits weights."""

from __future__ import annotations

from torch import nn

from ..architectures import DecoderArchitecture
from ..plan import MaskLayerPlan, StructuredLayerPlan
from ..surgery import apply_mask_layer_plan, apply_structured_layer_plan


def apply_layer_plan(
    layer: nn.Module, arch: DecoderArchitecture, plan: StructuredLayerPlan | MaskLayerPlan, physical: bool = True
) -> None:
    """Cut (or, with `physical=False`, zero) what a structured plan removes; zero what a mask plan masks.

    A structured plan's input means, when given, fold the removed channels' mean output into the
    output projections' biases (FLAP §3.4, see `surgery`). A mask plan keeps shapes: `weights` first
    replaces a module's weight when given, then masked entries are set to zero.
    """
    if isinstance(plan, StructuredLayerPlan):
        apply_structured_layer_plan(layer, arch, plan, physical)
    elif isinstance(plan, MaskLayerPlan):
        apply_mask_layer_plan(layer, plan)
    else:
        raise TypeError(f"Expected a StructuredLayerPlan or MaskLayerPlan, got {type(plan).__name__}.")
