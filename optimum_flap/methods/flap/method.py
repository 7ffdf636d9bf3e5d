"""FLAP and its baselines (wanda-sp, magnitude-sp): score every layer on the dense model, then prune once.

One shot: every layer's statistics come from the unpruned model (the block outputs propagated to the
next layer are dense), so the plan is global and nothing is pruned until all layers are scored.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from tqdm.auto import tqdm

from ...accounting import layer_cost
from ...architectures import DecoderArchitecture, attention_geometry
from ...configuration import FlapConfig
from ...engine.layerwise import LayerwiseRunner
from ...engine.statistics import ChannelStatistics
from ...plan import LayerPlan
from ...surgery import prune_layer
from ..widths import round_kept_channels
from .scores import attention_channel_scores, channel_scores
from .selection import BudgetError, LayerScores, select


@dataclass
class LayerCalibration:
    """What one layer's calibration leaves behind: channel scores and the input means for compensation."""

    scores: LayerScores
    attention_mean: torch.Tensor | None
    mlp_mean: torch.Tensor | None


def score_layers(
    model: nn.Module, arch: DecoderArchitecture, config: FlapConfig, runner: LayerwiseRunner | None
) -> list[LayerCalibration]:
    """Score every layer. `runner` may be None only for magnitude-sp without compensation."""
    results = []
    layers = arch.decoder_layers(model)
    for idx in tqdm(range(len(layers)), desc=f"{config.method}: scoring", unit="layer"):
        attention_out = arch.attention_output_path()
        mlp_out = arch.mlp_output_path()
        stats = {attention_out: ChannelStatistics(), mlp_out: ChannelStatistics()} if runner else {}
        if runner is not None:
            runner.run_block(idx, {path: s.update for path, s in stats.items()})
        layer = layers[idx]
        o_proj, down_proj = layer.get_submodule(attention_out), layer.get_submodule(mlp_out)
        scores = LayerScores(
            attention=attention_channel_scores(config.method, config.metric, o_proj.weight, stats.get(attention_out)),
            mlp=channel_scores(config.method, config.metric, down_proj.weight, stats.get(mlp_out)),
        )
        means = {path: s.mean for path, s in stats.items()}
        results.append(LayerCalibration(scores, means.get(attention_out), means.get(mlp_out)))
    return results


def manual_head_groups(config: FlapConfig, model_config) -> int | None:
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


def plan_and_prune(
    model: nn.Module,
    arch: DecoderArchitecture,
    config: FlapConfig,
    calibration: list[LayerCalibration],
    physical: bool = True,
) -> list[LayerPlan]:
    """Select what every layer keeps for `config.structure` and apply it to `model` in place."""
    heads, kv_heads, head_dim = attention_geometry(model.config)
    group_size = heads // kv_heads
    compensate = config.use_bias_compensation
    layers = arch.decoder_layers(model)
    costs = [layer_cost(layer, arch, group_size, head_dim, compensate) for layer in layers]
    remove_groups = manual_head_groups(config, model.config)
    plans = select(
        config.structure,
        [c.scores for c in calibration],
        costs,
        group_width=group_size * head_dim,
        ratio=config.pruning_ratio,
        min_groups=config.min_head_groups,
        min_channels=config.min_channels,
        remove_groups=remove_groups,
    )
    if config.round_to:
        plans = round_kept_channels(plans, [c.scores.mlp for c in calibration], config.round_to, config.min_channels)
    for layer, plan, calib in zip(layers, plans, calibration):
        prune_layer(
            layer, arch, plan, group_size, head_dim,
            attention_mean=calib.attention_mean if compensate else None,
            mlp_mean=calib.mlp_mean if compensate else None,
            physical=physical,
        )
    return plans


def needs_calibration(config: FlapConfig) -> bool:
    """magnitude-sp scores weights only; it needs data only for bias compensation."""
    return config.method != "magnitude-sp" or config.use_bias_compensation


def check_config(config: FlapConfig, model: nn.Module) -> None:
    """What can be refused from the model's shape alone, so a bad recipe fails before calibration."""
    manual_head_groups(config, model.config)


def prune_structured(
    model: nn.Module,
    arch: DecoderArchitecture,
    config: FlapConfig,
    runner: LayerwiseRunner | None,
    physical: bool = True,
) -> list[LayerPlan]:
    """Score every layer on the dense model, then select and remove units in one shot."""
    calibration = score_layers(model, arch, config, runner)
    return plan_and_prune(model, arch, config, calibration, physical=physical)
