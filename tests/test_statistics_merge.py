"""ChannelStatistics merged across splits and across processes equals the statistics of the whole set."""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from optimum_flap.engine.distributed import distributed_world, is_main_process, shard_for_rank
from optimum_flap.engine.statistics import ChannelStatistics, WeightedChannelStatistics


def _activations(seed: int = 0) -> torch.Tensor:
    """12 samples of 5 tokens x 7 channels with a large offset, where E[x^2]-E[x]^2 would cancel."""
    generator = torch.Generator().manual_seed(seed)
    return 1000.0 + torch.randn(12, 5, 7, generator=generator) * torch.linspace(0.1, 3.0, 7)


def _weighted(samples: torch.Tensor) -> WeightedChannelStatistics:
    """The same activations with a weight per token that depends on the token, as post-norm weights 1 / rms^2 do."""
    stats = WeightedChannelStatistics()
    for sample in samples:
        stats.update(sample, 1.0 / (1.0 + (sample[:, 0] - 1000.0) ** 2))
    return stats


def _stats(samples: torch.Tensor, batch_size: int = 2) -> ChannelStatistics:
    stats = ChannelStatistics()
    for start in range(0, samples.shape[0], batch_size):
        stats.update(samples[start : start + batch_size])
    return stats


def _assert_equal(stats: ChannelStatistics, reference: ChannelStatistics) -> None:
    assert stats.count == reference.count
    torch.testing.assert_close(stats.mean, reference.mean)
    # float32 rounding of a different summation order, on a mean 1000x the smallest deviation
    torch.testing.assert_close(stats.variance, reference.variance, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(stats.mean_square, reference.mean_square)


def test_statistics_match_float64_reference():
    x = _activations().reshape(-1, 7).double()
    stats = _stats(_activations())
    torch.testing.assert_close(stats.variance.double(), x.var(dim=0), rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(stats.mean_square.double(), (x * x).mean(dim=0), rtol=1e-6, atol=0)


@pytest.mark.parametrize("world_size", [2, 3, 5])
def test_merge_of_shards_equals_whole(world_size):
    samples = _activations()
    merged = ChannelStatistics()
    for rank in range(world_size):
        merged.merge(_stats(shard_for_rank(samples, rank, world_size)))
    _assert_equal(merged, _stats(samples))


def test_merge_with_empty_sides():
    whole = _stats(_activations())
    empty = ChannelStatistics()
    empty.merge(whole)
    _assert_equal(empty, whole)
    count = whole.count
    whole.merge(ChannelStatistics())
    assert whole.count == count


def test_shard_for_rank():
    ids = list(range(10))
    shares = [shard_for_rank(ids, rank, 3) for rank in range(3)]
    assert shares == [[0, 1, 2], [3, 4, 5], [6, 7, 8, 9]]
    assert [len(shard_for_rank([1, 2], rank, 4)) for rank in range(4)] == [0, 1, 0, 1]
    with pytest.raises(ValueError, match="rank=2 is not in range for world_size=2"):
        shard_for_rank(ids, 2, 2)


def test_single_process_all_reduce_is_a_no_op():
    assert distributed_world() == (0, 1) and is_main_process()
    stats = _stats(_activations())
    before = stats.mean.clone()
    stats.all_reduce()
    assert torch.equal(stats.mean, before) and stats.count == 60


def _worker(rank: int, world_size: int, port: int, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size)
    try:
        split = _stats(shard_for_rank(_activations(), rank, world_size))
        split.all_reduce()
        # a module that only rank 0 saw tokens for: the other rank contributes nothing
        lopsided = _stats(_activations(seed=1)) if rank == 0 else ChannelStatistics()
        lopsided.all_reduce()
        weighted = _weighted(shard_for_rank(_activations(), rank, world_size))
        weighted.all_reduce()
        result = {name: (s.count, s.mean, s.variance, s.mean_square)
                  for name, s in (("split", split), ("lopsided", lopsided), ("weighted", weighted))}
        torch.save({"result": result, "main": is_main_process()}, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_two_process_gloo_all_reduce_equals_single_process(tmp_path):
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{rank}.pt") for rank in range(2)]
    assert [r["main"] for r in ranks] == [True, False]
    for name, reference in (("split", _stats(_activations())), ("lopsided", _stats(_activations(seed=1))),
                            ("weighted", _weighted(_activations()))):
        count, mean, variance, mean_square = ranks[0]["result"][name]
        for left, right in zip(ranks[0]["result"][name][1:], ranks[1]["result"][name][1:]):
            assert torch.equal(left, right)  # every rank ends with bit-identical statistics
        assert count == ranks[1]["result"][name][0] == reference.count
        torch.testing.assert_close(mean, reference.mean)
        torch.testing.assert_close(variance, reference.variance, rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(mean_square, reference.mean_square)
