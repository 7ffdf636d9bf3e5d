"""Scores in residual units for families with a norm after each sub-block (Gemma 2/3, OLMo-2).

- pre-norm families keep exactly the units they kept before (saved with main's code, tests/norm_models.py);
- the residual-unit WIFV equals its definition on captured activations (the weighted statistics are
  tested in test_weighted_statistics.py);
- on tiny Gemma 2 / Gemma 3 / OLMo-2 models whose post-norm gains differ 10x by layer, a layer whose norm
  scales its MLP output down loses more channels than today, and the pruned model is closer to the dense one.
"""

from __future__ import annotations

import copy
import json

import pytest
import torch
from norm_models import (
    EXPECTATIONS,
    MLP_GAINS,
    POSTNORM_FAMILIES,
    PRENORM_FAMILIES,
    RECIPES,
    UNSUPPORTED,
    kept_units,
    kl_to_dense,
    postnorm_model,
)
from tiny_models import calibration_ids

from optimum_flap import FlapConfig, FlapPruner
from optimum_flap.architectures import ARCHITECTURES, get_architecture
from optimum_flap.engine.post_norm import has_post_norms, post_norm_gain, residual_weight
from optimum_flap.methods.flap.method import FlapFamilyMethod
from optimum_flap.methods.flap.scores import channel_scores

HELD_OUT = torch.tensor(calibration_ids(num_samples=8, seq_len=32, seed=7))


def prune(model, **options):
    config = FlapConfig(pruning_ratio=0.3, dataset=calibration_ids(num_samples=32, seq_len=32), batch_size=8,
                        **options)
    FlapPruner(config).prune_model(model)
    return model


@pytest.mark.parametrize("family", PRENORM_FAMILIES)
def test_prenorm_families_keep_the_units_main_kept(family):
    expected = json.loads(EXPECTATIONS.read_text())
    recipes = [r for r in RECIPES if f"{family}/{r}" not in UNSUPPORTED]
    for recipe in recipes:
        assert kept_units(family, recipe) == expected[f"{family}/{recipe}"], recipe


def test_the_post_norm_families_are_gemma_and_olmo2():
    assert sorted(t for t, spec in ARCHITECTURES.items() if has_post_norms(spec)) == ["gemma2", "gemma3_text", "olmo2"]


def test_residual_wifv_is_the_squared_change_after_the_post_norm():
    """score_j = sum_t ||g * W[:, j] (x_tj - m_j)||^2 / rms(y_t)^2 / (N - 1), on the inputs a forward gives."""
    model = postnorm_model("gemma3")
    arch = get_architecture(model)
    layer = model.model.layers[1]
    captured = {}
    handles = [layer.mlp.down_proj.register_forward_pre_hook(lambda m, a: captured.__setitem__("x", a[0])),
               layer.post_feedforward_layernorm.register_forward_pre_hook(lambda m, a: captured.__setitem__("y", a[0]))]
    method = FlapFamilyMethod(FlapConfig(pruning_ratio=0.3, structure="AL-AM"), arch)
    block = type("Block", (), {"module": layer})()
    observers = method.observers(block)
    ids = torch.tensor(calibration_ids(num_samples=4, seq_len=16))
    handles += [layer.get_submodule(path).register_forward_pre_hook(lambda m, a, f=f: f(a[0]))
                for path, f in observers.items()]
    with torch.no_grad():
        model(input_ids=ids)
    for handle in handles:
        handle.remove()
    x, y = captured["x"].reshape(-1, 96).double(), captured["y"].reshape(-1, 64).double()
    w = 1.0 / (y.pow(2).mean(-1, keepdim=True) + layer.post_feedforward_layernorm.eps)
    mean = (w * x).sum(0) / w.sum()
    gain = (1.0 + layer.post_feedforward_layernorm.weight).double()
    weight = layer.mlp.down_proj.weight.double()
    change = gain[None, :, None] * weight[None] * (x - mean)[:, None, :]  # [token, hidden, channel]
    expected = ((change**2).sum(1) * w).sum(0) / (x.shape[0] - 1)
    stats = method._stats["mlp.down_proj"]
    torch.testing.assert_close(stats.mean.double(), mean, rtol=1e-4, atol=1e-6)
    scores = channel_scores("flap", "wifv", residual_weight(weight, post_norm_gain(arch, layer, "mlp_output")), stats)
    torch.testing.assert_close(scores.double(), expected, rtol=1e-4, atol=0)


@pytest.mark.parametrize("family", ["gemma2", "gemma3"])
def test_a_layer_whose_post_norm_scales_the_mlp_down_loses_more_channels(family):
    dense = postnorm_model(family)
    today = prune(copy.deepcopy(dense), structure="AL-AM", post_norm_gains=False)
    scaled = prune(copy.deepcopy(dense), structure="AL-AM")
    before = [layer.mlp.down_proj.in_features for layer in today.model.layers]
    after = [layer.mlp.down_proj.in_features for layer in scaled.model.layers]
    low = [i for i, g in enumerate(MLP_GAINS) if g < 1]
    high = [i for i, g in enumerate(MLP_GAINS) if g == 1]
    assert max(after[i] for i in low) < min(after[i] for i in high), after
    assert all(after[i] < before[i] for i in low), (before, after)
    # today the 10x gains leave no trace: every layer keeps about the same share
    assert max(before) - min(before) <= 0.1 * 96, before


@pytest.mark.parametrize("method", ["flap", "wanda-sp"])
@pytest.mark.parametrize("family", list(POSTNORM_FAMILIES))
def test_residual_units_bring_the_pruned_model_closer_to_the_dense_one(family, method):
    dense = postnorm_model(family)
    today = kl_to_dense(dense, prune(copy.deepcopy(dense), method=method, post_norm_gains=False), HELD_OUT)
    scaled = kl_to_dense(dense, prune(copy.deepcopy(dense), method=method), HELD_OUT)
    assert scaled < today, (today, scaled)


def test_magnitude_sp_reads_no_activations_and_keeps_its_allocation():
    dense = postnorm_model("gemma2")
    on, off = (prune(copy.deepcopy(dense), method="magnitude-sp", post_norm_gains=flag) for flag in (True, False))
    assert [layer.mlp.down_proj.in_features for layer in on.model.layers] == \
        [layer.mlp.down_proj.in_features for layer in off.model.layers]
