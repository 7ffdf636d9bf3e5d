"""FLAP and its baselines (wanda-sp, magnitude-sp): score every layer on the dense model, then decide once.

One shot: every layer's statistics come from the unpruned model (the pipeline propagates dense block
outputs), so the plan is global and nothing is pruned until all layers are scored.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ...accounting import layer_cost
from ...architectures import ATTENTION_OUTPUT, MLP_OUTPUT, attention_geometry
from ...engine.post_norm import has_post_norms, post_norm_gain, residual_observers, residual_weight
from ...engine.statistics import ChannelStatistics
from ...plan import LayerCost, PruningPlan, StructuredLayerPlan
from ..base import PruningMethod
from ..finite import check_finite_block
from ..limits import check_round_to, reachable_ratio, warn_if_unreachable
from ..widths import round_kept_channels
from .scores import attention_channel_scores, channel_scores
from .selection import BudgetError, LayerScores, select


@dataclass
class LayerCalibration:
    """What one layer's calibration leaves behind: channel scores and the input means for compensation."""

    scores: LayerScores
    attention_mean: torch.Tensor | None
    mlp_mean: torch.Tensor | None


def manual_head_groups(config: Any, model_config: Any) -> int | None:
    """`remove_heads` in whole GQA groups (None for the adaptive structures); checked before calibrating."""
    if config.remove_heads is None:
        return None
    heads, kv_heads, _ = attention_geometry(model_config)
    group_size = heads // kv_heads
    if config.remove_heads % group_size:
        raise BudgetError(
            f"remove_heads={config.remove_heads} is not a multiple of the group size {group_size}: with "
            f"grouped-query attention ({heads} query heads, {kv_heads} key/value heads) heads are removed "
            f"{group_size} at a time."
        )
    return config.remove_heads // group_size


def _spread(count: int, capacity: list[int]) -> list[int]:
    """`count` head groups taken from the layers in order, at most `capacity[i]` from layer i."""
    taken = []
    for cap in capacity:
        taken.append(min(cap, count))
        count -= taken[-1]
    return taken


class FlapFamilyMethod(PruningMethod):
    """FLAP's fluctuation metric, or the wanda-sp / magnitude-sp column scores (by `config.method`)."""

    name = "flap"
    supports_distributed = True

    def __init__(self, config: Any, architecture: Any) -> None:
        super().__init__(config, architecture)
        self.name = config.method
        self._stats: dict[str, ChannelStatistics] = {}
        self.calibration: list[LayerCalibration] = []

    def needs_calibration(self) -> bool:
        """magnitude-sp scores weights only; it needs data only for bias compensation."""
        return self.config.method != "magnitude-sp" or self.config.use_bias_compensation

    def check(self, model: nn.Module) -> None:
        """Refuse a bad head count or `round_to`; warn when the minimums keep `pruning_ratio` out of reach."""
        config, arch = self.config, self.architecture
        remove_groups = manual_head_groups(config, model.config)
        layers = arch.decoder_layers(model)
        widths = [layer.get_submodule(arch.mlp_output_path()).in_features for layer in layers]
        check_round_to(widths, config.round_to, config.min_channels)
        removable = [max(arch.head_groups(layer) - config.min_head_groups, 0) for layer in layers]
        if remove_groups is not None:  # the manual structures remove exactly that many groups
            removable = _spread(remove_groups, removable)
        reachable = reachable_ratio(self._costs(model), removable, widths, config.min_channels, config.round_to)
        warn_if_unreachable(config.pruning_ratio, reachable, config)

    def _costs(self, model: nn.Module) -> list[LayerCost]:
        heads, kv_heads, head_dim = attention_geometry(model.config)
        return [layer_cost(layer, self.architecture, heads // kv_heads, head_dim, self.config.use_bias_compensation)
                for layer in self.architecture.decoder_layers(model)]

    def in_residual_units(self) -> bool:
        """Whether scores measure the residual stream through the post-norms (post-norm family, data-based score).

        magnitude-sp reads no activations, so the 1 / rms part of the gain is unknown to it: it keeps its scores.
        """
        config = self.config
        return bool(config.post_norm_gains) and has_post_norms(self.architecture) and config.method != "magnitude-sp"

    def observers(self, block: Any) -> dict[str, Any]:
        arch = self.architecture
        self._stats = {arch.attention_output_path(): ChannelStatistics(), arch.mlp_output_path(): ChannelStatistics()}
        observers = {path: stats.update for path, stats in self._stats.items()}
        if self.in_residual_units():  # statistics weighted by the post-norm's 1 / rms^2 replace the plain ones
            residual, statistics = residual_observers(arch, block.module)
            observers.update(residual)
            self._stats.update(statistics)
        return observers

    def all_reduce(self) -> None:
        for stats in self._stats.values():
            stats.all_reduce()

    def block_done(self, block: Any) -> None:
        """Score the block's channels from its weights and the statistics its observers collected."""
        config, arch = self.config, self.architecture
        attention_out, mlp_out = arch.attention_output_path(), arch.mlp_output_path()
        stats = self._stats  # empty when the pipeline runs no data (magnitude-sp without compensation)
        o_proj, down_proj = block.module.get_submodule(attention_out), block.module.get_submodule(mlp_out)
        if self.in_residual_units():  # diag(g) W: the projection as the residual stream sees it
            o_weight = residual_weight(o_proj.weight, post_norm_gain(arch, block.module, ATTENTION_OUTPUT))
            down_weight = residual_weight(down_proj.weight, post_norm_gain(arch, block.module, MLP_OUTPUT))
        else:
            o_weight, down_weight = o_proj.weight, down_proj.weight
        scores = LayerScores(
            attention=attention_channel_scores(config.method, config.metric, o_weight, stats.get(attention_out)),
            mlp=channel_scores(config.method, config.metric, down_weight, stats.get(mlp_out)),
        )
        check_finite_block(block, arch.layers_path, stats, {attention_out: scores.attention, mlp_out: scores.mlp})
        means = {path: s.mean for path, s in stats.items()}
        self.calibration.append(LayerCalibration(scores, means.get(attention_out), means.get(mlp_out)))
        self._stats = {}

    def finish(self, model: nn.Module) -> PruningPlan:
        """Select what every layer keeps for `config.structure`, with the compensation means when on."""
        config = self.config
        heads, kv_heads, head_dim = attention_geometry(model.config)
        group_size = heads // kv_heads
        compensate = config.use_bias_compensation
        costs = self._costs(model)
        calibration = self.calibration
        kept = select(
            config.structure,
            [c.scores for c in calibration],
            costs,
            group_width=group_size * head_dim,
            ratio=config.pruning_ratio,
            min_groups=config.min_head_groups,
            min_channels=config.min_channels,
            remove_groups=manual_head_groups(config, model.config),
            across_layers=self.in_residual_units(),
        )
        if config.round_to:
            kept = round_kept_channels(kept, [c.scores.mlp for c in calibration], config.round_to, config.min_channels)
        plans = [
            StructuredLayerPlan(
                plan.kept_groups, plan.kept_channels,
                attention_input_mean=calib.attention_mean if compensate else None,
                mlp_input_mean=calib.mlp_mean if compensate else None,
            )
            for plan, calib in zip(kept, calibration)
        ]
        return PruningPlan(kind="structured", layers=plans)
