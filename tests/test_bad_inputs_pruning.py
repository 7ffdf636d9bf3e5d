"""Bad input and faults given to the pruner: non-finite values, unreachable budgets, re-pruning, model kinds.

Each case asserts the exception type and that the message names the bad value and the remedy; a last
test checks that the kept units do not depend on the number of torch threads or the batch size.
"""

from __future__ import annotations

import copy
import re
import warnings

import pytest
import torch
from conftest import ckpt_make_pruned, ckpt_tiny_model
from tiny_models import calibration_ids, tiny_model

from optimum_flap import FlapConfig, FlapPruner
from optimum_flap.checkpoint import load_pruned_model
from optimum_flap.data import CalibrationDataError
from optimum_flap.methods.finite import NonFiniteError
from optimum_flap.methods.flap.selection import BudgetError
from optimum_flap.methods.limits import UnreachableTargetWarning
from optimum_flap.prunable import UnprunableModelError


def make_pruner(**kwargs) -> FlapPruner:
    kwargs.setdefault("dataset", calibration_ids())
    kwargs.setdefault("batch_size", 4)
    return FlapPruner(FlapConfig(**kwargs))


def prune(model, physical: bool = True, **kwargs):
    pruner = make_pruner(**kwargs)
    return pruner.prune_model(model, physical=physical), pruner.report


def sizes(model) -> list[tuple[int, int]]:
    return [(r["num_key_value_heads"], r["intermediate_size"]) for r in model.config.pruning_layout["layers"]]


# ------------------------------------------------------------------------------ non-finite values


@pytest.mark.parametrize("method", ["flap", "magnitude-sp", "cfsp"])
@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_a_non_finite_weight_is_refused_naming_the_tensor(method, value):
    model = tiny_model("llama-gqa")
    with torch.no_grad():
        model.model.layers[1].mlp.down_proj.weight[0, 3] = value
    with pytest.raises(NonFiniteError, match=r"Layer 1: weight model\.layers\.1\.mlp\.down_proj\.weight") as err:
        prune(model, method=method, pruning_ratio=0.3)
    assert "Reload or restore the checkpoint" in str(err.value)
    assert ("1 NaN and 0 inf" if value != value else "0 NaN and 1 inf") in str(err.value)


def test_a_non_finite_weight_before_the_scored_modules_is_found_too():
    model = tiny_model("qwen2")
    with torch.no_grad():
        model.model.layers[2].self_attn.q_proj.bias[5] = float("nan")
    with pytest.raises(NonFiniteError, match=r"model\.layers\.2\.self_attn\.q_proj\.bias"):
        prune(model, pruning_ratio=0.3)


@pytest.mark.parametrize("method", ["flap", "cfsp"])
def test_float16_activations_that_overflow_are_refused_naming_the_module(method):
    model = tiny_model("llama-gqa").to(torch.float16)
    with torch.no_grad():  # finite weights whose product overflows float16's 65504 in layer 1's MLP
        model.model.layers[1].mlp.up_proj.weight.mul_(3000.0)
        model.model.layers[1].mlp.gate_proj.weight.mul_(3000.0)
    assert all(torch.isfinite(p).all() for p in model.parameters())
    with pytest.raises(NonFiniteError, match=r"Layer 1: the calibration inputs of model\.layers\.1\.mlp\.down_proj "
                                             r"are not finite") as err:
        prune(model, method=method, pruning_ratio=0.3)
    assert "torch.float16" in str(err.value) and "load the model in bfloat16 or float32" in str(err.value)


# ------------------------------------------------------------------------------ re-pruning a pruned model


def uneven_model():
    """A pruned model whose layer 0 kept all 4 head groups and layer 1 a single one (dense: 4 groups, 96 channels)."""
    return ckpt_make_pruned(ckpt_tiny_model("llama", kv_heads=4), [(4, 96), (1, 60), (2, 50)])


@pytest.mark.parametrize("structure", ["UL-UM", "AL-AM"])
def test_re_pruning_takes_each_layers_own_head_count(structure):
    model, report = prune(uneven_model(), pruning_ratio=0.5, structure=structure)
    layers = model.config.pruning_layout["layers"]
    assert all(r["num_key_value_heads"] >= 1 for r in layers)  # layer 1 had 1 group: it keeps it
    assert layers[1]["kept_head_groups"] == [3]
    if structure == "UL-UM":  # the ratio's share of each layer's own groups: 2 of 4, 0 of 1, 1 of 2
        assert [r["num_key_value_heads"] for r in layers] == [2, 1, 1]
    assert abs(report.achieved_ratio - 0.5) < 0.03  # within half a head group (6% of the decoder here)
    with torch.no_grad():
        assert torch.isfinite(model(torch.tensor(calibration_ids(1, 8))).logits).all()


