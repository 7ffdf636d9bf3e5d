"""Capture a sub-block's calling arguments (hidden states and keywords) while its decoder layer runs.

LLM-Barber optimises the attention and the MLP sub-blocks of a layer separately; each needs the
inputs it receives inside the layer (after the layer norm) and the keywords it is called with
(rotary embeddings, attention mask). A pre-hook records them per calibration sequence and stops the
layer's forward there; the stop is caught after each forward, so every calibration batch is captured.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
from torch import nn
from torch.func import functional_call

#: one sequence's sub-block input and its call keywords (a sample of `rebuild_block_masks`)
SubBlockCall = tuple[torch.Tensor, dict[str, Any]]


class _Captured(Exception):
    """Stops the layer's forward once the sub-block's arguments are recorded."""


def _split(value: Any, index: int, batch: int) -> Any:
    """Sequence `index` of a batched call argument; tensors without a batch dimension are shared."""
    if isinstance(value, torch.Tensor):
        return value[index:index + 1] if batch > 1 and value.dim() >= 2 and value.shape[0] == batch else value
    if isinstance(value, tuple):
        return tuple(_split(v, index, batch) for v in value)
    return value


def per_sequence(hidden: torch.Tensor, kwargs: Mapping[str, Any]) -> list[SubBlockCall]:
    """Split one batched sub-block call into one (input, keywords) sample per sequence."""
    batch = hidden.shape[0]
    return [(hidden[i:i + 1], {k: _split(v, i, batch) for k, v in kwargs.items()}) for i in range(batch)]


def capture_inputs(
    sub_block: nn.Module, forwards: Iterable[Callable[[], Any]], hidden_name: str = "hidden_states"
) -> list[SubBlockCall]:
    """The per-sequence inputs `sub_block` receives, over every call in `forwards` (one per calibration batch).

    Each forward is stopped as soon as `sub_block` is reached (nothing after it is computed); the stop
    is caught per forward, so the samples of every batch are captured, in batch order.
    """
    captured: list[SubBlockCall] = []

    def hook(_module: nn.Module, args: tuple, kwargs: dict[str, Any]) -> None:
        kwargs = dict(kwargs)
        hidden = args[0] if args else kwargs.pop(hidden_name)
        if len(args) > 1:
            raise ValueError(f"{type(_module).__name__} is called with {len(args)} positional arguments; "
                             "only the hidden states may be positional.")
        captured.extend(per_sequence(hidden.detach(), kwargs))
        raise _Captured

    handle = sub_block.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        for forward in forwards:
            before = len(captured)
            try:
                forward()
            except _Captured:
                pass
            if len(captured) == before:
                raise RuntimeError(f"{type(sub_block).__name__} was not called by its decoder layer.")
    finally:
        handle.remove()
    if not captured:
        raise ValueError("No calibration batch was given to capture the sub-block's inputs from.")
    return captured


def replaced_output(sub_block: nn.Module, weights: Mapping[str, torch.Tensor]):
    """A forward hook making `sub_block` compute with `weights` (parameter name -> tensor) instead of its own."""

    inside = []  # the replacement call runs the module's forward (and this hook) again: pass through

    def hook(module: nn.Module, args: tuple, kwargs: dict[str, Any], output: Any) -> Any:
        if inside:
            return output
        inside.append(True)
        try:
            return functional_call(module, dict(weights), args, kwargs)
        finally:
            inside.pop()

    return sub_block.register_forward_hook(hook, with_kwargs=True)
