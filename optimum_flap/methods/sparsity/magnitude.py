"""Magnitude pruning's score: |W| (no calibration data); usually paired with the "layer" comparison group."""

from __future__ import annotations

import torch


def magnitude_scores(weight: torch.Tensor) -> torch.Tensor:
    """|W| in float32."""
    return weight.detach().float().abs()
