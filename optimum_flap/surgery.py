"""Model surgery: apply a layer plan to a decoder layer, reading where everything is from its spec.

`apply_structured_layer_plan` removes head groups and MLP channels. Rows of q/k/v (a group's query
heads and its key/value head) and of gate/up (a channel) are dropped, as are the matching input columns
of o and down. Fused projections (Phi-3's `qkv_proj`, `gate_up_proj`) are cut block by block at each
role's row offset, so cutting a fused model gives the same tensors as cutting its unfused twin.

Bias compensation (FLAP §3.4): a removed input channel j of an output projection W no longer
contributes W[:, j] x_j; its calibration mean is folded into the bias instead,
    b' = b + W[:, removed] @ mean(x[removed]),
so each pruned layer keeps its mean output on the calibration set.

`physical=True` replaces Linear layers by smaller ones. `physical=False` keeps dense shapes and
zeroes the removed rows instead (q/k/v rows of a removed group, gate/up rows of a removed channel),
which computes the same function: the mask-only mode of FLAP's `--unstr` scripts.

`apply_mask_layer_plan` zeroes the masked entries of each Linear in place (unstructured and
semi-structured methods); shapes never change.
"""

from __future__ import annotations

import torch
from torch import nn

from .accounting import compensation_roles, measure_sparsity
from .architectures import ATTENTION_OUTPUT, GATE, KEY, MLP_OUTPUT, QUERY, UP, VALUE, DecoderArchitecture
from .layout import LAYOUT_KEY, SPARSITY_KEY, LayerLayout, PruningLayout
from .models.layer_sizes import LayerSizesConfig
from .plan import MaskLayerPlan, StructuredLayerPlan


def _rows(groups: torch.Tensor, width: int) -> torch.Tensor:
    """Row indices of the blocks `groups`, each `width` rows wide."""
    return (groups[:, None] * width + torch.arange(width, device=groups.device)).flatten()


def _compensation(weight: torch.Tensor, mean: torch.Tensor, removed: torch.Tensor) -> torch.Tensor:
    """W[:, removed] @ mean[removed], computed in float32."""
    w = weight.detach()[:, removed].to(torch.float32)
    return w @ mean.to(device=w.device, dtype=torch.float32)[removed]


def _new_linear(old: nn.Linear, weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Linear:
    linear = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None,
                       device=old.weight.device, dtype=old.weight.dtype)
    with torch.no_grad():
        linear.weight.copy_(weight)
        if bias is not None:
            linear.bias.copy_(bias)
    linear.weight.requires_grad_(old.weight.requires_grad)
    return linear


def _keep_rows(linear: nn.Linear, rows: torch.Tensor, physical: bool) -> nn.Linear:
    """Keep output rows `rows` (physical) or zero every other row (mask-only)."""
    rows = rows.to(linear.weight.device)
    if physical:
        bias = linear.bias[rows] if linear.bias is not None else None
        return _new_linear(linear, linear.weight[rows], bias)
    mask = torch.zeros(linear.out_features, dtype=torch.bool, device=linear.weight.device)
    mask[rows] = True
    weight = linear.weight * mask[:, None]
    bias = linear.bias * mask if linear.bias is not None else None
    return _new_linear(linear, weight, bias)


def _keep_columns(linear: nn.Linear, columns: torch.Tensor, mean: torch.Tensor | None, physical: bool) -> nn.Linear:
    """Keep input columns `columns`; with `mean`, fold the removed columns' mean output into the bias."""
    columns = columns.to(linear.weight.device)
    removed_mask = torch.ones(linear.in_features, dtype=torch.bool, device=linear.weight.device)
    removed_mask[columns] = False
    bias = linear.bias
    if mean is not None:
        extra = _compensation(linear.weight, mean, removed_mask.nonzero().flatten())
        base = bias.detach().to(torch.float32) if bias is not None else torch.zeros_like(extra)
        bias = (base + extra).to(linear.weight.dtype)
    weight = linear.weight[:, columns] if physical else linear.weight * (~removed_mask)[None, :]
    return _new_linear(linear, weight, bias.detach() if bias is not None else None)


def _check_indices(name: str, kept: torch.Tensor, count: int) -> None:
    if kept.ndim != 1 or kept.numel() == 0:
        raise ValueError(f"{name} must be a non-empty 1-D tensor of indices, got shape {tuple(kept.shape)}.")
    if int(kept.min()) < 0 or int(kept.max()) >= count or kept.unique().numel() != kept.numel():
        raise ValueError(f"{name} must hold distinct indices in [0, {count}), got {kept.tolist()}.")