def test_re_pruning_ul_mm_refuses_a_layer_without_enough_groups_naming_it():
    with pytest.raises(BudgetError, match=r"cannot remove 1 head groups per layer with min_head_groups=1: layer 1 "
                                          r"has 1 head groups\. Lower remove_heads, or use AL-MM"):
        prune(uneven_model(), pruning_ratio=0.3, structure="UL-MM", remove_heads=3)


@pytest.mark.parametrize("method", ["flap", "cfsp"])
def test_re_pruned_layout_names_dense_head_groups_and_saves(tmp_path, method):
    first, _ = prune(tiny_model("llama-gqa"), pruning_ratio=0.5)
    before = first.config.pruning_layout["layers"]
    second, report = prune(copy.deepcopy(first), method=method, pruning_ratio=0.3, cfsp_prune_attention=True) \
        if method == "cfsp" else prune(copy.deepcopy(first), pruning_ratio=0.3)
    assert abs(report.achieved_ratio - 0.3) < 0.03  # of the model it was given, within half a head group
    for old, new in zip(before, second.config.pruning_layout["layers"]):
        assert set(new["kept_head_groups"]) <= set(old["kept_head_groups"])  # dense indices, a subset of the first
        assert len(new["kept_head_groups"]) == new["num_key_value_heads"]
    ids = torch.tensor(calibration_ids(1, 8))
    FlapPruner.save(second, tmp_path / "twice")
    reloaded = load_pruned_model(tmp_path / "twice")
    assert reloaded.config.dense_sizes == {"num_attention_heads": 8, "num_key_value_heads": 4, "intermediate_size": 96}
    with torch.no_grad():
        torch.testing.assert_close(reloaded(ids).logits, second(ids).logits, atol=1e-5, rtol=1e-4)


def test_a_ratio_zero_run_keeps_a_pruned_models_layout_and_it_still_saves(tmp_path):
    pruned, _ = prune(tiny_model("llama-gqa"), pruning_ratio=0.4)
    layout = copy.deepcopy(pruned.config.pruning_layout)
    again, report = prune(pruned, pruning_ratio=0.0)
    assert report.achieved_ratio == 0.0
    assert again.config.pruning_layout["layers"] == layout["layers"]
    FlapPruner.save(again, tmp_path / "same")
    assert load_pruned_model(tmp_path / "same").config.pruning_layout["layers"] == layout["layers"]


# ------------------------------------------------------------------------------ models the pruner refuses


def test_a_peft_model_is_refused_with_merge_and_unload():
    import peft

    model = peft.get_peft_model(tiny_model("llama-gqa"), peft.LoraConfig(target_modules=["q_proj"]))
    with pytest.raises(UnprunableModelError, match=r"PeftModel carries PEFT adapters.*merge_and_unload"):
        prune(model, pruning_ratio=0.3)
    injected = peft.inject_adapter_in_model(peft.LoraConfig(target_modules=["q_proj"]), tiny_model("llama-gqa"))
    with pytest.raises(UnprunableModelError, match=r"LlamaForCausalLM carries PEFT adapters"):
        prune(injected, pruning_ratio=0.3)


def test_a_torch_quantized_model_is_refused_naming_the_module():
    model = torch.ao.quantization.quantize_dynamic(tiny_model("llama-gqa"), {torch.nn.Linear}, dtype=torch.qint8)
    with pytest.raises(UnprunableModelError, match=r"model\.layers\.0\.self_attn\.q_proj is a .*Linear, not a "
                                                   r"floating-point torch\.nn\.Linear.*Load it in floating point"):
        prune(model, pruning_ratio=0.3)


def test_a_model_with_a_quantization_config_is_refused():
    model = tiny_model("llama-gqa")
    model.config.quantization_config = {"quant_method": "bitsandbytes", "load_in_8bit": True}
    with pytest.raises(UnprunableModelError, match=r"quant_method='bitsandbytes'.*without quantization_config"):
        prune(model, pruning_ratio=0.3)


def test_a_mask_only_pruned_model_is_refused_with_physical_pruning_as_the_remedy():
    masked, _ = prune(tiny_model("llama-gqa"), physical=False, pruning_ratio=0.3)
    for ratio in (0.0, 0.3):
        with pytest.raises(UnprunableModelError, match=r"physical=False.*Prune the original dense model again, with "
                                                       r"physical=True"):
            prune(masked, pruning_ratio=ratio)


def test_a_non_module_is_refused():
    with pytest.raises(TypeError, match=r"got str; load one with AutoModelForCausalLM\.from_pretrained"):
        make_pruner(pruning_ratio=0.3).prune_model("HuggingFaceTB/SmolLM2-135M")


