"""FLAP engine behaviour on tiny random models of every supported family."""

from __future__ import annotations

import copy

import pytest
import torch
from eval_fixtures import char_tokenizer
from tiny_models import FAMILIES, calibration_ids, tiny_model

from optimum_flap import FlapConfig, FlapPruner
from optimum_flap.accounting import layer_cost
from optimum_flap.architectures import attention_geometry, get_architecture

ALL_FAMILIES = list(FAMILIES)
STRUCTURES = {"UL-UM": None, "UL-MM": 8, "AL-MM": 8, "AL-AM": None}


def make_config(**kwargs) -> FlapConfig:
    kwargs.setdefault("dataset", calibration_ids())
    kwargs.setdefault("batch_size", 4)
    return FlapConfig(**kwargs)


def prune(model, physical: bool = True, **kwargs):
    pruner = FlapPruner(make_config(**kwargs))
    return pruner.prune_model(model, physical=physical), pruner.report


def capture_module_io(model, layer_idx: int, ids: torch.Tensor) -> dict:
    """Inputs (args, kwargs) and outputs of one layer's attention and MLP on `ids`."""
    layer = model.model.layers[layer_idx]
    record = {}

    def pre(name):
        def hook(_m, args, kwargs):
            record[name + "_in"] = (args, kwargs)
        return hook

    def post(name):
        def hook(_m, _args, output):
            record[name + "_out"] = output[0] if isinstance(output, tuple) else output
        return hook

    handles = [layer.self_attn.register_forward_pre_hook(pre("attn"), with_kwargs=True),
               layer.self_attn.register_forward_hook(post("attn")),
               layer.mlp.register_forward_pre_hook(pre("mlp"), with_kwargs=True),
               layer.mlp.register_forward_hook(post("mlp"))]
    with torch.no_grad():
        model(ids, use_cache=False)
    for h in handles:
        h.remove()
    return record


@pytest.mark.parametrize("family", ALL_FAMILIES)
def test_bias_compensation_keeps_each_layer_mean_output(family):
    dense = tiny_model(family)
    pruned, _ = prune(copy.deepcopy(dense), pruning_ratio=0.4)
    ids = torch.tensor(calibration_ids())
    for idx in range(dense.config.num_hidden_layers):
        dense_io = capture_module_io(dense, idx, ids)
        layer = pruned.model.layers[idx]
        with torch.no_grad():
            args, kwargs = dense_io["attn_in"]
            attn_out = layer.self_attn(*args, **kwargs)[0]
            mlp_out = layer.mlp(*dense_io["mlp_in"][0])
        # same inputs as the dense layer saw: the means over the calibration tokens must agree
        torch.testing.assert_close(attn_out.mean(dim=(0, 1)), dense_io["attn_out"].mean(dim=(0, 1)),
                                   atol=2e-6, rtol=1e-5)
        torch.testing.assert_close(mlp_out.mean(dim=(0, 1)), dense_io["mlp_out"].mean(dim=(0, 1)),
                                   atol=2e-6, rtol=1e-5)
        # while the token-level outputs really changed (something was removed)
        assert not torch.allclose(mlp_out, dense_io["mlp_out"], atol=1e-4)


def test_without_compensation_the_mean_output_drifts():
    dense = tiny_model("llama-gqa")
    pruned, _ = prune(copy.deepcopy(dense), pruning_ratio=0.4, bias_compensation=False)
    ids = torch.tensor(calibration_ids())
    dense_io = capture_module_io(dense, 0, ids)
    with torch.no_grad():
        mlp_out = pruned.model.layers[0].mlp(*dense_io["mlp_in"][0])
    drift = (mlp_out.mean(dim=(0, 1)) - dense_io["mlp_out"].mean(dim=(0, 1))).abs().max()
    assert drift > 1e-4


@pytest.mark.parametrize("family", ALL_FAMILIES)
def test_zero_ratio_returns_identical_model(family):
    dense = tiny_model(family)
    pruned, report = prune(copy.deepcopy(dense), pruning_ratio=0.0)
    dense_state, pruned_state = dense.state_dict(), pruned.state_dict()
    assert dense_state.keys() == pruned_state.keys()
    for key in dense_state:
        assert torch.equal(dense_state[key], pruned_state[key]), key
    assert report.achieved_ratio == 0.0