def apply_structured_layer_plan(
    layer: nn.Module, spec: DecoderArchitecture, plan: StructuredLayerPlan, physical: bool = True
) -> None:
    """Keep `plan.kept_groups` and `plan.kept_channels` of one decoder layer, in place.

    A plan's input means (`attention_input_mean`, `mlp_input_mean`) turn on bias compensation for
    that output projection. Indices refer to the layer as it is now (dense).
    """
    if spec.per_head_norms:
        raise NotImplementedError(
            f"{spec.model_type}: cutting per-head norms {spec.per_head_norms} with their heads is not implemented."
        )
    group_size, head_dim = spec.head_geometry(layer)
    projections = spec.projections(layer)
    groups_now = projections[ATTENTION_OUTPUT].in_features // (group_size * head_dim)
    channels_now = projections[MLP_OUTPUT].in_features
    groups, channels = plan.kept_groups, plan.kept_channels
    _check_indices("kept_groups", groups, groups_now)
    _check_indices("kept_channels", channels, channels_now)
    # per role: (rows kept inside the role's block, the block's height)
    query_rows = _rows(groups, group_size * head_dim)
    kept = {
        QUERY: (query_rows, groups_now * group_size * head_dim),
        KEY: (_rows(groups, head_dim), groups_now * head_dim),
        VALUE: (_rows(groups, head_dim), groups_now * head_dim),
        GATE: (channels, channels_now),
        UP: (channels, channels_now),
    }
    columns = {ATTENTION_OUTPUT: (query_rows, plan.attention_input_mean), MLP_OUTPUT: (channels, plan.mlp_input_mean)}
    for roles in spec.projection_paths().values():
        linear = projections[roles[0]]
        if roles[0] in columns:
            kept_columns, mean = columns[roles[0]]
            new = _keep_columns(linear, kept_columns, mean, physical)
        else:  # a fused module stacks its roles' row blocks in role order
            offsets = torch.cumsum(torch.tensor([0] + [kept[r][1] for r in roles[:-1]]), 0).tolist()
            rows = torch.cat([kept[r][0].to(torch.long) + offset for r, offset in zip(roles, offsets)])
            new = _keep_rows(linear, rows, physical)
        spec.set_projection(layer, roles[0], new)
    if physical:
        _record_sizes(layer, spec, int(groups.numel()) * group_size, int(groups.numel()), int(channels.numel()))


def _record_sizes(layer: nn.Module, spec: DecoderArchitecture, heads: int, kv_heads: int, channels: int) -> None:
    """Tell the layer's modules their new sizes where their forward reads them (Phi-3's qkv split)."""
    mlp, attention = spec.mlp(layer), spec.attention(layer)
    if hasattr(mlp, "intermediate_size"):
        mlp.intermediate_size = channels
    if hasattr(attention, "num_key_value_heads"):
        attention.num_key_value_heads = kv_heads
    if spec.attention_sizes_in_config:
        attention.config = LayerSizesConfig(attention.config, heads, kv_heads)


def apply_mask_layer_plan(layer: nn.Module, plan: MaskLayerPlan) -> None:
    """Write `plan.weights` where given, then zero every masked weight entry, in place; shapes unchanged."""
    for path in set(plan.masks) | set(plan.weights):
        weight = layer.get_submodule(path).weight
        for name, tensor in (("mask", plan.masks.get(path)), ("weights", plan.weights.get(path))):
            if tensor is not None and tuple(tensor.shape) != tuple(weight.shape):
                raise ValueError(f"{path}: {name} shape {tuple(tensor.shape)} differs from the weight's "
                                 f"{tuple(weight.shape)}.")
        if path in plan.masks and plan.masks[path].dtype != torch.bool:
            raise ValueError(f"{path}: a mask must be a bool tensor, got {plan.masks[path].dtype}.")
        with torch.no_grad():
            if path in plan.weights:
                weight.copy_(plan.weights[path])
            if path in plan.masks:
                weight.masked_fill_(~plan.masks[path].to(weight.device), 0)


def record_layout(
    model: nn.Module, arch: DecoderArchitecture, plans: list[StructuredLayerPlan], group_size: int
) -> PruningLayout:
    """Write the per-layer sizes into `model.config.pruning_layout` and return them.

    Call after the plans were applied and before the model's config changes: the config's bias flags
    tell which output biases bias compensation added.
    """
    layers = [
        LayerLayout(
            num_attention_heads=int(plan.kept_groups.numel()) * group_size,
            num_key_value_heads=int(plan.kept_groups.numel()),
            intermediate_size=int(plan.kept_channels.numel()),
            kept_head_groups=[int(i) for i in plan.kept_groups],
        )
        for plan in plans
    ]
    projections = [arch.projections(layer) for layer in arch.decoder_layers(model)]
    layout = PruningLayout(
        layers=layers,
        attention_output_bias=all(p[ATTENTION_OUTPUT].bias is not None for p in projections),
        mlp_output_bias=all(p[MLP_OUTPUT].bias is not None for p in projections),
        compensation_biases=compensation_roles(model, arch),
    )
    setattr(model.config, LAYOUT_KEY, layout.to_dict())
    return layout


def record_sparsity(model: nn.Module, arch: DecoderArchitecture) -> list[dict[str, float]]:
    """Write the fraction of zero weights per layer and projection into `model.config.pruning_sparsity`.

    Marks the model as masked: `save_pruned_model` then writes it dense-shaped, with this record.
    """
    sparsity = measure_sparsity(model, arch)
    setattr(model.config, SPARSITY_KEY, sparsity)
    return sparsity
