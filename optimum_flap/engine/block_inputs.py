"""What each decoder block receives besides hidden states: position inputs and its own attention mask.

Block 0's keyword arguments are captured once per calibration batch (a pre-hook that stops the
forward). Position ids and rotary embeddings are the same for every block, but the attention mask is
not: transformers builds one mask per attention type of `config.layer_types` ("full_attention",
"sliding_attention") and hands each layer the one for its type. `BlockBatch.kwargs_for` does the
same with `transformers.masking_utils`, so a sliding-window layer never sees a full causal mask.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from transformers.masking_utils import create_causal_mask, create_sliding_window_causal_mask

#: mask builder per attention type, as the decoder models' forward uses them
MASK_BUILDERS: dict[str, Callable[..., Any]] = {
    "full_attention": create_causal_mask,
    "sliding_attention": create_sliding_window_causal_mask,
}

#: keyword arguments of block 0 that are not passed on (no cache during calibration; masks rebuilt per type)
_DROPPED = ("past_key_values", "use_cache", "attention_mask")


def layer_attention_type(config: Any, layer_idx: int) -> str:
    """The attention type of decoder layer `layer_idx`: `config.layer_types`, else Mistral's global window."""
    layer_types = getattr(config, "layer_types", None)
    if layer_types:
        return layer_types[layer_idx]
    return "sliding_attention" if getattr(config, "sliding_window", None) else "full_attention"


@dataclass
class BlockBatch:
    """One calibration batch's block inputs other than hidden states."""

    #: position ids, rotary embeddings and any other keyword the model passes every block
    kwargs: dict[str, Any]
    #: attention mask per attention type (None where the attention kernel applies causality itself)
    masks: dict[str, Any] = field(default_factory=dict)

    def kwargs_for(self, layer_type: str) -> dict[str, Any]:
        return {**self.kwargs, "attention_mask": self.masks[layer_type]}


class _StopForward(Exception):
    """Raised by the capture hook once block 0's inputs are recorded."""


def build_masks(config: Any, hidden_states: torch.Tensor, position_ids: torch.Tensor | None,
                layer_types: set[str]) -> dict[str, Any]:
    """The attention mask of every type in `layer_types`, built as the model's forward builds them."""
    masks = {}
    for layer_type in sorted(layer_types):
        if layer_type not in MASK_BUILDERS:
            raise ValueError(f"Unsupported attention type {layer_type!r}; supported: {', '.join(MASK_BUILDERS)}.")
        masks[layer_type] = MASK_BUILDERS[layer_type](
            config=config, inputs_embeds=hidden_states, attention_mask=None, past_key_values=None,
            position_ids=position_ids,
        )
    return masks


@torch.no_grad()
def capture_block_inputs(
    model: nn.Module,
    first_block: nn.Module,
    input_ids: torch.Tensor,
    batch_size: int,
    device: torch.device,
    layer_types: set[str],
) -> tuple[list[torch.Tensor], list[BlockBatch]]:
    """Run what precedes block 0 on each batch; return block 0's hidden states and every block's kwargs.

    `device` is where the ids are sent (the embeddings' device); hidden states come back where block 0
    received them.
    """
    hidden: list[torch.Tensor] = []
    batches: list[BlockBatch] = []

    def hook(_module: nn.Module, args: tuple, kwargs: dict[str, Any]) -> None:
        states = args[0] if args else kwargs["hidden_states"]
        kept = {k: v for k, v in kwargs.items() if k not in _DROPPED and k != "hidden_states"}
        masks = build_masks(model.config, states, kept.get("position_ids"), layer_types)
        hidden.append(states)
        batches.append(BlockBatch(kept, masks))
        raise _StopForward

    handle = first_block.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        for start in range(0, input_ids.shape[0], batch_size):
            try:
                model(input_ids=input_ids[start : start + batch_size].to(device), use_cache=False)
            except _StopForward:
                pass
    finally:
        handle.remove()
    return hidden, batches
