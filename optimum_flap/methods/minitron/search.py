"""Turn importances and a shape into plans, and score a pruned candidate without training.

The candidate of a shape keeps, in every layer, its highest-ranked head groups and MLP channels, the
residual channels with the highest importance summed over layers, and the most important layers
(Muralidharan et al. 2024 §2.2-2.3). A candidate is scored by the KL divergence from the dense
model's next-token distribution to its own, averaged over the held-out windows' tokens (the papers
rank candidates after a short retraining; without training, the KL to the dense model is the
distillation loss the retraining would start from). Depth importance by loss (§2.2): the increase in
next-token loss on the held-out windows when one layer is skipped.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from ...architectures import DecoderArchitecture
from ...plan import ModelShapePlan, StructuredLayerPlan
from ...surgery import apply_model_shape, apply_structured_layer_plan
from .importance import LayerImportance, top_indices
from .shapes import StockShape


def kept_layers(scores: list[float], count: int) -> list[int]:
    """The `count` most important layers, in model order."""
    return top_indices(torch.tensor(scores, dtype=torch.float64), count).tolist()


def plans_for(importances: list[LayerImportance], shape: StockShape, dense: StockShape,
              layer_scores: list[float]) -> tuple[list[StructuredLayerPlan], ModelShapePlan]:
    """One plan per (dense) layer and the model-wide cuts that give `shape`."""
    kept_hidden = None
    if shape.hidden_size != dense.hidden_size:
        kept_hidden = top_indices(torch.stack([imp.hidden for imp in importances]).sum(dim=0), shape.hidden_size)
    plans = [
        StructuredLayerPlan(top_indices(imp.groups, shape.num_key_value_heads),
                            top_indices(imp.channels, shape.intermediate_size), kept_hidden=kept_hidden)
        for imp in importances
    ]
    layers = None
    if shape.num_hidden_layers != dense.num_hidden_layers:
        layers = kept_layers(layer_scores, shape.num_hidden_layers)
    return plans, ModelShapePlan(kept_hidden=kept_hidden, kept_layers=layers)


def apply_plans(model: nn.Module, arch: DecoderArchitecture, plans: list[StructuredLayerPlan],
                shape: ModelShapePlan) -> None:
    """Apply every layer's plan, then the model-wide cuts, in place."""
    for layer, plan in zip(arch.decoder_layers(model), plans):
        apply_structured_layer_plan(layer, arch, plan)
    apply_model_shape(model, arch, shape)


def pruned_copy(model: nn.Module, arch: DecoderArchitecture, plans: list[StructuredLayerPlan],
                shape: ModelShapePlan) -> nn.Module:
    """A pruned copy of `model` (the model itself is untouched)."""
    candidate = copy.deepcopy(model)
    apply_plans(candidate, arch, plans, shape)
    return candidate.eval()


def _batches(ids: torch.Tensor, batch_size: int) -> Iterator[torch.Tensor]:
    yield from ids.split(batch_size)


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def log_probs(model: nn.Module, ids: torch.Tensor, batch_size: int) -> list[torch.Tensor]:
    """Next-token log-probabilities of `model` on `ids`, per batch, in float32 on CPU."""
    device = _device(model)
    return [F.log_softmax(model(input_ids=batch.to(device), use_cache=False).logits.float(), dim=-1).cpu()
            for batch in _batches(ids, batch_size)]


@torch.no_grad()
def kl_to_dense(model: nn.Module, ids: torch.Tensor, dense: list[torch.Tensor], batch_size: int) -> float:
    """Mean over tokens of KL(dense || model) of the next-token distributions."""
    total, count = 0.0, 0
    for reference, candidate in zip(dense, log_probs(model, ids, batch_size)):
        kl = (reference.exp() * (reference - candidate)).sum(dim=-1)
        total += float(kl.to(torch.float64).sum())
        count += kl.numel()
    return total / count


@torch.no_grad()
def next_token_loss(model: nn.Module, ids: torch.Tensor, batch_size: int) -> float:
    """Mean next-token cross-entropy of `model` on `ids`."""
    device, total, count = _device(model), 0.0, 0
    for batch in _batches(ids, batch_size):
        batch = batch.to(device)
        logits = model(input_ids=batch, use_cache=False).logits[:, :-1].float()
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1), reduction="sum")
        total += float(loss)
        count += batch[:, 1:].numel()
    return total / count


@contextmanager
def skipped(layer: nn.Module) -> Iterator[None]:
    """Within the block, `layer` passes its input hidden states through unchanged."""
    def identity(_module, args, kwargs, output):
        hidden = args[0] if args else kwargs["hidden_states"]
        return (hidden, *output[1:]) if isinstance(output, tuple) else hidden

    handle = layer.register_forward_hook(identity, with_kwargs=True)
    try:
        yield
    finally:
        handle.remove()


def loss_increases(model: nn.Module, arch: DecoderArchitecture, ids: torch.Tensor, batch_size: int) -> list[float]:
    """Per layer, the next-token loss on `ids` with that layer skipped minus the dense loss."""
    dense = next_token_loss(model, ids, batch_size)
    increases = []
    for layer in arch.decoder_layers(model):
        with skipped(layer):
            increases.append(next_token_loss(model, ids, batch_size) - dense)
    return increases
