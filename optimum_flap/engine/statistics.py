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

    _ROWS = 3  # mean, M2, sum of squares

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
            self._merge(other.count, *other._rows())

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
            mine = torch.stack(self._rows()).to(device)
        else:
            mine = torch.zeros(self._ROWS, channels, dtype=torch.float32, device=device)
        payloads = [torch.empty_like(mine) for _ in range(world)]
        dist.all_gather(payloads, mine)
        home = self.mean.device if self.mean is not None else torch.device("cpu")
        self._reset()
        for size, payload in zip(counts, payloads):
            if int(size[0]):
                self._merge(int(size[0]), *payload.to(home))

    def _rows(self) -> list[torch.Tensor]:
        """What `merge` and `all_reduce` pass on: `_ROWS` rows of one value per channel, in `_merge`'s order."""
        return [self.mean, self._sum_sq_dev, self._sum_sq]

    def _reset(self) -> None:
        self.count, self.mean, self._sum_sq_dev, self._sum_sq = 0, None, None, None

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


class WeightedChannelStatistics(ChannelStatistics):
    """The same statistics with one weight per token: E_w mean, weighted deviations and squares.

    With token weights w_t the properties read (N tokens, sums over tokens):

        mean        = sum_t w_t x_tj / sum_t w_t                  (the weighted mean m_j)
        variance    = sum_t w_t (x_tj - m_j)^2 / (N - 1)
        mean_square = sum_t w_t x_tj^2 / N

    so with every w_t = 1 they are `ChannelStatistics`'s. Used with w_t = 1 / rms_t^2 of a post-norm's
    input, they are the statistics of the change a channel makes in the residual stream (engine/post_norm.py).
    Batches and processes merge with the weighted form of Chan et al.'s update.
    """

    _ROWS = 4  # and the weight sum, repeated per channel

    def __init__(self) -> None:
        super().__init__()
        self.weight_sum: torch.Tensor | None = None

    def update(self, inputs: torch.Tensor, weights: torch.Tensor) -> None:  # type: ignore[override]
        """Add a batch `[..., channels]` of activations with one weight per token (`weights` is `[...]`)."""
        x = inputs.detach().reshape(-1, inputs.shape[-1]).to(torch.float32)
        w = weights.detach().reshape(-1, 1).to(torch.float32)
        total = w.sum()
        batch_mean = (w * x).sum(dim=0) / total
        self._merge(x.shape[0], batch_mean, (w * (x - batch_mean) ** 2).sum(dim=0), (w * x * x).sum(dim=0),
                    total.expand_as(batch_mean))

    def _merge(self, count: int, mean: torch.Tensor, sum_sq_dev: torch.Tensor, sum_sq: torch.Tensor,
               weight_sum: torch.Tensor) -> None:
        """The weighted pairwise update: each side's mean enters with its weight sum instead of its count."""
        weight = weight_sum.reshape(-1)[0].to(torch.float32)
        if self.count == 0:
            self.count, self.mean, self._sum_sq_dev, self._sum_sq = count, mean, sum_sq_dev, sum_sq
            self.weight_sum = weight
            return
        weight = weight.to(self.mean.device)
        total = self.weight_sum + weight
        delta = mean.to(self.mean.device) - self.mean
        self.mean = self.mean + delta * (weight / total)
        self._sum_sq_dev = (self._sum_sq_dev + sum_sq_dev.to(self.mean.device)
                            + delta**2 * (self.weight_sum * weight / total))
        self._sum_sq = self._sum_sq + sum_sq.to(self.mean.device)
        self.count += count
        self.weight_sum = total

    def _rows(self) -> list[torch.Tensor]:
        return [*super()._rows(), self.weight_sum.expand_as(self.mean)]

    def _reset(self) -> None:
        super()._reset()
        self.weight_sum = None

    @property
    def mean_weight(self) -> float:
        """The mean token weight (E[1 / rms^2] for post-norm weights)."""
        self._require()
        return float(self.weight_sum) / self.count
