"""Apply one decoder layer's plan in place: the single place where a method's decision edits weights."""

from __future__ import annotations

import torch
from torch import nn

from ..architectures import DecoderArchitecture
from ..plan import MaskLayerPlan, StructuredLayerPlan
from ..surgery import attention_geometry, prune_layer


def apply_layer_plan(
    layer: nn.Module, arch: DecoderArchitecture, plan: StructuredLayerPlan | MaskLayerPlan, physical: bool = True
) -> None:
    """Cut (or, with `physical=False`, zero) what a structured plan removes; zero what a mask plan masks.

    A structured plan's input means, when given, fold the removed channels' mean output into the
    output projections' biases (FLAP §3.4, see `surgery`). A mask plan keeps shapes: `weights` first
    replaces a module's weight when given, then masked entries are set to zero.
    """
    if isinstance(plan, StructuredLayerPlan):
        heads, kv_heads, head_dim = attention_geometry(arch.attention(layer).config)
        prune_layer(layer, arch, plan, heads // kv_heads, head_dim, attention_mean=plan.attention_input_mean,
                    mlp_mean=plan.mlp_input_mean, physical=physical)
    elif isinstance(plan, MaskLayerPlan):
        with torch.no_grad():
            for path, mask in plan.masks.items():
                weight = layer.get_submodule(path).weight
                if mask.shape != weight.shape:
                    raise ValueError(
                        f"Mask for {path!r} has shape {tuple(mask.shape)}; the weight has {tuple(weight.shape)}."
                    )
                if path in plan.weights:
                    weight.copy_(plan.weights[path])
                weight.mul_(mask.to(device=weight.device, dtype=weight.dtype))
    else:
        raise TypeError(f"Expected a StructuredLayerPlan or MaskLayerPlan, got {type(plan).__name__}.")
