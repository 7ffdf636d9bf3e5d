"""Run a calibration batch through a decoder one block at a time.

The model is never run end to end on the calibration set: the inputs of the first block are captured
once (a pre-hook that stops the forward), then each block runs on them and its outputs become the
next block's inputs. Peak memory is one block plus the hidden states of the calibration batch, and
nothing here depends on `max_position_embeddings`. Methods observe module inputs through hooks and
may change a block before its outputs are propagated (sequential methods) or not (one-shot FLAP).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..architectures import DecoderArchitecture

InputObserver = Callable[[torch.Tensor], None]


class _StopForward(Exception):
    """Raised by the capture hook once the first block's inputs are recorded."""


@dataclass
class BlockBatch:
    """One calibration batch as a decoder block sees it: hidden states plus the model's kwargs."""

    hidden_states: torch.Tensor
    kwargs: dict[str, Any]


class LayerwiseRunner:
    """Feeds the calibration ids through the decoder blocks of `model`, one block at a time.

    Args:
        model: a causal LM whose decoder layout `architecture` describes.
        architecture: the family adapter.
        input_ids: calibration batch `[num_samples, seq_len]`.
        batch_size: sequences per block call.
        device: where blocks run. Blocks are moved there one at a time and moved back afterwards, so
            a model kept on CPU can be calibrated on a GPU. Models dispatched by accelerate
            (`device_map=...`) are left where they are: accelerate's hooks move their weights.
    """

    def __init__(
        self,
        model: nn.Module,
        architecture: DecoderArchitecture,
        input_ids: torch.LongTensor,
        batch_size: int,
        device: torch.device | str | None = None,
    ) -> None:
        self.model = model
        self.layers = architecture.decoder_layers(model)
        self.input_ids = input_ids
        self.batch_size = batch_size
        self.dispatched = bool(getattr(model, "hf_device_map", None))
        first_param = next(model.parameters())
        self.device = torch.device(device) if device is not None else first_param.device
        self.batches: list[BlockBatch] = []

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    @torch.no_grad()
    def capture_first_block_inputs(self) -> None:
        """Run the embeddings (and whatever precedes block 0) to record block 0's inputs and kwargs."""
        captured: list[BlockBatch] = []

        def hook(_module: nn.Module, args: tuple, kwargs: dict[str, Any]) -> None:
            hidden = args[0] if args else kwargs.pop("hidden_states")
            kwargs = {k: v for k, v in kwargs.items() if k not in ("past_key_values", "use_cache")}
            captured.append(BlockBatch(hidden, kwargs))
            raise _StopForward

        embed_device = self.model.get_input_embeddings().weight.device
        if not self.dispatched and embed_device.type == "meta":
            raise ValueError("The model's embeddings are on the meta device; load real weights first.")
        handle = self.layers[0].register_forward_pre_hook(hook, with_kwargs=True)
        moved = self._move_outside_layers(self.device)
        try:
            for start in range(0, self.input_ids.shape[0], self.batch_size):
                ids = self.input_ids[start : start + self.batch_size]
                try:
                    self.model(input_ids=ids.to(self.device if moved else embed_device), use_cache=False)
                except _StopForward:
                    pass
        finally:
            handle.remove()
            if moved:
                self._move_outside_layers(moved)
        self.batches = captured

    def _move_outside_layers(self, device: torch.device) -> torch.device | None:
        """Move the modules outside the decoder blocks (embeddings, rotary) to `device`; return the old one."""
        old = self.model.get_input_embeddings().weight.device
        if self.dispatched or old == device:
            return None
        prefix = next(name for name, module in self.model.named_modules() if module is self.layers)
        for name, module in self.model.named_modules():
            if name == prefix or name.startswith(prefix + "."):
                continue
            for param in module.parameters(recurse=False):
                param.data = param.data.to(device)
            for key, buffer in module.named_buffers(recurse=False):
                module._buffers[key] = buffer.to(device)
        return old

    @contextmanager
    def _on_device(self, block: nn.Module) -> Iterator[None]:
        if self.dispatched:
            yield
            return
        original = next(block.parameters()).device
        block.to(self.device)
        try:
            yield
        finally:
            block.to(original)

    @torch.no_grad()
    def run_block(
        self,
        layer_idx: int,
        input_observers: dict[str, InputObserver] | None = None,
        propagate: bool = True,
    ) -> None:
        """Run block `layer_idx` on every batch, feeding module inputs to the observers.

        `input_observers` maps a module path relative to the block (e.g. `"mlp.down_proj"`) to a
        function receiving that module's input tensor. With `propagate`, the block's outputs replace
        the stored hidden states, so the next call sees them as inputs.
        """
        if not self.batches:
            self.capture_first_block_inputs()
        block = self.layers[layer_idx]
        handles = [
            block.get_submodule(path).register_forward_pre_hook(_input_hook(observer))
            for path, observer in (input_observers or {}).items()
        ]
        try:
            with self._on_device(block):
                for batch in self.batches:
                    output = block(batch.hidden_states, **batch.kwargs)
                    if propagate:
                        batch.hidden_states = output[0] if isinstance(output, tuple) else output
        finally:
            for handle in handles:
                handle.remove()


def _input_hook(observer: InputObserver) -> Callable[[nn.Module, tuple], None]:
    def hook(_module: nn.Module, args: tuple) -> None:
        observer(args[0])

    return hook

