"""Parameter accounting: the one place that counts the decoder parameters pruning removes.

`pruning_ratio` is a fraction of the decoder's linear parameters: the weights *and biases* of every
attention and MLP projection (q, k, v, o, gate, up, down, fused or not) of every decoder layer.
Embeddings, norms and the LM head are not counted. The pruner's report, the selection budget (through
`layer_cost`), the recorded layout and the model card all count with the functions below, so they
agree to the parameter.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import torch
from torch import nn

from .architectures import (
    ATTENTION_OUTPUT,
    GATE,
    KEY,
    MLP_OUTPUT,
    OUTPUT_ROLES,
    QUERY,
    ROLES,
    UP,
    VALUE,
    DecoderArchitecture,
)
from .layout import PruningLayout
from .plan import LayerCost


def linear_parameters(linear: nn.Linear, with_bias: bool = True) -> int:
    bias = linear.bias.numel() if with_bias and linear.bias is not None else 0
    return linear.weight.numel() + bias


def _layer_modules(layer: nn.Module, spec: DecoderArchitecture) -> dict[str, tuple[nn.Linear, tuple[str, ...]]]:
    """Distinct projection modules of a layer: path -> (Linear, roles it holds)."""
    return {path: (layer.get_submodule(path), roles) for path, roles in spec.projection_paths().items()}


def _layers_with_values(model: nn.Module, spec: DecoderArchitecture) -> Iterator[nn.Module]:
    """The decoder layers with real weights, one at a time: counting zeros reads values, not only shapes.

    A dispatched (accelerate offload) or streamed model keeps its blocks on the meta device between
    uses; `streaming.materialised_layers` brings each one in while it is counted.
    """
    from .streaming import materialised_layers

    return materialised_layers(model, spec.decoder_layers(model))


def decoder_linear_parameters(model: nn.Module, spec: DecoderArchitecture, without_bias_of: Iterable[str] = ()) -> int:
    """Weights and biases of every attention and MLP projection: the base of `pruning_ratio`.

    `without_bias_of` leaves out the biases of those roles (the ones bias compensation added, to count
    the dense model from a pruned one).
    """
    skip = set(without_bias_of)
    return sum(
        linear_parameters(linear, with_bias=not skip.intersection(roles))
        for layer in spec.decoder_layers(model)
        for linear, roles in _layer_modules(layer, spec).values()
    )


def nonzero_decoder_parameters(model: nn.Module, spec: DecoderArchitecture) -> int:
    """What a masked (dense-shaped) model keeps: its non-zero weights, and the bias entries of live rows.

    A bias entry counts when its weight row has a non-zero entry or the entry itself is non-zero, so a
    structured mask-only run counts exactly what the physically pruned model holds (a compensation bias
    that happens to be zero still counts; the bias of a removed row does not).
    """
    total = 0
    for layer in _layers_with_values(model, spec):
        for linear, _ in _layer_modules(layer, spec).values():
            total += int(torch.count_nonzero(linear.weight))
            if linear.bias is not None:
                total += int(((linear.weight != 0).any(dim=1) | (linear.bias != 0)).sum())
    return total


def decoder_linear_weights(model: nn.Module, spec: DecoderArchitecture) -> tuple[int, int]:
    """(weight entries, non-zero weight entries) of every decoder projection: a sparse method's ratio base.

    For unstructured and N:M methods `pruning_ratio` is the fraction of these weights set to zero
    (biases are not pruned), so `achieved_ratio(*decoder_linear_weights(model, spec))` is the sparsity.
    """
    total = nonzero = 0
    for layer in _layers_with_values(model, spec):
        for linear, _ in _layer_modules(layer, spec).values():
            total += linear.weight.numel()
            nonzero += int(torch.count_nonzero(linear.weight))
    return total, nonzero


def kept_parameters(model: nn.Module, spec: DecoderArchitecture, physical: bool) -> int:
    """Decoder linear parameters of a pruned model: its projections' sizes, or their non-zeros when masked."""
    return decoder_linear_parameters(model, spec) if physical else nonzero_decoder_parameters(model, spec)


def achieved_ratio(dense: int, kept: int) -> float:
    """Fraction of the dense decoder linear parameters removed."""
    return 1.0 - kept / dense if dense else 0.0


