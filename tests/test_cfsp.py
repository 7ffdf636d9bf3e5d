"""CFSP on tiny models: block importance, budget allocation, fine scores, budgets and checkpoints."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from tiny_models import FAMILIES, calibration_ids, tiny_model

from optimum_flap import BudgetError, FlapConfig, FlapPruner
from optimum_flap.architectures import get_architecture
from optimum_flap.checkpoint import load_pruned_model, save_pruned_model
from optimum_flap.engine.statistics import ChannelStatistics
from optimum_flap.methods.cfsp import (
    BLOCK_IMPORTANCE_KEY,
    apportion,
    channel_scores,
    keep_ratios,
    released_three_w_one_wa,
    token_distances,
)
from optimum_flap.recovery import measure_importance


def cfsp(model, **kwargs):
    kwargs.setdefault("dataset", calibration_ids())
    kwargs.setdefault("batch_size", 4)
    kwargs.setdefault("pruning_ratio", 0.3)
    pruner = FlapPruner(FlapConfig(method="cfsp", **kwargs))
    pruner.prune_model(model)
    return pruner


# ---------------------------------------------------------------- coarse importance and allocation


def test_token_distances_known_values():
    x = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [0.0, 0.0]])
    y = torch.tensor([[2.0, 0.0], [0.0, 3.0], [-1.0, 0.0], [1.0, 1.0]])
    torch.testing.assert_close(token_distances(x, y, "angular"), torch.tensor([0.0, 0.5, 1.0, 0.5]))
    torch.testing.assert_close(token_distances(x[:3], y[:3], "cosine"), torch.tensor([0.0, 1.0, 2.0]))
    torch.testing.assert_close(token_distances(x, y, "mse"), torch.tensor([0.5, 5.0, 2.0, 1.0]))


@pytest.mark.parametrize("ratio", [0.1, 0.3, 0.6, 0.9])
@pytest.mark.parametrize("temperature", [0.01, 0.0763, 1.0])
def test_keep_ratios_mean_bounds_and_monotonicity(ratio, temperature):
    importance = torch.tensor([0.31, 0.05, 0.12, 0.50, 0.12, 0.02, 0.27, 0.09])
    r = keep_ratios(importance, ratio, "sigmoid", temperature)
    assert float(r.mean()) == pytest.approx(1 - ratio, abs=1e-12)
    assert float(r.min()) > 0
    # the safety rescale keeps the most important block below 100%: at most (1 - p) + p / 1.05
    assert float(r.max()) < 1 and float(r.max()) <= (1 - ratio) + ratio / 1.05 + 1e-12
    order = torch.argsort(importance, stable=True)
    assert torch.all(r[order][1:] >= r[order][:-1])  # more important keeps more (ties equal)
    assert float(r[1]) < float(r[2]) == float(r[4]) < float(r[0]) < float(r[3])


def test_uniform_allocation_and_temperature_limits():
    importance = [0.3, 0.1, 0.2]
    assert keep_ratios(importance, 0.25, "uniform").tolist() == [0.75, 0.75, 0.75]
    flat = keep_ratios(importance, 0.25, "sigmoid", temperature=1e6)
    torch.testing.assert_close(flat, torch.full((3,), 0.75, dtype=torch.float64))
    # a tiny temperature saturates the sigmoid: the safety rescale is what bounds the budget
    sharp = keep_ratios(importance, 0.25, "sigmoid", temperature=1e-6)
    assert float(sharp.max()) == pytest.approx(0.75 + 0.25 / 1.05)


def test_summing_importances_would_change_the_budget_but_the_mean_does_not():
    importance = torch.tensor([0.15, 0.22, 0.18])
    # the released code sums over tokens: doubling the data doubles I and changes the allocation
    assert not torch.allclose(keep_ratios(importance, 0.3), keep_ratios(2 * importance, 0.3))
    ids = calibration_ids(8, 16)
    small = cfsp(tiny_model("llama-gqa"), dataset=ids, num_samples=8)
    large = cfsp(tiny_model("llama-gqa"), dataset=ids + ids, num_samples=16)  # same tokens, twice as many samples
    a = small.model.config.block_importance
    b = large.model.config.block_importance
    assert a["values"] == pytest.approx(b["values"], rel=1e-6)
    assert a["keep_ratios"] == pytest.approx(b["keep_ratios"], abs=1e-6)
    assert [la.intermediate_size for la in small.layout.layers] == [la.intermediate_size for la in large.layout.layers]


def test_apportion_keeps_total_and_alignment():
    targets = [40.4, 50.7, 52.9]
    kept = apportion(targets, [96, 96, 96])
    assert sum(kept) == round(sum(targets)) and kept == [40, 51, 53]
    aligned = apportion(targets, [96, 96, 96], unit=16)
    assert all(k % 16 == 0 and 16 <= k < 96 for k in aligned)
    assert abs(sum(aligned) - sum(targets)) <= 8
    assert apportion([0.2, 95.9], [96, 96], minimum=4) == [4, 92]  # the minimum is paid for by the others
    assert apportion([10.2, 95.9], [96, 96]) == [11, 95]  # never 100% while pruning
    assert apportion([10.2, 95.9], [96, 96], allow_full=True) == [10, 96]


def test_recorded_importance_is_the_dense_block_angular_distance():
    dense = tiny_model("qwen2")
    ids = torch.tensor(calibration_ids())
    expected = measure_importance(dense, get_architecture(dense), ids)
    pruner = cfsp(copy.deepcopy(dense))
    record = pruner.model.config.block_importance
    assert record["metric"] == "angular" and record["values"] == pytest.approx(expected, rel=1e-5)
    assert all(0 < v < 1 for v in record["values"])
    ratios = keep_ratios(record["values"], _ffn_ratio(dense, 0.3), "sigmoid", record["temperature"])
    assert record["keep_ratios"] == pytest.approx(ratios.tolist(), abs=1e-6)


def _ffn_ratio(model, ratio):
    """Fraction of FFN channels to remove so that `ratio` of the decoder linear parameters go (no biases here)."""
    c = model.config
    hd = c.head_dim
    attn = c.hidden_size * hd * (2 * c.num_attention_heads + 2 * c.num_key_value_heads)
    ffn = 3 * c.hidden_size * c.intermediate_size
    if c.model_type == "qwen2":  # q/k/v biases
        attn += hd * (c.num_attention_heads + 2 * c.num_key_value_heads)
    return ratio * (attn + ffn) / ffn


# ---------------------------------------------------------------- fine scores


def test_released_default_score_reduces_to_activation_norm():
    torch.manual_seed(0)
    down, up, gate = torch.randn(64, 96), torch.randn(96, 64), torch.randn(96, 64)
    stats = ChannelStatistics()
    stats.update(torch.randn(50, 96) * torch.linspace(0.1, 3.0, 96))
    a = channel_scores("activation", stats, down)
    torch.testing.assert_close(released_three_w_one_wa(down, up, gate, a), 3 * a / 64)
    torch.testing.assert_close(released_three_w_one_wa(down, up, gate, a, b=2.0, c=1.0), 3 * a / 64)
    torch.testing.assert_close(a, stats.mean_square.sqrt())
    # the weight-activation form depends on the weights: a channel with no weights ranks last
    down[:, 95] = 0
    up[95] = 0
    gate[95] = 0
    wa = channel_scores("weight-activation", stats, down, up, gate)
    assert int(wa.argmin()) == 95 and int(a.argmin()) != 95
    assert float(wa.sum()) == pytest.approx(3 * 64, rel=1e-5)  # each term is a share summed over 64 rows


@pytest.mark.parametrize("family", list(FAMILIES))
def test_pruning_keeps_top_activation_channels_and_meets_budget(family):
    dense = tiny_model(family)
    arch = get_architecture(dense)
    pruned = copy.deepcopy(dense)
    stats = [ChannelStatistics() for _ in dense.model.layers]
    handles = [layer.mlp.down_proj.register_forward_pre_hook(lambda _m, args, s=s: s.update(args[0]))
               for layer, s in zip(dense.model.layers, stats)]
    with torch.no_grad():
        dense(torch.tensor(calibration_ids()), use_cache=False)
    for h in handles:
        h.remove()
    pruner = cfsp(pruned)
    one_channel = 3 * 64 / pruner.report.decoder_parameters_before
    assert pruner.report.achieved_ratio == pytest.approx(0.3, abs=1.5 * one_channel)
    for layer, dense_layer, s in zip(pruned.model.layers, dense.model.layers, stats):
        n = layer.mlp.gate_proj.out_features
        assert 1 <= n < 96
        assert layer.self_attn.q_proj.out_features == dense_layer.self_attn.q_proj.out_features  # FFN only
        kept = torch.sort(s.mean_square, descending=True, stable=True).indices[:n].sort().values
        torch.testing.assert_close(layer.mlp.gate_proj.weight, dense_layer.mlp.gate_proj.weight[kept])
        torch.testing.assert_close(layer.mlp.down_proj.weight, dense_layer.mlp.down_proj.weight[:, kept])
        assert layer.mlp.down_proj.bias is None  # no bias compensation by default
    widths = [la.intermediate_size for la in pruner.layout.layers]
    ranked = sorted(range(3), key=lambda i: pruned.config.block_importance["values"][i])
    assert [widths[i] for i in ranked] == sorted(widths)
    assert arch.model_type in family or family.startswith(arch.model_type)


def test_attention_groups_round_to_and_compensation():
    pruner = cfsp(tiny_model("llama-mha"), cfsp_prune_attention=True, pruning_ratio=0.4, round_to=8,
                  bias_compensation=True)
    layers = pruner.layout.layers
    assert any(la.num_key_value_heads < 8 for la in layers)
    assert all(la.intermediate_size % 8 == 0 for la in layers)
    assert pruner.report.achieved_ratio == pytest.approx(0.4, abs=0.02)
    assert all(layer.mlp.down_proj.bias is not None and layer.self_attn.o_proj.bias is not None
               for layer in pruner.model.model.layers)


def test_flap_honours_round_to():
    pruner = FlapPruner(FlapConfig(method="flap", pruning_ratio=0.3, dataset=calibration_ids(), round_to=16))
    pruner.prune_model(tiny_model("llama-gqa"))
    assert all(la.intermediate_size % 16 == 0 for la in pruner.layout.layers)
    assert pruner.report.achieved_ratio == pytest.approx(0.3, abs=0.05)


def test_ffn_only_budget_error_and_config_validation(tmp_path):
    with pytest.raises(BudgetError, match="cfsp_prune_attention"):
        cfsp(tiny_model("llama-gqa"), pruning_ratio=0.7)
    # refused from the shapes, before any calibration data is read (this file does not exist)
    config = FlapConfig(method="cfsp", pruning_ratio=0.7, dataset=calibration_ids())
    config.dataset = str(tmp_path / "missing.txt")
    with pytest.raises(BudgetError, match="cfsp_prune_attention"):
        FlapPruner(config).prune_model(tiny_model("llama-gqa"))
    for field, value in [("cfsp_importance", "l2"), ("cfsp_allocation", "linear"), ("cfsp_score", "wanda"),
                         ("cfsp_temperature", 0), ("cfsp_temperature", math.inf), ("round_to", 0),
                         ("cfsp_prune_attention", 1)]:
        with pytest.raises(ValueError, match=f"{field}="):
            FlapConfig(method="cfsp", **{field: value})
    config = FlapConfig(method="cfsp", round_to=128, cfsp_score="weight-activation")
    assert FlapConfig.from_dict(config.to_dict()) == config
    assert config.use_bias_compensation is False


def test_saved_cfsp_checkpoint_reloads_with_importance(tmp_path):
    pruner = cfsp(tiny_model("mistral"))
    save_pruned_model(pruner.model, tmp_path / "ckpt")
    reloaded = load_pruned_model(tmp_path / "ckpt")
    ids = torch.tensor(calibration_ids(2, 16))
    with torch.no_grad():
        torch.testing.assert_close(reloaded(ids).logits, pruner.model(ids).logits)
    assert getattr(reloaded.config, BLOCK_IMPORTANCE_KEY) == pruner.model.config.block_importance
    assert reloaded.config.pruning_config["method"] == "cfsp"
