"""CFSP: coarse-to-fine structured pruning in one forward pass over the calibration data.

Layer by layer on the dense model (the block outputs propagated to the next block are dense, as in
the released code): each block's input and output hidden states give its coarse importance, and the
hooks on `down_proj` (and `o_proj` when heads are pruned) give the fine channel scores. After the last
block the per-block budgets are allocated, every block keeps its best channels, and the model is cut.

Budget semantics (as every method of this package): `pruning_ratio` is the fraction of the decoder's
linear parameters removed. With FFN-only pruning (CFSP's default) the FFN channels removed are therefore
`pruning_ratio x decoder / FFN` of all FFN channels (e.g. 0.2 -> 26.7% on SmolLM2-135M), spread over
the blocks by the sigmoid allocation with mean keep ratio `1 - that`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from tqdm.auto import tqdm

from ...accounting import layer_cost
from ...architectures import DecoderArchitecture, attention_geometry, get_architecture
from ...configuration import FlapConfig
from ...engine.layerwise import LayerwiseRunner
from ...engine.statistics import ChannelStatistics
from ...plan import LayerCost, LayerPlan
from ...surgery import prune_layer
from ..flap.selection import BudgetError, keep_top
from ..widths import apportion
from .allocation import keep_ratios
from .importance import BlockImportance
from .scores import channel_scores, head_group_scores

#: `model.config` key holding the coarse importances (and budgets) of a CFSP run; saved in config.json
BLOCK_IMPORTANCE_KEY = "block_importance"


@dataclass
class BlockCalibration:
    """What calibrating one block leaves: its coarse importance and its input statistics."""

    importance: float
    mlp: ChannelStatistics
    attention: ChannelStatistics | None


def needs_calibration(config: FlapConfig) -> bool:
    return True


def calibrate(
    model: nn.Module, arch: DecoderArchitecture, config: FlapConfig, runner: LayerwiseRunner
) -> list[BlockCalibration]:
    """One pass, block by block: block importance plus `down_proj` (and `o_proj`) input statistics."""
    if runner is None:
        raise ValueError("CFSP needs calibration data.")
    if not runner.batches:
        runner.capture_first_block_inputs()
    want_attention = config.cfsp_prune_attention or config.use_bias_compensation
    results = []
    for idx in tqdm(range(runner.num_layers), desc="cfsp: calibrating", unit="layer"):
        mlp_stats = ChannelStatistics()
        attn_stats = ChannelStatistics() if want_attention else None
        observers = {arch.mlp_output_path(): mlp_stats.update}
        if attn_stats is not None:
            observers[arch.attention_output_path()] = attn_stats.update
        inputs = [batch.hidden_states for batch in runner.batches]
        runner.run_block(idx, observers, propagate=True)
        importance = BlockImportance(config.cfsp_importance)
        for x, batch in zip(inputs, runner.batches):
            importance.update(x, batch.hidden_states)
        results.append(BlockCalibration(importance.value, mlp_stats, attn_stats))
    return results


def budget(model: nn.Module, arch: DecoderArchitecture, config: FlapConfig) -> tuple[list[LayerCost], list[int], float]:
    """Per-layer costs, MLP widths and the share of prunable units to remove; refuses impossible recipes.

    Depends on shapes only, so the pruner calls it (through `check_config`) before calibrating.
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
    if config.min_head_groups > kv_heads:
        raise BudgetError(f"min_head_groups={config.min_head_groups} exceeds the {kv_heads} head groups per layer.")
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


def check_config(config: FlapConfig, model: nn.Module) -> None:
    budget(model, get_architecture(model), config)


def allocate(
    importance: list[float],
    costs: list[LayerCost],
    widths: list[int],
    groups: int,
    unit_ratio: float,
    config: FlapConfig,
) -> tuple[torch.Tensor, list[int], list[int]]:
    """Per-block keep ratios, head groups kept and channels kept, removing `unit_ratio` of the prunable units."""
    ratios = keep_ratios(importance, unit_ratio, config.cfsp_allocation, config.cfsp_temperature)
    kept_groups, targets = [], []
    for r, cost, width in zip(ratios.tolist(), costs, widths):
        if config.cfsp_prune_attention:
            drop = min(max(round((1.0 - r) * groups), 0), groups - config.min_head_groups)
            channel_drop = ((1.0 - r) * cost.total - drop * cost.group_cost) / cost.channel_cost
            kept_groups.append(groups - drop)
            targets.append(min(max(width - channel_drop, 0.0), float(width)))
        else:
            kept_groups.append(groups)
            targets.append(r * width)
    kept_channels = apportion(targets, widths, unit=config.round_to or 1, minimum=config.min_channels,
                              allow_full=config.pruning_ratio == 0)
    return ratios, kept_groups, kept_channels


def prune_structured(
    model: nn.Module,
    arch: DecoderArchitecture,
    config: FlapConfig,
    runner: LayerwiseRunner | None,
    physical: bool = True,
) -> list[LayerPlan]:
    """Calibrate once, allocate the per-block budgets, keep each block's best channels, cut the model."""
    calibration = calibrate(model, arch, config, runner)
    costs, widths, unit_ratio = budget(model, arch, config)
    heads, kv_heads, head_dim = attention_geometry(model.config)
    group_size = heads // kv_heads
    compensate = config.use_bias_compensation
    layers = arch.decoder_layers(model)
    importance = [c.importance for c in calibration]
    ratios, kept_groups, kept_channels = allocate(importance, costs, widths, kv_heads, unit_ratio, config)
    plans = []
    for layer, calib, n_groups, n_channels in zip(layers, calibration, kept_groups, kept_channels):
        mlp = arch.mlp(layer)
        scores = channel_scores(
            config.cfsp_score, calib.mlp, getattr(mlp, arch.mlp_output).weight,
            getattr(mlp, arch.up).weight, getattr(mlp, arch.gate).weight,
        )
        if n_groups < kv_heads:
            groups = keep_top(head_group_scores(calib.attention, group_size * head_dim), n_groups)
        else:
            groups = torch.arange(kv_heads)
        plan = LayerPlan(groups, keep_top(scores, n_channels))
        prune_layer(
            layer, arch, plan, group_size, head_dim,
            attention_mean=calib.attention.mean if compensate and config.cfsp_prune_attention else None,
            mlp_mean=calib.mlp.mean if compensate else None,
            physical=physical,
        )
        plans.append(plan)
    setattr(model.config, BLOCK_IMPORTANCE_KEY, {
        "metric": config.cfsp_importance,
        "values": [round(v, 8) for v in importance],
        "keep_ratios": [round(float(r), 6) for r in ratios],
        "allocation": config.cfsp_allocation,
        "temperature": config.cfsp_temperature,
    })
    return plans