@pytest.mark.parametrize("family", ALL_FAMILIES)
@pytest.mark.parametrize("ratio", [0.2, 0.5])
def test_al_am_achieved_ratio_within_one_unit(family, ratio):
    dense = tiny_model(family)
    arch = get_architecture(dense)
    heads, kv_heads, head_dim = attention_geometry(dense.config)
    cost = layer_cost(dense.model.layers[0], arch, heads // kv_heads, head_dim, compensate=True)
    _, report = prune(copy.deepcopy(dense), pruning_ratio=ratio)
    removed = report.decoder_parameters_before - report.decoder_parameters_after
    target = ratio * report.decoder_parameters_before
    assert abs(removed - target) <= max(cost.group_cost, cost.channel_cost)
    assert report.achieved_ratio == pytest.approx(removed / report.decoder_parameters_before)


@pytest.mark.parametrize("structure", ["UL-UM", "UL-MM", "AL-MM"])
@pytest.mark.parametrize("family", ["llama-mha", "mistral"])
def test_other_structures_reach_the_ratio_within_one_channel_per_layer(structure, family):
    dense = tiny_model(family, num_hidden_layers=4)
    heads, kv_heads, head_dim = attention_geometry(dense.config)
    cost = layer_cost(dense.model.layers[0], get_architecture(dense), heads // kv_heads, head_dim, compensate=True)
    # mistral has 2 groups per layer: 30% of them is not a whole number, the MLP absorbs the rounding
    remove_heads = STRUCTURES[structure] and 4 * (heads // kv_heads)
    _, report = prune(copy.deepcopy(dense), pruning_ratio=0.3, structure=structure, remove_heads=remove_heads)
    removed = report.decoder_parameters_before - report.decoder_parameters_after
    assert abs(removed - 0.3 * report.decoder_parameters_before) <= 4 * cost.channel_cost


@pytest.mark.parametrize("family", ALL_FAMILIES)
@pytest.mark.parametrize("method", ["flap", "wanda-sp", "magnitude-sp"])
def test_mask_only_gives_the_same_logits_as_physical_pruning(family, method):
    dense = tiny_model(family)
    physical, _ = prune(copy.deepcopy(dense), method=method, pruning_ratio=0.4)
    masked, _ = prune(copy.deepcopy(dense), physical=False, method=method, pruning_ratio=0.4)
    ids = torch.tensor(calibration_ids(2, 12, seed=7))
    with torch.no_grad():
        torch.testing.assert_close(physical(ids).logits, masked(ids).logits, atol=1e-5, rtol=1e-5)
        # and the mask really is a different model than the dense one
        assert not torch.allclose(physical(ids).logits, dense(ids).logits, atol=1e-3)
    # masked keeps dense shapes; physical ones shrank
    assert masked.model.layers[0].mlp.down_proj.in_features == dense.config.intermediate_size
    assert sum(p.numel() for p in physical.parameters()) < sum(p.numel() for p in masked.parameters())


@pytest.mark.parametrize("family", ALL_FAMILIES)
def test_gqa_groups_pruned_together_and_layout_recorded(family):
    dense = tiny_model(family)
    heads, kv_heads, head_dim = attention_geometry(dense.config)
    pruned, _ = prune(copy.deepcopy(dense), pruning_ratio=0.5)
    layout = pruned.config.pruning_layout
    for layer, record in zip(pruned.model.layers, layout["layers"]):
        attn = layer.self_attn
        assert record["num_attention_heads"] == record["num_key_value_heads"] * (heads // kv_heads)
        assert attn.q_proj.out_features == record["num_attention_heads"] * head_dim
        assert attn.k_proj.out_features == attn.v_proj.out_features == record["num_key_value_heads"] * head_dim
        assert attn.o_proj.in_features == record["num_attention_heads"] * head_dim
        assert attn.num_key_value_groups == heads // kv_heads
        assert layer.mlp.gate_proj.out_features == layer.mlp.down_proj.in_features == record["intermediate_size"]
        assert len(record["kept_head_groups"]) == record["num_key_value_heads"]
        if attn.q_proj.bias is not None:  # qwen2 biases sliced with their rows
            assert attn.q_proj.bias.shape[0] == attn.q_proj.out_features
    assert layout["attention_output_bias"] and layout["mlp_output_bias"]
    assert pruned.config.pruning_config["method"] == "flap"


@pytest.mark.parametrize("family", ALL_FAMILIES)
def test_pruned_heads_are_the_dense_heads(family):
    """Kept query/key/value rows are copied from the dense model, group by group."""
    dense = tiny_model(family)
    heads, kv_heads, head_dim = attention_geometry(dense.config)
    group = heads // kv_heads
    pruned, _ = prune(copy.deepcopy(dense), pruning_ratio=0.5)
    kept = pruned.config.pruning_layout["layers"][0]["kept_head_groups"]
    dense_attn, pruned_attn = dense.model.layers[0].self_attn, pruned.model.layers[0].self_attn
    for position, g in enumerate(kept):
        q_rows = slice(g * group * head_dim, (g + 1) * group * head_dim)
        new_q = slice(position * group * head_dim, (position + 1) * group * head_dim)
        assert torch.equal(pruned_attn.q_proj.weight[new_q], dense_attn.q_proj.weight[q_rows])
        kv_rows, new_kv = slice(g * head_dim, (g + 1) * head_dim), slice(position * head_dim, (position + 1) * head_dim)
        assert torch.equal(pruned_attn.v_proj.weight[new_kv], dense_attn.v_proj.weight[kv_rows])
        assert torch.equal(pruned_attn.o_proj.weight[:, new_q], dense_attn.o_proj.weight[:, q_rows])


@pytest.mark.parametrize("family", ALL_FAMILIES)
def test_generate_with_kv_cache_matches_no_cache(family):
    pruned, _ = prune(tiny_model(family), pruning_ratio=0.5)
    prompt = torch.tensor([calibration_ids(1, 6, seed=3)[0]])
    with torch.no_grad():
        cached = pruned.generate(prompt, max_new_tokens=8, do_sample=False, use_cache=True)
        uncached = pruned.generate(prompt, max_new_tokens=8, do_sample=False, use_cache=False)
    assert torch.equal(cached, uncached)
    assert cached.shape[1] == 14


def test_determinism_for_a_seed_and_sensitivity_to_it():
    texts = [" ".join(f"word{i % 37} tok{i % 11}" for i in range(j, j + 60)) for j in range(40)]

    def run(seed):
        tokenizer = char_tokenizer()
        model = tiny_model("llama-gqa")
        pruner = FlapPruner(FlapConfig(dataset=texts, num_samples=8, seq_len=16, seed=seed, batch_size=4,
                                       pruning_ratio=0.3))
        return pruner.prune_model(model, tokenizer).state_dict()

    first, second, other = run(0), run(0), run(5)
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert any(first[k].shape != other[k].shape or not torch.equal(first[k], other[k]) for k in first)


def test_batch_size_does_not_change_the_result():
    a, _ = prune(tiny_model("qwen2"), pruning_ratio=0.3, batch_size=1)
    b, _ = prune(tiny_model("qwen2"), pruning_ratio=0.3, batch_size=16)
    assert a.config.pruning_layout["layers"] == b.config.pruning_layout["layers"]
    for key, value in a.state_dict().items():
        torch.testing.assert_close(value, b.state_dict()[key], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("structure", list(STRUCTURES))
@pytest.mark.parametrize("metric", ["wifv", "ifv", "wifn"])
def test_every_structure_and_metric_prunes_a_working_model(structure, metric):
    dense = tiny_model("llama-gqa", num_hidden_layers=4)
    pruned, report = prune(copy.deepcopy(dense), pruning_ratio=0.3, structure=structure, metric=metric,
                           remove_heads=STRUCTURES[structure])
    assert 0.15 < report.achieved_ratio < 0.45
    layers = pruned.config.pruning_layout["layers"]
    if structure.startswith("UL"):  # uniform structures give every layer the same sizes
        assert len({(r["num_key_value_heads"], r["intermediate_size"]) for r in layers}) == 1
    if structure.endswith("MM"):
        removed_heads = sum(dense.config.num_attention_heads - r["num_attention_heads"] for r in layers)
        assert removed_heads == STRUCTURES[structure]
    with torch.no_grad():
        logits = pruned(torch.tensor(calibration_ids(2, 8))).logits
    assert torch.isfinite(logits).all()


def test_metrics_rank_channels_differently():
    """ifv, wifv and wifn are different scores, so they keep different channels."""
    weights = {}
    for metric in ("ifv", "wifv", "wifn"):
        pruned, _ = prune(tiny_model("llama-mha"), pruning_ratio=0.4, metric=metric, structure="UL-UM")
        weights[metric] = pruned.model.layers[1].mlp.down_proj.weight
    assert not (torch.equal(weights["ifv"], weights["wifv"]) and torch.equal(weights["wifv"], weights["wifn"]))


@pytest.mark.parametrize("min_groups,min_channels", [(1, 1), (2, 8)])
def test_every_layer_keeps_its_minimum(min_groups, min_channels):
    pruned, _ = prune(tiny_model("llama-gqa", num_hidden_layers=4), pruning_ratio=0.9,
                      min_head_groups=min_groups, min_channels=min_channels)
    for record in pruned.config.pruning_layout["layers"]:
        assert record["num_key_value_heads"] >= min_groups
        assert record["intermediate_size"] >= min_channels
    # a layer at its minimum still runs
    with torch.no_grad():
        assert torch.isfinite(pruned(torch.tensor(calibration_ids(1, 8))).logits).all()


def test_al_am_moves_budget_between_layers_and_modules():
    """The global threshold prunes layers unevenly; UL-UM prunes them evenly."""
    pruned, _ = prune(tiny_model("llama-mha", num_hidden_layers=4), pruning_ratio=0.4)
    sizes = {(r["num_attention_heads"], r["intermediate_size"]) for r in pruned.config.pruning_layout["layers"]}
    assert len(sizes) > 1


def test_magnitude_sp_without_compensation_needs_no_data():
    pruner = FlapPruner(FlapConfig(method="magnitude-sp", pruning_ratio=0.3, dataset=calibration_ids()))
    model = pruner.prune_model(tiny_model("mistral"), tokenizer=None)
    o_proj = model.model.layers[0].self_attn.o_proj
    assert o_proj.bias is None  # mistral has no o_proj bias and the baseline adds none
    # the kept columns are those with the largest weight norms
    dense = tiny_model("mistral")
    norms = dense.model.layers[0].mlp.down_proj.weight.norm(dim=0)
    kept = model.model.layers[0].mlp.down_proj.weight.shape[1]
    assert kept < norms.numel()
    torch.testing.assert_close(model.model.layers[0].mlp.down_proj.weight.norm(dim=0).sort().values,
                               norms.sort(descending=True).values[:kept].sort().values)


def test_calibration_memory_does_not_depend_on_max_position_embeddings():
    """A context window of 16M positions would not fit if anything were sized by it."""
    model = tiny_model("llama-gqa", max_position_embeddings=1 << 24)
    pruned, report = prune(model, pruning_ratio=0.3)
    assert report.achieved_ratio > 0.2


def test_half_precision_model_keeps_its_dtype_and_prunes_like_float32():
    dense = tiny_model("qwen3")
    pruned32, _ = prune(copy.deepcopy(dense), pruning_ratio=0.3)
    pruned16, _ = prune(copy.deepcopy(dense).to(torch.bfloat16), pruning_ratio=0.3)
    assert all(p.dtype == torch.bfloat16 for p in pruned16.parameters())
    # statistics are float32 whatever the model dtype: the same units are kept, up to near-ties
    layers32 = pruned32.config.pruning_layout["layers"]
    layers16 = pruned16.config.pruning_layout["layers"]
    assert [r["kept_head_groups"] for r in layers32] == [r["kept_head_groups"] for r in layers16]
    for r32, r16 in zip(layers32, layers16):
        assert abs(r32["intermediate_size"] - r16["intermediate_size"]) <= 2
