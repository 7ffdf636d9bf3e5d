"""Read every decoder layer's weights, wherever they live: in memory, offloaded by accelerate, or streamed.

Counting zeros (the sparsity a mask method achieved) reads weight values outside a forward, after
the pipeline has put the blocks back where they live: on the meta device, with their values in an
accelerate offload storage or in a `StreamedCheckpoint`'s checkpoint and offload folder.
`materialised_layers` brings each layer in for the time the caller looks at it, one at a time, so
the in-memory, dispatched and streamed paths all count the same tensors.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from accelerate.utils import has_offloaded_params
from torch import nn

from .checkpoint_reader import streamed_checkpoint_of
from .dispatched import onloaded


def _is_meta(layer: nn.Module) -> bool:
    return any(tensor.is_meta for tensor in layer.state_dict(keep_vars=True).values())


def materialised_layers(model: nn.Module, layers: Iterable[nn.Module]) -> Iterator[nn.Module]:
    """Each of `model`'s decoder `layers` with real weights while the caller holds it, then put back."""
    streamed = streamed_checkpoint_of(model)
    for index, layer in enumerate(layers):
        if streamed is not None and streamed.blocks[index] is layer and index not in streamed.loaded:
            streamed.load_block(index)
            try:
                yield layer
            finally:
                streamed.release_block(index)
        elif any(has_offloaded_params(module) for module in layer.modules()):
            with onloaded(layer) as real:
                yield real
        else:
            if _is_meta(layer):
                raise ValueError(f"decoder layer {index} of {type(model).__name__} holds meta tensors and no "
                                 "offload hook or streamed checkpoint to read them from.")
            yield layer
