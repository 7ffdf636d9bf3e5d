"""Pruning models larger than memory: read a checkpoint block by block and write one shard by shard."""

from .checkpoint_reader import StreamedCheckpoint, checkpoint_weight_map, find_block_list

__all__ = ["StreamedCheckpoint", "checkpoint_weight_map", "find_block_list"]