def layer_cost(layer: nn.Module, spec: DecoderArchitecture, group_size: int, head_dim: int,
               compensate: bool) -> LayerCost:
    """Parameter cost of one head group and one MLP channel in `layer` (biases included).

    A head group is one key/value head and its `group_size` query heads: `group_size * head_dim` rows
    of q and columns of o, `head_dim` rows of k and of v. A channel is one row of gate and up and one
    column of down. Each removed row takes its bias entry with it; a column has none.
    """
    p = spec.projections(layer)

    def row(linear: nn.Linear) -> int:  # one output row: a weight row plus its bias entry
        return linear.in_features + (1 if linear.bias is not None else 0)

    query_width = group_size * head_dim
    group_cost = query_width * (row(p[QUERY]) + p[ATTENTION_OUTPUT].out_features)
    group_cost += head_dim * (row(p[KEY]) + row(p[VALUE]))
    channel_cost = row(p[GATE]) + row(p[UP]) + p[MLP_OUTPUT].out_features
    added_bias = 0
    if compensate:
        added_bias = sum(p[role].out_features for role in OUTPUT_ROLES if p[role].bias is None)
    total = sum(linear_parameters(linear) for linear, _ in _layer_modules(layer, spec).values())
    return LayerCost(group_cost=group_cost, channel_cost=channel_cost, total=total, added_bias=added_bias)


def biased_roles(model: nn.Module, spec: DecoderArchitecture) -> set[str]:
    """Roles whose projection carries a bias in some decoder layer."""
    return {
        role
        for layer in spec.decoder_layers(model)
        for role, linear in spec.projections(layer).items()
        if linear.bias is not None
    }


def compensation_roles(model: nn.Module, spec: DecoderArchitecture) -> list[str]:
    """Output roles whose bias the model's config does not give: bias compensation added it."""
    present = biased_roles(model, spec)
    return [role for role in OUTPUT_ROLES if role in present and not spec.config_has_bias(model.config, role)]


def shape_parameters(hidden: int, head_dim: int, heads: int, kv_heads: int, intermediate: int,
                     biased: Iterable[str]) -> int:
    """Linear parameters of one decoder layer of the given sizes (fused or not: the same count)."""
    out_width = {
        QUERY: heads * head_dim, KEY: kv_heads * head_dim, VALUE: kv_heads * head_dim, ATTENTION_OUTPUT: hidden,
        GATE: intermediate, UP: intermediate, MLP_OUTPUT: hidden,
    }
    weights = hidden * (2 * heads * head_dim + 2 * kv_heads * head_dim + 3 * intermediate)
    return weights + sum(out_width[role] for role in set(biased) & set(ROLES))


def layout_parameters(layout: PruningLayout, hidden: int, head_dim: int, dense_sizes: dict[str, int],
                      biased: Iterable[str]) -> tuple[int, int]:
    """(dense, pruned) decoder linear parameters of a recorded layout.

    `biased` are the roles with a bias in the pruned model; the dense model had those minus
    `layout.compensation_biases`. `hidden` is the pruned model's hidden size; `dense_sizes` gives the
    dense one and the dense layer count when a stock-shaped method changed them (else they are the same).
    """
    biased = set(biased)
    dense_biased = biased - set(layout.compensation_biases or ())
    dense_layers = dense_sizes.get("num_hidden_layers", len(layout.layers))
    dense_layer = shape_parameters(dense_sizes.get("hidden_size", hidden), head_dim, dense_sizes["num_attention_heads"],
                                   dense_sizes["num_key_value_heads"], dense_sizes["intermediate_size"], dense_biased)
    pruned = sum(
        shape_parameters(hidden, head_dim, la.num_attention_heads, la.num_key_value_heads, la.intermediate_size,
                         biased)
        for la in layout.layers
    )
    return dense_layers * dense_layer, pruned


def measure_sparsity(model: nn.Module, spec: DecoderArchitecture) -> list[dict[str, float]]:
    """Per decoder layer: projection path -> fraction of its weight entries that are zero."""
    return [
        {
            path: round(1.0 - int(torch.count_nonzero(linear.weight)) / linear.weight.numel(), 6)
            for path, (linear, _) in _layer_modules(layer, spec).items()
        }
        for layer in _layers_with_values(model, spec)
    ]

