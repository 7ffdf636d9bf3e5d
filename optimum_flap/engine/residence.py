"""Where the decoder blocks live between uses, and how the pipeline brings one in.

The pipeline needs three things of a block: to run it on the calibration batches (`running`), to
read its weights outside a forward for scoring (`reading`), and to change it by surgery so that the
change is kept (`changing`). What that takes depends on where the weights are:

* `InMemoryBlocks`: the whole model is in memory; a block is moved to the execution device while it
  runs and moved back afterwards.
* `DispatchedBlocks`: a model dispatched by accelerate (`device_map=...`); its hooks bring offloaded
  weights in around each forward, so running needs nothing, while reading and changing go through
  `streaming.onloaded` (changes written back to the offload storage).
* `StreamedBlocks`: a `streaming.StreamedCheckpoint`; a block is read from the checkpoint when it is
  needed and released afterwards, and a changed block is written to the offload folder first, so at
  most one block is in memory at a time.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:
    from ..streaming import StreamedCheckpoint


class InMemoryBlocks:
    """Blocks held in memory, moved to `device` while they run."""

    def __init__(self, layers: nn.ModuleList, device: torch.device) -> None:
        self.layers = layers
        self.device = device

    @contextmanager
    def running(self, index: int) -> Iterator[nn.Module]:
        block = self.layers[index]
        original = next(block.parameters()).device
        block.to(self.device)
        try:
            yield block
        finally:
            block.to(original)

    @contextmanager
    def reading(self, index: int) -> Iterator[nn.Module]:
        yield self.layers[index]

    @contextmanager
    def changing(self, index: int) -> Iterator[nn.Module]:
        yield self.layers[index]


class DispatchedBlocks(InMemoryBlocks):
    """Blocks of a model dispatched by accelerate: left where they are, onloaded to read or change."""

    @contextmanager
    def running(self, index: int) -> Iterator[nn.Module]:
        yield self.layers[index]  # accelerate's hooks place weights and inputs around each forward

    @contextmanager
    def reading(self, index: int) -> Iterator[nn.Module]:
        from ..streaming import onloaded

        with onloaded(self.layers[index]) as block:
            yield block

    @contextmanager
    def changing(self, index: int) -> Iterator[nn.Module]:
        from ..streaming import onloaded

        with onloaded(self.layers[index], write_back=True) as block:
            yield block


class StreamedBlocks:
    """Blocks read from a `StreamedCheckpoint` one at a time; changed blocks go to its offload folder."""

    def __init__(self, checkpoint: StreamedCheckpoint, device: torch.device) -> None:
        self.checkpoint = checkpoint
        self.layers = checkpoint.blocks
        self.device = device
        self._running: int | None = None
        self._changed = False

    @contextmanager
    def running(self, index: int) -> Iterator[nn.Module]:
        block = self.checkpoint.load_block(index, self.device)
        self._running, self._changed = index, False
        try:
            yield block
            if self._changed:
                self.checkpoint.offload_block(index)
        finally:
            self._running = None
            self.checkpoint.release_block(index)

    @contextmanager
    def reading(self, index: int) -> Iterator[nn.Module]:
        if index == self._running:
            yield self.layers[index]
            return
        block = self.checkpoint.load_block(index, self.device)
        try:
            yield block
        finally:
            self.checkpoint.release_block(index)

    @contextmanager
    def changing(self, index: int) -> Iterator[nn.Module]:
        if index == self._running:  # written to the offload folder when the block is released
            self._changed = True
            yield self.layers[index]
            return
        block = self.checkpoint.load_block(index, self.device)
        try:
            yield block
            self.checkpoint.offload_block(index)
        finally:
            self.checkpoint.release_block(index)


BlockResidence = InMemoryBlocks | DispatchedBlocks | StreamedBlocks
