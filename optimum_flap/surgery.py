"""Model surgery: remove head groups and MLP channels from decoder layers, with bias compensation.

Bias compensation (FLAP §3.4): a removed input channel j of an output projection W no longer
contributes W[:, j] x_j; its calibration mean is folded into the bias instead,
    b' = b + W[:, removed] @ mean(x[removed]),
so each pruned layer keeps its mean output on the calibration set.

`physical=True` replaces Linear layers by smaller ones. `physical=False` keeps dense shapes and
zeroes the removed rows instead (q/k/v rows of a removed group, gate/up rows of a removed channel),
which computes the same function: the mask-only mode of FLAP's `--unstr` scripts.
"""

from __future__ import annotations

import torch
from torch import nn

from .architectures import DecoderArchitecture
from .layout import LAYOUT_KEY, LayerLayout, PruningLayout
from .plan import LayerCost, StructuredLayerPlan


def attention_geometry(config) -> tuple[int, int, int]:
    """(query heads, key/value heads, head_dim) of the dense model."""
    heads = config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    return heads, kv_heads, head_dim


def _linear_parameters(linear: nn.Linear) -> int:
    return linear.weight.numel() + (linear.bias.numel() if linear.bias is not None else 0)


def _projections(layer: nn.Module, arch: DecoderArchitecture) -> dict[str, nn.Linear]:
    attn, mlp = arch.attention(layer), arch.mlp(layer)
    return {
        "q": getattr(attn, arch.query), "k": getattr(attn, arch.key), "v": getattr(attn, arch.value),
        "o": getattr(attn, arch.attention_output),
        "gate": getattr(mlp, arch.gate), "up": getattr(mlp, arch.up), "down": getattr(mlp, arch.mlp_output),
    }


def decoder_linear_parameters(model: nn.Module, arch: DecoderArchitecture) -> int:
    """Weights and biases of every attention and MLP projection: the base of `pruning_ratio`."""
    return sum(
        _linear_parameters(linear)
        for layer in arch.decoder_layers(model)
        for linear in _projections(layer, arch).values()
    )


def layer_cost(layer: nn.Module, arch: DecoderArchitecture, group_size: int, head_dim: int,
               compensate: bool) -> LayerCost:
    """True parameter cost of one head group and one MLP channel in `layer` (biases included)."""
    p = _projections(layer, arch)

    def row(linear: nn.Linear) -> int:  # one output row: a weight row plus its bias entry
        return linear.in_features + (1 if linear.bias is not None else 0)

    group_cost = group_size * head_dim * (row(p["q"]) + p["o"].out_features) + head_dim * (row(p["k"]) + row(p["v"]))
    channel_cost = row(p["gate"]) + row(p["up"]) + p["down"].out_features
    added_bias = 0
    if compensate:
        added_bias = sum(p[name].out_features for name in ("o", "down") if p[name].bias is None)
    total = sum(_linear_parameters(linear) for linear in p.values())
    return LayerCost(group_cost=group_cost, channel_cost=channel_cost, total=total, added_bias=added_bias)


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


def prune_layer(
    layer: nn.Module,
    arch: DecoderArchitecture,
    plan: StructuredLayerPlan,
    group_size: int,
    head_dim: int,
    attention_mean: torch.Tensor | None,
    mlp_mean: torch.Tensor | None,
    physical: bool = True,
) -> None:
    """Apply one layer's plan in place; means given means bias compensation for that projection."""
    attn, mlp = arch.attention(layer), arch.mlp(layer)
    groups = plan.kept_groups
    query_rows = _rows(groups, group_size * head_dim)
    kv_rows = _rows(groups, head_dim)
    setattr(attn, arch.query, _keep_rows(getattr(attn, arch.query), query_rows, physical))
    setattr(attn, arch.key, _keep_rows(getattr(attn, arch.key), kv_rows, physical))
    setattr(attn, arch.value, _keep_rows(getattr(attn, arch.value), kv_rows, physical))
    setattr(attn, arch.attention_output,
            _keep_columns(getattr(attn, arch.attention_output), query_rows, attention_mean, physical))
    channels = plan.kept_channels
    setattr(mlp, arch.gate, _keep_rows(getattr(mlp, arch.gate), channels, physical))
    setattr(mlp, arch.up, _keep_rows(getattr(mlp, arch.up), channels, physical))
    setattr(mlp, arch.mlp_output, _keep_columns(getattr(mlp, arch.mlp_output), channels, mlp_mean, physical))
    if physical and hasattr(mlp, "intermediate_size"):
        mlp.intermediate_size = int(channels.numel())


def record_layout(
    model: nn.Module, arch: DecoderArchitecture, plans: list[StructuredLayerPlan], group_size: int
) -> PruningLayout:
    """Write the per-layer sizes into `model.config.pruning_layout` and return them."""
    layers = [
        LayerLayout(
            num_attention_heads=int(plan.kept_groups.numel()) * group_size,
            num_key_value_heads=int(plan.kept_groups.numel()),
            intermediate_size=int(plan.kept_channels.numel()),
            kept_head_groups=[int(i) for i in plan.kept_groups],
        )
        for plan in plans
    ]
    projections = [_projections(layer, arch) for layer in arch.decoder_layers(model)]
    layout = PruningLayout(
        layers=layers,
        attention_output_bias=all(p["o"].bias is not None for p in projections),
        mlp_output_bias=all(p["down"].bias is not None for p in projections),
    )
    setattr(model.config, LAYOUT_KEY, layout.to_dict())
    return layout
