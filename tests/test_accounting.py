"""One parameter accounting: the pruner's report, the layout and the model card count the same parameters."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from conftest import ckpt_tiny_model
from huggingface_hub import ModelCard
from tiny_models import calibration_ids, tiny_model

from optimum_flap import FlapConfig, FlapPruner
from optimum_flap.accounting import (
    biased_roles,
    decoder_linear_parameters,
    layer_cost,
    nonzero_decoder_parameters,
    shape_parameters,
)
from optimum_flap.architectures import attention_geometry, get_architecture
from optimum_flap.checkpoint import load_pruned_model, plan_checkpoint, pruning_stats, save_pruned_model
from optimum_flap.plan import StructuredLayerPlan
from optimum_flap.surgery import apply_structured_layer_plan


def _prune(model, physical=True, **kwargs):
    pruner = FlapPruner(FlapConfig(dataset=calibration_ids(), batch_size=4, pruning_ratio=0.3, **kwargs))
    pruner.prune_model(model, physical=physical)
    return pruner.report


@pytest.mark.parametrize(
    ("family", "overrides", "recipe"),
    [
        ("qwen2", {}, {}),  # q/k/v biases, compensation adds o/down biases
        ("llama-gqa", {"attention_bias": True}, {}),  # the dense model already has an o_proj bias
        ("llama-gqa", {"attention_bias": True, "mlp_bias": True}, {"bias_compensation": False}),
        ("qwen3", {}, {"method": "cfsp", "cfsp_prune_attention": True}),
    ],
    ids=["qwen2", "llama-attention-bias", "llama-all-bias-no-compensation", "qwen3-cfsp"],
)
def test_report_layout_and_card_agree(tmp_path, family, overrides, recipe):
    model = tiny_model(family, **overrides)
    dense_count = decoder_linear_parameters(model, get_architecture(model))
    report = _prune(model, **recipe)
    stats = pruning_stats(model, plan_checkpoint(model))
    assert report.decoder_parameters_before == dense_count == stats["dense_decoder_linear_parameters"]
    assert report.decoder_parameters_after == stats["pruned_decoder_linear_parameters"]
    assert report.achieved_ratio == stats["achieved_ratio"]
    assert 0.25 < report.achieved_ratio < 0.35

    save_pruned_model(model, tmp_path / "ckpt")
    card = ModelCard.load(tmp_path / "ckpt" / "README.md")
    assert f"| achieved ratio (decoder linear parameters removed) | {report.achieved_ratio:.4f} |" in card.text
    # a checkpoint reloaded (maybe as stock, with the bias flags turned on) still counts the same dense model
    reloaded = load_pruned_model(tmp_path / "ckpt")
    assert pruning_stats(reloaded, plan_checkpoint(reloaded))["achieved_ratio"] == report.achieved_ratio


def test_qwen2_at_0_3_counts_biases():
    """The q/k/v biases are part of the base: the ratio is not the weights-only 0.3000 of a uniform cut."""
    model = tiny_model("qwen2")
    report = _prune(model)
    stats = pruning_stats(model, plan_checkpoint(model))
    assert stats["achieved_ratio"] == report.achieved_ratio == pytest.approx(0.29495159, abs=1e-8)


@pytest.mark.parametrize("family", ["qwen2", "llama-gqa", "qwen3"])
def test_mask_only_run_reports_what_the_physical_run_removes(family):
    dense = tiny_model(family)
    physical = _prune(copy.deepcopy(dense))
    masked_model = copy.deepcopy(dense)
    masked = _prune(masked_model, physical=False)
    assert masked.decoder_parameters_after == physical.decoder_parameters_after
    assert masked.achieved_ratio == physical.achieved_ratio
    assert nonzero_decoder_parameters(masked_model, get_architecture(dense)) == masked.decoder_parameters_after


@pytest.mark.parametrize("family", ["llama-mha", "mistral", "qwen2", "qwen3"])
def test_layer_cost_is_what_removing_one_unit_removes(family):
    model = tiny_model(family, attention_bias=True) if family == "qwen3" else tiny_model(family)
    spec = get_architecture(model)
    heads, kv_heads, head_dim = attention_geometry(model.config)
    layer = model.model.layers[0]
    cost = layer_cost(layer, spec, heads // kv_heads, head_dim, compensate=False)
    before = decoder_linear_parameters(model, spec)
    plan = StructuredLayerPlan(torch.arange(1, kv_heads), torch.arange(1, model.config.intermediate_size))
    apply_structured_layer_plan(layer, spec, plan)
    assert before - decoder_linear_parameters(model, spec) == cost.group_cost + cost.channel_cost


@pytest.mark.parametrize("family", ["llama", "mistral", "qwen2", "qwen3"])
def test_shape_formula_counts_the_modules(family):
    model = ckpt_tiny_model(family, attention_bias=family in ("llama", "qwen3"))
    spec = get_architecture(model)
    heads, kv_heads, head_dim = attention_geometry(model.config)
    per_layer = shape_parameters(model.config.hidden_size, head_dim, heads, kv_heads, model.config.intermediate_size,
                                 biased_roles(model, spec))
    assert per_layer * model.config.num_hidden_layers == decoder_linear_parameters(model, spec)


def test_layout_records_the_compensation_biases(tmp_path):
    model = tiny_model("qwen2")
    _prune(model)
    assert model.config.pruning_layout["compensation_biases"] == ["attention_output", "mlp_output"]
    save_pruned_model(model, tmp_path / "ckpt")
    saved = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    assert saved["pruning_layout"]["compensation_biases"] == ["attention_output", "mlp_output"]
