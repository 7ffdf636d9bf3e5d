"""What each decoder block receives besides hidden states: the keyword arguments the model's forward gives it.

A decoder's forward does not give every layer the same inputs. Transformers builds one attention mask
per attention type of `config.layer_types` ("full_attention", "sliding_attention") and hands each
layer the one for its type, and some families give each type its own rotary embeddings as well
(Gemma 3: local and global frequencies). So the inputs are captured from the model's own forward,
once per attention type: a pre-hook on the first layer of each type records its keyword arguments,
the layers in between are skipped, and the forward stops once every type has been seen. A layer then
gets exactly what the plain forward would have given it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

#: keyword arguments that are not passed on (no cache during calibration)
_DROPPED = ("past_key_values", "use_cache", "hidden_states")


def layer_attention_type(config: Any, layer_idx: int) -> str:
    """The attention type of decoder layer `layer_idx`: `config.layer_types`, else Mistral's global window."""
    layer_types = getattr(config, "layer_types", None)
    if layer_types:
        return layer_types[layer_idx]
    return "sliding_attention" if getattr(config, "sliding_window", None) else "full_attention"


@dataclass
class BlockBatch:
    """One calibration batch's block inputs other than hidden states, per attention type."""

    #: keyword arguments of the first layer (position ids, rotary embeddings, its mask excluded)
    kwargs: dict[str, Any]
    #: attention mask per attention type (None where the attention kernel applies causality itself)
    masks: dict[str, Any]
    #: keyword arguments of the first layer of each other type, where they differ (Gemma 3's rotary)
    per_type: dict[str, dict[str, Any]]

    def kwargs_for(self, layer_type: str) -> dict[str, Any]:
        return {**self.kwargs, **self.per_type.get(layer_type, {}), "attention_mask": self.masks[layer_type]}


class _StopForward(Exception):
    """Raised once the inputs of the first layer of every attention type are recorded."""


def _pass_through(hidden_states: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
    return hidden_states


def _differs(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        return a.shape != b.shape or not torch.equal(a, b.to(a.device))
    if isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)):
        return len(a) != len(b) or any(_differs(x, y) for x, y in zip(a, b))
    return a is not b and a != b


@torch.no_grad()
def capture_block_inputs(
    model: nn.Module,
    layers: nn.ModuleList,
    input_ids: torch.Tensor,
    batch_size: int,
    device: torch.device,
) -> tuple[list[torch.Tensor], list[BlockBatch]]:
    """Run the model's forward up to the first layer of each attention type, for each batch.

    Returns block 0's hidden states and every batch's `BlockBatch`. `device` is where the ids are sent
    (the embeddings' device); hidden states come back where block 0 received them.
    """
    first_of_type: dict[str, int] = {}
    for idx in range(len(layers)):
        first_of_type.setdefault(layer_attention_type(model.config, idx), idx)
    last = max(first_of_type.values())
    hidden: list[torch.Tensor] = []
    batches: list[BlockBatch] = []
    seen: dict[str, dict[str, Any]] = {}

    def hook(layer_type: str, idx: int, args: tuple, kwargs: dict[str, Any]) -> None:
        if idx == 0:
            hidden.append(args[0] if args else kwargs["hidden_states"])
        seen[layer_type] = {k: v for k, v in kwargs.items() if k not in _DROPPED}
        if idx == last:
            raise _StopForward

    handles = [
        layers[idx].register_forward_pre_hook(
            lambda _m, args, kwargs, t=layer_type, i=idx: hook(t, i, args, kwargs), with_kwargs=True
        )
        for layer_type, idx in first_of_type.items()
    ]
    # the layers before the last recorded one are skipped: only their inputs matter here
    replaced = {idx: layers[idx].__dict__.get("forward") for idx in range(last)}
    for idx in replaced:
        layers[idx].forward = _pass_through
    try:
        for start in range(0, input_ids.shape[0], batch_size):
            seen.clear()
            try:
                model(input_ids=input_ids[start : start + batch_size].to(device), use_cache=False)
            except _StopForward:
                pass
            batches.append(_batch(seen, layer_attention_type(model.config, 0)))
    finally:
        for handle in handles:
            handle.remove()
        for idx, forward in replaced.items():
            del layers[idx].forward
            if forward is not None:  # e.g. accelerate's dispatch wrapper
                layers[idx].forward = forward
    return hidden, batches


def _batch(seen: dict[str, dict[str, Any]], first_type: str) -> BlockBatch:
    masks = {layer_type: kwargs.pop("attention_mask", None) for layer_type, kwargs in seen.items()}
    common = seen[first_type]
    per_type = {
        layer_type: {k: v for k, v in kwargs.items() if k not in common or _differs(v, common[k])}
        for layer_type, kwargs in seen.items()
        if layer_type != first_type
    }
    return BlockBatch(common, masks, {t: kw for t, kw in per_type.items() if kw})
