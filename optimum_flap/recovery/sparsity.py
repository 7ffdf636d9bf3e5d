"""Keep the zeros of sparse (unstructured or N:M pruned) weights through recovery.

A LoRA update B A is dense, so merging it (and every full fine-tuning step) fills pruned weights in. The
zero pattern of each trained Linear weight is recorded before training and re-applied after the merge
(LoRA) or after every optimizer step (full fine-tuning).
"""

from __future__ import annotations

import torch
from torch import nn

#: a weight counts as sparse when at least this fraction of its entries is exactly zero (trained dense
#: weights have essentially none; 2:4 and unstructured pruning leave 50% or more)
SPARSE_FRACTION = 0.01


def zero_masks(model: nn.Module, names: list[str] | None = None) -> dict[str, torch.Tensor]:
    """`{module name: bool mask of the kept (nonzero) weights}` of the sparse Linear modules among `names`."""
    wanted = None if names is None else set(names)
    masks = {}
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear) and (wanted is None or name in wanted) and module.weight.numel():
            kept = module.weight.detach() != 0
            if 1.0 - kept.float().mean().item() >= SPARSE_FRACTION:
                masks[name] = kept
    return masks


@torch.no_grad()
def apply_zero_masks(model: nn.Module, masks: dict[str, torch.Tensor]) -> None:
    """Zero again every weight entry that was zero when `masks` were recorded (module names as recorded)."""
    modules = dict(model.named_modules())
    for name, kept in masks.items():
        weight = modules[name].weight
        weight.mul_(kept.to(device=weight.device, dtype=weight.dtype))