def test_batch_size_zero_is_refused_by_the_config():
    with pytest.raises(ValueError, match=r"batch_size=0.*a positive int"):
        FlapConfig(batch_size=0)


def test_a_text_dataset_without_a_tokenizer_is_refused():
    with pytest.raises(CalibrationDataError, match="A tokenizer is needed to calibrate on text; pass one or give "
                                                   "token ids"):
        make_pruner(pruning_ratio=0.3, dataset=["some text"] * 4).prune_model(tiny_model("llama-gqa"))


def test_a_model_in_training_mode_is_calibrated_in_eval_mode_and_left_training():
    """Dropout would make the statistics random; the pruner calibrates in eval mode and restores the mode."""
    dense = tiny_model("llama-gqa", attention_dropout=0.5)
    expected, _ = prune(copy.deepcopy(dense), pruning_ratio=0.3)
    training, _ = prune(copy.deepcopy(dense).train(), pruning_ratio=0.3)
    assert training.training
    assert training.config.pruning_layout == expected.config.pruning_layout
    for key, value in expected.state_dict().items():
        torch.testing.assert_close(training.state_dict()[key], value)


# ------------------------------------------------------------------------------ round_to and unreachable targets


@pytest.mark.parametrize("method", ["flap", "wanda-sp", "cfsp"])
def test_round_to_at_or_above_the_mlp_width_is_refused_with_a_divisor_to_use(method):
    for round_to in (96, 128):
        with pytest.raises(BudgetError, match=rf"round_to={round_to} leaves no MLP channel removable in layer\(s\) "
                                              r"\[0, 1, 2\] \(MLP width 96\).*Use round_to below 96 \(a divisor of "
                                              r"it, such as 48\), or leave round_to unset"):
            prune(tiny_model("llama-gqa"), method=method, pruning_ratio=0.3, round_to=round_to)
    model, report = prune(tiny_model("llama-gqa"), method=method, pruning_ratio=0.3, round_to=48)
    widths = [r["intermediate_size"] for r in model.config.pruning_layout["layers"]]
    assert set(widths) <= {48, 96} and 48 in widths
    assert report.achieved_ratio > 0.1


def test_an_unreachable_ratio_warns_with_the_reachable_maximum_that_the_run_then_removes():
    expected = r"pruning_ratio=0\.99 cannot be reached: with min_head_groups=1, min_channels=1 at most \d+\.\d\d% .*<= "
    with pytest.warns(UnreachableTargetWarning, match=expected) as w:
        _, report = prune(tiny_model("llama-gqa"), pruning_ratio=0.99)
    reachable = float(re.search(r"at most (\d+\.\d\d)%", str(w[0].message)).group(1))
    assert reachable == pytest.approx(report.achieved_ratio * 100, abs=0.006)  # every layer at its minimum


@pytest.mark.parametrize("kwargs", [dict(method="flap", structure="UL-UM", min_channels=32, round_to=32),
                                    dict(method="cfsp", cfsp_prune_attention=True, min_head_groups=2)])
def test_minimums_that_cap_the_ratio_warn_and_a_reachable_ratio_does_not(kwargs):
    with pytest.warns(UnreachableTargetWarning, match="cannot be reached"):
        prune(tiny_model("llama-gqa"), pruning_ratio=0.9, **kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UnreachableTargetWarning)
        prune(tiny_model("llama-gqa"), pruning_ratio=0.3, **kwargs)


# ------------------------------------------------------------------------------ determinism


@pytest.mark.parametrize("method", ["flap", "cfsp"])
def test_kept_units_do_not_depend_on_thread_count_or_batch_size(method):
    """Weights are slices of the dense ones, so the same kept units give bit-identical weights; the
    compensation biases are sums whose order may change with threads and batches: equal to float tolerance."""
    threads = torch.get_num_threads()
    results = {}
    try:
        for n_threads in (1, 2):
            torch.set_num_threads(n_threads)
            for batch_size in (1, 4):
                model, _ = prune(tiny_model("llama-gqa"), method=method, pruning_ratio=0.3, batch_size=batch_size,
                                 bias_compensation=True, cfsp_prune_attention=True) if method == "cfsp" else \
                    prune(tiny_model("llama-gqa"), pruning_ratio=0.3, batch_size=batch_size)
                results[n_threads, batch_size] = model
    finally:
        torch.set_num_threads(threads)
    reference = results[1, 1]
    for key, model in results.items():
        assert model.config.pruning_layout == reference.config.pruning_layout, key
        expected = reference.state_dict()
        for name, value in model.state_dict().items():
            if name.endswith("bias"):
                torch.testing.assert_close(value, expected[name], atol=1e-6, rtol=1e-5)
            else:
                assert torch.equal(value, expected[name]), (key, name)
