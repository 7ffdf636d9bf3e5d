"""Calibration across processes: which samples a rank sees, and where collectives run.

Under `torchrun` or `accelerate launch` every rank runs the same pruning code on its own share of
the calibration samples; the per-channel statistics are then merged exactly
(`ChannelStatistics.all_reduce`), so every rank derives the same plan and only rank 0 writes.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TypeVar

import torch
import torch.distributed as dist

T = TypeVar("T")


def init_from_environment() -> bool:
    """Join the process group `torchrun` / `accelerate launch` describe in the environment; True if joined.

    Does nothing in a single process (`WORLD_SIZE` unset or 1) or when a group already exists. With
    GPUs each rank uses `cuda:LOCAL_RANK` and NCCL, otherwise gloo on the CPU.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) < 2 or not dist.is_available() or dist.is_initialized():
        return False
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
    return True


def distributed_world() -> tuple[int, int]:
    """`(rank, world_size)` of the initialised torch.distributed process group, `(0, 1)` otherwise."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main_process() -> bool:
    """True on rank 0 (and in a single process): the rank that writes checkpoints and reports."""
    return distributed_world()[0] == 0


def collective_device() -> torch.device:
    """Where tensors for collectives must live: the current GPU for NCCL, the CPU for gloo."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def shard_for_rank(samples: Sequence[T] | torch.Tensor, rank: int, world_size: int) -> Sequence[T] | torch.Tensor:
    """The contiguous share of `samples` that `rank` of `world_size` calibrates on.

    Shares differ in size by at most one sample; with fewer samples than ranks, some ranks get
    none (their statistics are then empty and contribute nothing to the merge).
    """
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank={rank} is not in range for world_size={world_size}; need 0 <= rank < world_size")
    total = len(samples)
    return samples[rank * total // world_size : (rank + 1) * total // world_size]
