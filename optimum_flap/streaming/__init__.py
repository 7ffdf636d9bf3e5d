"""Pruning models larger than memory: read a checkpoint block by block and write one shard by shard."""

from .access import materialised_layers
from .checkpoint_reader import (
    StreamedCheckpoint,
    checkpoint_weight_map,
    find_block_list,
    run_offload_folder,
    shares_embeddings,
    streamed_checkpoint_of,
    tied_weight_names,
)
from .checkpoint_writer import write_sharded_checkpoint
from .dispatched import iter_dispatched_state, onloaded

__all__ = [
    "StreamedCheckpoint",
    "checkpoint_weight_map",
    "find_block_list",
    "iter_dispatched_state",
    "materialised_layers",
    "onloaded",
    "run_offload_folder",
    "shares_embeddings",
    "streamed_checkpoint_of",
    "tied_weight_names",
    "write_sharded_checkpoint",
]
