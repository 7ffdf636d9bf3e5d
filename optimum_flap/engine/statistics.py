"""Per-channel running statistics of a module's input, accumulated in float32 whatever the model dtype.

Means and variances are merged batch by batch with Chan et al.'s parallel update, which stays
accurate where the textbook `E[x^2] - E[x]^2` cancels catastrophically (large means, fp16 inputs).
"""

from __future__ import annotations

import torch


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
        n = x.shape[0]
        batch_mean = x.mean(dim=0)
        batch_sq_dev = ((x - batch_mean) ** 2).sum(dim=0)
        batch_sq = (x * x).sum(dim=0)
        if self.mean is None:
            self.count, self.mean, self._sum_sq_dev, self._sum_sq = n, batch_mean, batch_sq_dev, batch_sq
            return
        total = self.count + n
        delta = batch_mean - self.mean
        self.mean = self.mean + delta * (n / total)
        self._sum_sq_dev = self._sum_sq_dev + batch_sq_dev + delta**2 * (self.count * n / total)
        self._sum_sq = self._sum_sq + batch_sq
        self.count = total

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
