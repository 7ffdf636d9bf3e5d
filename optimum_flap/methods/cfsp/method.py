"""CFSP: coarse-to-fine structured pruning in one forward pass over the calibration data.

Layer by layer on the dense model (the pipeline propagates dense block outputs, as in the released
code): each block's input and output hidden states give its coarse importance, and the observers on
`down_proj` (and `o_proj` when heads are pruned) give the fine channel scores. After the last block the
per-block budgets are allocated and every block keeps its best channels.

Budget semantics (as every method of this package): `pruning_ratio` is the fraction of the decoder's
linear parameters removed. With FFN-only pruning (CFSP's default) the FFN channels removed are therefore
`pruning_ratio x decoder / FFN` of all FFN channels (e.g. 0.2 -> 26.7% on SmolLM2-135M), spread over
the blocks by the sigmoid allocation with mean keep ratio `1 - that`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ...accounting import layer_cost
from ...architectures import DecoderArchitecture, attention_geometry
from ...configuration import FlapConfig
from ...engine.statistics import ChannelStatistics
from ...plan import LayerCost, PruningPlan, StructuredLayerPlan
from ..base import PruningMethod
from ..finite import check_finite_block
from ..flap.selection import BudgetError, keep_top
from ..limits import check_round_to, reachable_ratio, warn_if_unreachable
from ..widths import apportion
from .allocation import keep_ratios
from .importance import BlockImportance
from .scores import channel_scores, head_group_scores

#: `model.config` key holding the coarse importances (and budgets) of a CFSP run; saved in config.json
BLOCK_IMPORTANCE_KEY = "block_importance"


@dataclass
class BlockCalibration:
    """What calibrating one block leaves: its coarse importance, fine channel scores and input statistics.

    The channel scores are computed while the block is on the execution device, beside its statistics.
    """

    importance: float
    channel_scores: torch.Tensor
    mlp: ChannelStatistics
    attention: ChannelStatistics | None


def budget(model: nn.Module, arch: DecoderArchitecture, config: FlapConfig) -> tuple[list[LayerCost], list[int], float]:
    """Per-layer costs, MLP widths and the share of prunable units to remove; refuses impossible recipes.

    Depends on shapes only, so `CfspMethod.check` calls it before calibrating.
    """
    heads, kv_heads, head_dim = attention_geometry(model.config)
    compensate = config.use_bias_compensation
    layers = arch.decoder_layers(model)
    costs = [layer_cost(layer, arch, heads // kv_heads, head_dim, compensate) for layer in layers]
    if compensate and not config.cfsp_prune_attention:  # only down_proj gains a bias
        for layer, cost in zip(layers, costs):
            down = arch.mlp(layer).get_submodule(arch.mlp_output)
            cost.added_bias = down.out_features if down.bias is None else 0
    widths = [arch.mlp(layer).get_submodule(arch.mlp_output).in_features for layer in layers]
    if config.min_channels > min(widths):
        raise BudgetError(f"min_channels={config.min_channels} exceeds the {min(widths)} MLP channels per layer.")
    groups = min(arch.head_groups(layer) for layer in layers)  # fewer than kv_heads in a re-pruned model
    if config.min_head_groups > groups:
        raise BudgetError(f"min_head_groups={config.min_head_groups} exceeds the {groups} head groups per layer.")
    total = sum(c.total for c in costs)
    removed = config.pruning_ratio * total + sum(c.added_bias for c in costs)
    if config.cfsp_prune_attention:
        prunable = total
    else:
        prunable = sum(w * c.channel_cost for w, c in zip(widths, costs))
    if removed >= prunable:
        raise BudgetError(
            f"pruning_ratio={config.pruning_ratio} removes {removed:,.0f} decoder parameters but CFSP prunes "
            f"only FFN channels here ({prunable:,} parameters); lower the ratio or set cfsp_prune_attention=True."
        )
    return costs, widths, removed / prunable


def allocate(
    importance: list[float],
    costs: list[LayerCost],
    widths: list[int],
    groups: list[int],
    unit_ratio: float,
    config: FlapConfig,
) -> tuple[torch.Tensor, list[int], list[int]]:
    """Per-block keep ratios, head groups kept and channels kept, removing `unit_ratio` of the prunable units.

    `groups` is each block's current number of head groups.
    """
    ratios = keep_ratios(importance, unit_ratio, config.cfsp_allocation, config.cfsp_temperature)
    kept_groups, targets = [], []
    for r, cost, width, n_groups in zip(ratios.tolist(), costs, widths, groups):
        if config.cfsp_prune_attention:
            drop = min(max(round((1.0 - r) * n_groups), 0), n_groups - config.min_head_groups)
            channel_drop = ((1.0 - r) * cost.total - drop * cost.group_cost) / cost.channel_cost
            kept_groups.append(n_groups - drop)
            targets.append(min(max(width - channel_drop, 0.0), float(width)))
        else:
            kept_groups.append(n_groups)
            targets.append(r * width)
    kept_channels = apportion(targets, widths, unit=config.round_to or 1, minimum=config.min_channels,
                              allow_full=config.pruning_ratio == 0)
    return ratios, kept_groups, kept_channels


class CfspMethod(PruningMethod):
    """CFSP: block importance from each block's hidden states, fine FFN (and head-group) channel scores."""

    name = "cfsp"
    supports_distributed = True

    def __init__(self, config: Any, architecture: Any) -> None:
        super().__init__(config, architecture)
        self.calibration: list[BlockCalibration] = []
        self._mlp: ChannelStatistics | None = None
        self._attention: ChannelStatistics | None = None
        self._importance: BlockImportance | None = None

    def check(self, model: nn.Module) -> None:
        """Refuse an impossible budget or `round_to`; warn when the minimums keep `pruning_ratio` out of reach."""
        config, arch = self.config, self.architecture
        costs, widths, _ = budget(model, arch, config)
        check_round_to(widths, config.round_to, config.min_channels)
        layers = arch.decoder_layers(model)
        removable = [max(arch.head_groups(layer) - config.min_head_groups, 0) if config.cfsp_prune_attention else 0
                     for layer in layers]
        reachable = reachable_ratio(costs, removable, widths, config.min_channels, config.round_to)
        warn_if_unreachable(config.pruning_ratio, reachable, config)

    def observers(self, block: Any) -> dict[str, Any]:
        config, arch = self.config, self.architecture
        self._importance = BlockImportance(config.cfsp_importance)
        self._mlp = ChannelStatistics()
        observers = {arch.mlp_output_path(): self._mlp.update}
        self._attention = None
        if config.cfsp_prune_attention or config.use_bias_compensation:
            self._attention = ChannelStatistics()
            observers[arch.attention_output_path()] = self._attention.update
        return observers

    def on_block_output(self, block: Any, inputs: torch.Tensor, outputs: torch.Tensor) -> None:
        self._importance.update(inputs, outputs)

    def all_reduce(self) -> None:
        self._importance.all_reduce()
        for stats in (self._mlp, self._attention):
            if stats is not None:
                stats.all_reduce()

    def block_done(self, block: Any) -> None:
        arch = self.architecture
        mlp = arch.mlp(block.module)
        scores = channel_scores(
            self.config.cfsp_score, self._mlp, getattr(mlp, arch.mlp_output).weight,
            getattr(mlp, arch.up).weight, getattr(mlp, arch.gate).weight,
        )
        statistics = {arch.mlp_output_path(): self._mlp, arch.attention_output_path(): self._attention}
        check_finite_block(block, arch.layers_path, statistics, {arch.mlp_output_path(): scores})
        self.calibration.append(BlockCalibration(self._importance.value, scores, self._mlp, self._attention))

    def finish(self, model: nn.Module) -> PruningPlan:
        """Allocate the per-block budgets and keep each block's best channels (and head groups)."""
        config, arch = self.config, self.architecture
        costs, widths, unit_ratio = budget(model, arch, config)
        heads, kv_heads, head_dim = attention_geometry(model.config)
        group_size = heads // kv_heads
        compensate = config.use_bias_compensation
        importance = [c.importance for c in self.calibration]
        groups_now = [arch.head_groups(layer) for layer in arch.decoder_layers(model)]
        ratios, kept_groups, kept_channels = allocate(importance, costs, widths, groups_now, unit_ratio, config)
        plans = []
        for calib, n_now, n_groups, n_channels in zip(self.calibration, groups_now, kept_groups, kept_channels):
            if n_groups < n_now:
                groups = keep_top(head_group_scores(calib.attention, group_size * head_dim), n_groups)
            else:
                groups = torch.arange(n_now)
            plans.append(StructuredLayerPlan(
                groups, keep_top(calib.channel_scores, n_channels),
                attention_input_mean=calib.attention.mean if compensate and config.cfsp_prune_attention else None,
                mlp_input_mean=calib.mlp.mean if compensate else None,
            ))
        record = {
            "metric": config.cfsp_importance,
            "values": [round(v, 8) for v in importance],
            "keep_ratios": [round(float(r), 6) for r in ratios],
            "allocation": config.cfsp_allocation,
            "temperature": config.cfsp_temperature,
        }
        return PruningPlan(kind="structured", layers=plans, config_records={BLOCK_IMPORTANCE_KEY: record})
