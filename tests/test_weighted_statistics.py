"""WeightedChannelStatistics (one weight per token) equals its definition, merged by batch and shard (across processes:
test_statistics_merge.py)."""

from __future__ import annotations

import pytest
import torch

from optimum_flap.engine.distributed import shard_for_rank
from optimum_flap.engine.statistics import ChannelStatistics, WeightedChannelStatistics


def test_weighted_statistics_are_their_definition_and_merge_by_batch():
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(3, 20, 5, generator=generator) * torch.tensor([1.0, 5.0, 0.1, 2.0, 3.0]) + 4.0
    w = torch.rand(3, 20, generator=generator) + 0.1
    stats = WeightedChannelStatistics()
    for batch in range(3):
        stats.update(x[batch], w[batch])
    flat_x, flat_w = x.reshape(-1, 5).double(), w.reshape(-1, 1).double()
    mean = (flat_w * flat_x).sum(0) / flat_w.sum()
    torch.testing.assert_close(stats.mean.double(), mean, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(stats.variance.double(), (flat_w * (flat_x - mean) ** 2).sum(0) / 59, rtol=1e-5, atol=0)
    torch.testing.assert_close(stats.mean_square.double(), (flat_w * flat_x**2).sum(0) / 60, rtol=1e-5, atol=0)
    assert stats.mean_weight == pytest.approx(float(flat_w.mean()), rel=1e-6)
    plain, ones = ChannelStatistics(), WeightedChannelStatistics()
    for batch in range(3):
        plain.update(x[batch])
        ones.update(x[batch], torch.ones(20))
    for name in ("mean", "variance", "mean_square"):
        torch.testing.assert_close(getattr(ones, name), getattr(plain, name))


def _weighted(x: torch.Tensor, w: torch.Tensor) -> WeightedChannelStatistics:
    stats = WeightedChannelStatistics()
    for batch in range(x.shape[0]):
        stats.update(x[batch], w[batch])
    return stats


def _weighted_data() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(3)
    return 50.0 + torch.randn(6, 10, 4, generator=generator), torch.rand(6, 10, generator=generator) * 5 + 0.01


def _assert_same(stats: WeightedChannelStatistics, reference: WeightedChannelStatistics) -> None:
    assert stats.count == reference.count
    assert stats.mean_weight == pytest.approx(reference.mean_weight, rel=1e-6)
    torch.testing.assert_close(stats.mean, reference.mean)
    torch.testing.assert_close(stats.variance, reference.variance, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(stats.mean_square, reference.mean_square)


def test_weighted_merge_of_shards_equals_whole():
    x, w = _weighted_data()
    merged = WeightedChannelStatistics()
    for rank in range(3):
        merged.merge(_weighted(shard_for_rank(x, rank, 3), shard_for_rank(w, rank, 3)))
    _assert_same(merged, _weighted(x, w))
