"""One sub-block's initial keep-masks from its weights and calibration inputs: magnitude, Wanda or SparseGPT.

Shared by the sparse methods and by LLM-Barber's initialisation. `InputStatistics` collects, per Linear,
what the chosen score needs from its inputs (Wanda: channel norms; SparseGPT: the Hessian; magnitude:
nothing); `initial_masks` turns them into keep-masks (and SparseGPT's updated weights).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
from torch import nn

from ...engine.statistics import ChannelStatistics
from ..sparsity import (
    HessianAccumulator,
    NMPattern,
    input_norm,
    magnitude_scores,
    n_m_mask,
    sparsegpt_prune,
    unstructured_mask,
    wanda_scores,
)

SCORES = ("magnitude", "wanda", "sparsegpt")
#: the comparison group of each score for unstructured sparsity (as the released code)
SCORE_GRANULARITY = {"magnitude": "layer", "wanda": "output1"}


class InputStatistics:
    """Per Linear path: the input statistics `score` needs, fed by `observer(path)` with input batches."""

    def __init__(self, score: str, paths: Iterable[str]) -> None:
        if score not in SCORES:
            raise ValueError(f"Unknown sparsity score {score!r}; allowed: {', '.join(SCORES)}.")
        self.score = score
        factory = {"wanda": ChannelStatistics, "sparsegpt": HessianAccumulator}.get(score)
        self.statistics = {path: factory() for path in paths} if factory else {}

    def observer(self, path: str) -> Callable[[torch.Tensor], None]:
        return self.statistics[path].update

    def observers(self) -> dict[str, Callable[[torch.Tensor], None]]:
        return {path: stats.update for path, stats in self.statistics.items()}


def observe_calls(module: nn.Module, statistics: InputStatistics,
                  calls: Iterable[tuple[torch.Tensor, Mapping[str, Any]]]) -> None:
    """Run `module` on each (input, keywords) call with `statistics`' observers on its Linears (no grad)."""
    if not statistics.statistics:  # magnitude: nothing to observe
        return
    handles = [module.get_submodule(path).register_forward_pre_hook(lambda _m, args, observe=observe: observe(args[0]))
               for path, observe in statistics.observers().items()]
    try:
        with torch.no_grad():
            for x, kwargs in calls:
                module(x, **kwargs)
    finally:
        for handle in handles:
            handle.remove()


def initial_mask(
    score: str, weight: torch.Tensor, statistics: object, ratio: float, pattern: NMPattern | None,
    sparsegpt_mask_selection: str = "row",
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(keep-mask, updated weight or None) of one Linear weight; `statistics` from `InputStatistics`."""
    if score == "sparsegpt":
        return sparsegpt_prune(weight, statistics.hessian, ratio, pattern, mask_selection=sparsegpt_mask_selection)
    scores = magnitude_scores(weight) if score == "magnitude" else wanda_scores(weight, input_norm(statistics))
    if pattern is not None:
        return n_m_mask(scores, pattern.kept, pattern.group), None
    return unstructured_mask(scores, ratio, SCORE_GRANULARITY[score]), None


def initial_masks(
    module: nn.Module, paths: Iterable[str], statistics: InputStatistics, ratio: float, pattern: NMPattern | None,
    sparsegpt_mask_selection: str = "row",
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Keep-masks of the Linears at `paths` inside `module`, and SparseGPT's updated weights (else empty)."""
    masks, weights = {}, {}
    for path in paths:
        weight = module.get_submodule(path).weight
        masks[path], updated = initial_mask(statistics.score, weight, statistics.statistics.get(path), ratio, pattern,
                                            sparsegpt_mask_selection)
        if updated is not None:
            weights[path] = updated
    return masks, weights


def check_n_m_divisible(paths: Iterable[str], layers: Iterable[nn.Module], pattern: NMPattern | None) -> None:
    """Refuse an N:M pattern that some projection's input width cannot hold, before calibrating."""
    if pattern is None:
        return
    for index, layer in enumerate(layers):
        for path in paths:
            width = layer.get_submodule(path).weight.shape[1]
            if width % pattern.group:
                raise ValueError(f"sparsity_type={str(pattern)!r} needs input widths divisible by {pattern.group}; "
                                 f"layer {index} {path} has {width} inputs.")
