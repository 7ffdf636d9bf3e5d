"""Pruning models larger than memory: read a checkpoint block by block and write one shard by shard."""

from .checkpoint_reader import StreamedCheckpoint, checkpoint_weight_map, find_block_list
from .checkpoint_writer import write_sharded_checkpoint

__all__ = ["StreamedCheckpoint", "checkpoint_weight_map", "find_block_list", "write_sharded_checkpoint"]
