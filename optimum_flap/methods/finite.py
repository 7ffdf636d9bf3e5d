"""Refuse non-finite weights, calibration statistics and scores before a method turns them into a plan.

A single NaN or inf spreads through a layer's statistics into its scores; standardized (FLAP §3.2) they
become all zeros, the selection ranks that layer arbitrarily, and the saved model's logits are NaN.
Every structured method therefore checks each block, while it is on the execution device, with
`check_finite_block`: its weights, the statistics its observers collected and the scores derived from them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from ..engine.statistics import ChannelStatistics

#: what to do about a non-finite activation when the weights are finite
_ACTIVATION_REMEDY = (
    "an earlier layer or the embeddings produce inf/NaN, or float16 activations overflowed: load the model in "
    "bfloat16 or float32 (from_pretrained(..., dtype=torch.bfloat16)) and check the calibration data"
)


class NonFiniteError(ValueError):
    """A weight, a calibration statistic or a score is NaN or infinite; pruning would be silently wrong."""


def non_finite_summary(values: torch.Tensor) -> str | None:
    """'3 NaN and 1 inf of 96 values' for a tensor that is not all finite, else None."""
    if values.device.type == "meta" or bool(torch.isfinite(values).all()):
        return None
    nan = int(torch.isnan(values).sum())
    inf = int(torch.isinf(values).sum())
    return f"{nan} NaN and {inf} inf of {values.numel()} values"


def check_finite_block(
    block: Any,
    layers_path: str,
    statistics: Mapping[str, ChannelStatistics | None],
    scores: Mapping[str, torch.Tensor],
) -> None:
    """Raise `NonFiniteError` naming the layer and module when anything a block's plan depends on is not finite.

    `statistics` and `scores` are keyed by module path inside the block (`"mlp.down_proj"`); weights are
    checked first, so a non-finite statistic with finite weights is blamed on the activations.
    """
    prefix = f"{layers_path}.{block.index}"
    for name, param in block.module.named_parameters():
        problem = non_finite_summary(param.detach())
        if problem:
            raise NonFiniteError(
                f"Layer {block.index}: weight {prefix}.{name} ({param.dtype}) holds {problem}; the model is "
                "corrupt before pruning. Reload or restore the checkpoint, or repair that tensor, and prune again."
            )
    dtype = next(block.module.parameters()).dtype
    for path, stats in statistics.items():
        if stats is None:
            continue
        problem = non_finite_summary(stats.mean_square) or non_finite_summary(stats.variance)
        if problem:
            raise NonFiniteError(
                f"Layer {block.index}: the calibration inputs of {prefix}.{path} are not finite ({problem} "
                f"per-channel statistics; model dtype {dtype}) although the layer's weights are: "
                f"{_ACTIVATION_REMEDY}."
            )
    for path, values in scores.items():
        problem = non_finite_summary(values)
        if problem:
            raise NonFiniteError(
                f"Layer {block.index}: the importance scores of {prefix}.{path} hold {problem} (finite weights and "
                f"statistics whose product overflows float32): {_ACTIVATION_REMEDY}."
            )
