"""Per-channel running statistics of a module's input, accumulated in float32 whatever the model dtype.

Means and variances are merged batch by batch, and across processes, with Chan et al.'s parallel
update ("Updating formulae and a pairwise algorithm for computing sample variances", 1979), which
stays accurate where the textbook `E[x^2] - E[x]^2` cancels catastrophically (large means, fp16).
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from .distributed import collective_device, distributed_world


class ChannelStatistics:
    """Mean, unbiased variance and mean square of each input channel over all calibration tokens."""

    def __init__(self) -> None:
        self.count = 0
        self.mean: torch.Tensor | None = None
        self._sum_sq_dev: torch.Tensor | None = None  # M2: sum of squared deviations from the mean
        self._sum_sq: torch.Tensor | None = None

    def update(self, inputs: torch.Tensor) -> None:
        """Add a batch `[..., channels]` of activations (every leading position is one token)."""
        x = inputs.detach().reshape(-1, inputs.shape[-1]).to(torch.float32)
        batch_mean = x.mean(dim=0)
        self._merge(x.shape[0], batch_mean, ((x - batch_mean) ** 2).sum(dim=0), (x * x).sum(dim=0))

    def merge(self, other: ChannelStatistics) -> None:
        """Add the tokens summarised by `other` (e.g. another process's share of the calibration set)."""
        if other.count:
            self._merge(other.count, other.mean, other._sum_sq_dev, other._sum_sq)

    def _merge(self, count: int, mean: torch.Tensor, sum_sq_dev: torch.Tensor, sum_sq: torch.Tensor) -> None:
        """Chan et al.'s pairwise update of (count, mean, M2) plus the plain sum of squares."""
        if self.count == 0:
            self.count, self.mean, self._sum_sq_dev, self._sum_sq = count, mean, sum_sq_dev, sum_sq
            return
        total = self.count + count
        delta = mean.to(self.mean.device) - self.mean
        self.mean = self.mean + delta * (count / total)
        self._sum_sq_dev = self._sum_sq_dev + sum_sq_dev.to(self.mean.device) + delta**2 * (self.count * count / total)
        self._sum_sq = self._sum_sq + sum_sq.to(self.mean.device)
        self.count = total

    def all_reduce(self) -> None:
        """Merge the statistics of every torch.distributed rank, so that all ranks hold the same result.

        Every rank gathers every rank's (count, mean, M2, sum of squares) and merges them in rank
        order, so the result is identical on all ranks. Ranks that saw no tokens contribute nothing.
        A no-op outside torch.distributed or with a single process.
        """
        _rank, world = distributed_world()
        if world == 1:
            return
        device = collective_device()
        counts = [torch.zeros(2, dtype=torch.int64, device=device) for _ in range(world)]
        channels = 0 if self.mean is None else self.mean.numel()
        dist.all_gather(counts, torch.tensor([self.count, channels], dtype=torch.int64, device=device))
        channels = max(int(size[1]) for size in counts)
        if channels == 0:
            return
        if self.count:
            mine = torch.stack([self.mean, self._sum_sq_dev, self._sum_sq]).to(device)
        else:
            mine = torch.zeros(3, channels, dtype=torch.float32, device=device)
        payloads = [torch.empty_like(mine) for _ in range(world)]
        dist.all_gather(payloads, mine)
        home = self.mean.device if self.mean is not None else torch.device("cpu")
        self.count, self.mean, self._sum_sq_dev, self._sum_sq = 0, None, None, None
        for size, payload in zip(counts, payloads):
            if int(size[0]):
                mean, sum_sq_dev, sum_sq = payload.to(home)
                self._merge(int(size[0]), mean, sum_sq_dev, sum_sq)

    def _require(self) -> None:
        if self.mean is None:
            raise RuntimeError("No calibration activations were recorded for this module.")

    @property
    def variance(self) -> torch.Tensor:
        """Unbiased sample variance of each channel (the fluctuation of FLAP's metrics)."""
        self._require()
        return self._sum_sq_dev / max(self.count - 1, 1)

    @property
    def mean_square(self) -> torch.Tensor:
        """Mean of x^2 per channel, i.e. the squared activation norm divided by the token count."""
        self._require()
        return self._sum_sq / self.count
