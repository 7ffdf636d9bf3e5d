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

A plan's `kept_hidden` also narrows the residual stream (Minitron's embedding-channel pruning,
Muralidharan et al. 2024 §2.2): every projection reads (q/k/v, gate/up) and writes (o, down) only the kept
channels and the layer's residual norms keep their weights. `apply_model_shape` then cuts the rest of
the model to the same channels (embeddings, final norm, LM head) and removes whole decoder layers.

`apply_mask_layer_plan` zeroes the masked entries of each Linear in place (unstructured and
semi-structured methods); shapes never change.
"""

from __future__ import annotations

import torch
from torch import nn

from .accounting import compensation_roles, measure_sparsity
from .architectures import (
    ATTENTION_OUTPUT,
    GATE,
    KEY,
    MLP_OUTPUT,
    OUTPUT_ROLES,
    QUERY,
    UP,
    VALUE,
    DecoderArchitecture,
    attention_geometry,
)
from .layout import LAYOUT_KEY, SPARSITY_KEY, LayerLayout, PruningLayout
from .models.layer_sizes import LayerSizesConfig
from .plan import MaskLayerPlan, ModelShapePlan, StructuredLayerPlan


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
    if plan.kept_hidden is not None:
        if not physical:
            raise ValueError("kept_hidden cuts the residual stream; it has no mask-only (physical=False) form.")
        _cut_hidden(layer, spec, plan.kept_hidden)


def residual_norms(layer: nn.Module, width: int) -> dict[str, nn.Module]:
    """The layer's norms over the residual stream: its direct children with a 1-D weight of `width`.

    Norms inside attention (Qwen3's q_norm, OLMo-2's q_norm over all heads) are not direct children
    of the layer, so they are never taken for residual norms.
    """
    norms = {}
    for name, child in layer.named_children():
        weight = getattr(child, "weight", None)
        if isinstance(weight, torch.Tensor) and weight.ndim == 1 and weight.numel() == width:
            norms[name] = child
    return norms


def _cut_norm(norm: nn.Module, kept: torch.Tensor, offset: float = 0.0, scale: float = 1.0) -> None:
    """Keep a norm's weights (and bias) at `kept`; `scale` divides what it multiplies by, (offset + w)."""
    with torch.no_grad():
        weight = norm.weight.detach()[kept.to(norm.weight.device)]
        if scale != 1.0:
            weight = ((offset + weight.to(torch.float32)) / scale - offset).to(norm.weight.dtype)
        norm.weight = nn.Parameter(weight.clone(), requires_grad=norm.weight.requires_grad)
        if getattr(norm, "bias", None) is not None:
            norm.bias = nn.Parameter(norm.bias.detach()[kept.to(norm.bias.device)].clone(),
                                     requires_grad=norm.bias.requires_grad)
    for attribute in ("normalized_shape", "hidden_size", "dim"):
        if isinstance(getattr(norm, attribute, None), int):
            setattr(norm, attribute, int(kept.numel()))
        elif isinstance(getattr(norm, attribute, None), tuple):
            setattr(norm, attribute, (int(kept.numel()),))


def _cut_hidden(layer: nn.Module, spec: DecoderArchitecture, kept: torch.Tensor) -> None:
    """Narrow a layer to the residual channels `kept`: projection inputs (q/k/v, gate/up), outputs (o, down), norms."""
    projections = spec.projections(layer)
    width = projections[ATTENTION_OUTPUT].out_features
    _check_indices("kept_hidden", kept, width)
    for roles in spec.projection_paths().values():
        linear = projections[roles[0]]
        if roles[0] in OUTPUT_ROLES:
            new = _keep_rows(linear, kept, physical=True)
        else:
            new = _new_linear(linear, linear.weight[:, kept.to(linear.weight.device)],
                              linear.bias.detach() if linear.bias is not None else None)
        spec.set_projection(layer, roles[0], new)
    for norm in residual_norms(layer, width).values():
        _cut_norm(norm, kept)


def apply_model_shape(model: nn.Module, spec: DecoderArchitecture, shape: ModelShapePlan) -> None:
    """Cut what lies outside the layers to `shape.kept_hidden` and keep only `shape.kept_layers`, in place.

    Call after every layer's plan (with the same `kept_hidden`) was applied. The config gets the new
    `hidden_size` (with `head_dim` written out, which no longer follows from it) and `num_hidden_layers`,
    and its per-layer lists are trimmed. Where the forward scales the embeddings by sqrt(hidden_size)
    (Gemma) the embedding weights absorb sqrt(old / new), so the stock forward at the new size computes
    the pruned model; tied to the LM head, the final norm divides by the same factor to keep the logits.
    """
    config = model.config
    if shape.kept_hidden is not None:
        kept = shape.kept_hidden
        old, new = int(config.hidden_size), int(kept.numel())
        _check_indices("kept_hidden", kept, old)
        head_dim = attention_geometry(config)[2]
        embed, head = model.get_input_embeddings(), model.get_output_embeddings()
        tied = head is not None and head.weight is embed.weight
        scale = (old / new) ** 0.5 if spec.embeddings_scaled_by_sqrt_hidden else 1.0
        with torch.no_grad():
            weight = embed.weight.detach()[:, kept.to(embed.weight.device)]
            weight = (weight.to(torch.float32) * scale).to(weight.dtype)
            embed.weight = nn.Parameter(weight.clone(), requires_grad=embed.weight.requires_grad)
        embed.embedding_dim = new
        if spec.embeddings_scaled_by_sqrt_hidden and hasattr(embed, "embed_scale"):
            embed.embed_scale.fill_(new**0.5)  # what the stock class computes at the new size
            embed.scalar_embed_scale = new**0.5
        _cut_norm(model.get_submodule(spec.final_norm_path), kept, spec.norm_weight_offset,
                  scale if tied else 1.0)
        if tied:
            head.weight = embed.weight
        elif head is not None:
            new_head = _new_linear(head, head.weight[:, kept.to(head.weight.device)],
                                   head.bias.detach() if head.bias is not None else None)
            model.set_output_embeddings(new_head)
        config.head_dim = head_dim
        config.hidden_size = new
    if shape.kept_layers is not None:
        _keep_layers(model, spec, shape.kept_layers)


def _keep_layers(model: nn.Module, spec: DecoderArchitecture, kept: list[int]) -> None:
    """Keep the decoder layers `kept` (in order), renumber their cache index and trim the per-layer config lists."""
    layers = spec.decoder_layers(model)
    count = len(layers)
    _check_indices("kept_layers", torch.tensor(kept), count)
    if sorted(kept) != list(kept):
        raise ValueError(f"kept_layers must be sorted, got {list(kept)}.")
    parent, _, name = spec.layers_path.rpartition(".")
    setattr(model.get_submodule(parent), name, nn.ModuleList(layers[i] for i in kept))
    for new_index, layer in enumerate(spec.decoder_layers(model)):
        for module in layer.modules():
            if isinstance(getattr(module, "layer_idx", None), int):
                module.layer_idx = new_index
    config = model.config
    for key in spec.per_layer_config_lists:
        values = getattr(config, key, None)
        if isinstance(values, (list, tuple)) and len(values) == count:
            setattr(config, key, [values[i] for i in kept])
    config.num_hidden_layers = len(kept)


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
