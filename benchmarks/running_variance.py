"""The released FLAP running "fluctuation" against the exact variance, on synthetic activations.

Prints, per number of calibration sequences, the range of (running value) / (T * variance) over the
channels, and how many of the lowest-quarter channels the two statistics select differently. The
running update is written from its description in docs/flap.md (new mean in both factors, the first
sequence contributes nothing); the exact variance is `torch.var`.

    python benchmarks/running_variance.py
"""

from __future__ import annotations

import torch

TOKENS, CHANNELS, SEEDS = 128, 64, 20


def released_running_fluctuation(sequences: list[torch.Tensor]) -> torch.Tensor:
    """The released per-sequence update; each sequence is `[channels, tokens]`."""
    count, mean, fluctuation = 0, None, None
    for x in sequences:
        mean = x.mean(dim=1) if mean is None else mean * count / (count + 1) + x.mean(dim=1) / (count + 1)
        if count == 0:
            fluctuation = torch.zeros_like(mean)
        else:
            deviation = x - mean[:, None]
            fluctuation = fluctuation * (count - 1) / count + (deviation * deviation).sum(dim=1) / (count + 1)
        count += 1
    return fluctuation


def synthetic_sequences(num: int, generator: torch.Generator) -> list[torch.Tensor]:
    """Channels with their own scale and a mean that drifts between sequences, as activations do."""
    scale = torch.rand(CHANNELS, generator=generator) + 0.5
    drift = torch.linspace(0.1, 2.0, CHANNELS)
    shifts = torch.randn(num, CHANNELS, 1, generator=generator) * drift[None, :, None]
    return [torch.randn(CHANNELS, TOKENS, generator=generator) * scale[:, None] + shifts[k] for k in range(num)]


def main() -> None:
    print("| sequences | running / (T·Var), min–max | lowest-quarter channels selected differently (20 seeds) |")
    print("|---|---|---|")
    for num in (8, 32, 128, 1024):
        low, high, flips = float("inf"), 0.0, []
        for seed in range(SEEDS):
            sequences = synthetic_sequences(num, torch.Generator().manual_seed(seed))
            exact = torch.cat(sequences, dim=1).var(dim=1)
            running = released_running_fluctuation(sequences)
            ratio = running / (TOKENS * exact)
            low, high = min(low, float(ratio.min())), max(high, float(ratio.max()))
            k = CHANNELS // 4
            flips.append(len(set(exact.argsort()[:k].tolist()) - set(running.argsort()[:k].tolist())))
        print(f"| {num} | {low:.2f}–{high:.2f} | {sum(flips) / len(flips):.2f} of {CHANNELS // 4} |")


if __name__ == "__main__":
    main()
