"""LoRA recovery on tiny pruned models: rank budgets, training, merge, save and reload, resume."""

from __future__ import annotations

import copy
import os

import pytest
import torch
from tiny_models import calibration_ids, tiny_model

from optimum_flap import FlapConfig, FlapPruner, RecoveryConfig
from optimum_flap.architectures import get_architecture
from optimum_flap.checkpoint import load_pruned_model
from optimum_flap.recovery import (
    adapted_modules,
    block_costs,
    build_lora_config,
    layer_ranks,
    lora_parameter_count,
    recorded_importance,
    recover,
)

IDS = torch.tensor(calibration_ids(2, 16, seed=5))


def pruned(method="cfsp", family="llama-gqa", **kwargs):
    model = tiny_model(family)
    pruner = FlapPruner(FlapConfig(method=method, pruning_ratio=0.3, dataset=calibration_ids(), batch_size=4, **kwargs))
    return pruner.prune_model(model)


def recipe(tmp_path, **kwargs):
    kwargs.setdefault("dataset", calibration_ids(64, 16, seed=2))
    kwargs.setdefault("seq_len", 16)
    kwargs.setdefault("max_steps", 4)
    kwargs.setdefault("rank", 4)
    kwargs.setdefault("learning_rate", 2e-2)
    kwargs.setdefault("dropout", 0.0)
    kwargs.setdefault("training_args", {"disable_tqdm": True, "use_cpu": True})
    return RecoveryConfig(output_dir=str(tmp_path / "trainer"), **kwargs)


def logits(model, ids=IDS):
    model.eval()
    with torch.no_grad():
        return model(ids).logits


def test_recovery_config_validation():
    assert RecoveryConfig().rank_allocation == "importance"
    for field, value in [("rank", 0), ("rank_allocation", "random"), ("learning_rate", -1), ("dropout", 1.0),
                         ("target_modules", "q_proj"), ("target_modules", []), ("train_biases", "yes"),
                         ("max_steps", 0), ("dataset", "no-such-dataset"), ("max_rank_factor", 0.5)]:
        with pytest.raises(ValueError, match=f"RecoveryConfig: invalid {field}="):
            RecoveryConfig(**{field: value})
    with pytest.raises(ValueError, match="num_samples"):
        RecoveryConfig(max_steps=None)


@pytest.mark.parametrize("importance", [[0.1, 0.5, 0.2], [0.30, 0.05, 0.12]])
def test_importance_ranks_have_the_uniform_adapter_budget(importance, tmp_path):
    from peft import get_peft_model

    model = pruned()
    arch = get_architecture(model)
    costs = block_costs(adapted_modules(model, arch, RecoveryConfig().target_modules))
    assert len(set(costs)) > 1  # CFSP left blocks of different widths
    counts, rank_lists = {}, {}
    for allocation in ("uniform", "importance"):
        config = recipe(tmp_path, rank=8, rank_allocation=allocation, rank_temperature=0.1)
        lora_config, ranks = build_lora_config(model, arch, config, importance)
        peft_model = get_peft_model(copy.deepcopy(model), lora_config)
        counts[allocation] = lora_parameter_count(peft_model)
        rank_lists[allocation] = ranks
        for name, module in peft_model.named_modules():  # every adapter has its block's rank
            if hasattr(module, "lora_A") and "default" in module.lora_A:
                block = int(name.split("layers.")[1].split(".")[0])
                assert module.lora_A["default"].weight.shape[0] == ranks[block]
                assert module.scaling["default"] == pytest.approx(config.alpha / config.rank)
    assert rank_lists["uniform"] == [8, 8, 8]
    assert counts["uniform"] == 8 * sum(costs)
    assert counts["uniform"] - max(costs) < counts["importance"] <= counts["uniform"]  # within one rank step
    order = sorted(range(3), key=lambda i: importance[i])
    assert [rank_lists["importance"][i] for i in order] == sorted(rank_lists["importance"])
    assert len(set(rank_lists["importance"])) > 1


def test_layer_ranks_bounds():
    ranks = layer_ranks([0.9, 0.0, 0.0, 0.0], [100, 100, 100, 100], 8, temperature=0.01, max_rank_factor=2)
    assert max(ranks) == 16 and min(ranks) >= 1 and sum(ranks) == 32


def test_merge_matches_unmerged_adapter_and_biases_train(tmp_path):
    model = pruned("flap")  # bias compensation: o_proj / down_proj carry biases
    before = {n: p.detach().clone() for n, p in model.named_parameters() if n.endswith("down_proj.bias")}
    result = recover(model, None, recipe(tmp_path, train_biases=True), merge=False)
    peft_model = result.model
    assert result.importance is not None and len(result.importance) == 3  # measured: FLAP records none
    unmerged = logits(peft_model)
    trained = {n: p for n, p in peft_model.named_parameters() if n.endswith("down_proj.base_layer.bias")}
    assert trained and all(p.requires_grad for p in trained.values())
    assert any(not torch.allclose(p, before[n.replace("base_model.model.", "").replace("base_layer.", "")])
               for n, p in trained.items())
    merged = peft_model.merge_and_unload()
    torch.testing.assert_close(logits(merged), unmerged, atol=1e-5, rtol=1e-5)
    assert not any("lora" in n for n, _ in merged.named_parameters())


def test_recovered_model_saves_reloads_and_keeps_layout(tmp_path):
    model = pruned("cfsp", family="qwen3", bias_compensation=True)
    layout = copy.deepcopy(model.config.pruning_layout)
    start = logits(model)
    result = recover(model, None, recipe(tmp_path), save_directory=tmp_path / "merged")
    assert result.merged and result.final_loss is not None
    assert len(result.ranks) == 3 and result.importance == recorded_importance(model)
    recovered = result.model
    assert recovered is model  # merged in place: the same pruned model object, adapters folded in
    assert not torch.allclose(logits(recovered), start, atol=1e-4)  # training changed the function
    assert recovered.config.pruning_layout == layout
    assert all(layer.mlp.down_proj.bias is not None for layer in recovered.model.layers)
    reloaded = load_pruned_model(tmp_path / "merged")
    torch.testing.assert_close(logits(reloaded), logits(recovered))
    assert reloaded.config.recovery["ranks"] == result.ranks and reloaded.config.recovery["steps"] == 4
    assert reloaded.config.block_importance == recovered.config.block_importance
    assert [layer.mlp.gate_proj.out_features for layer in reloaded.model.layers] == [
        la["intermediate_size"] for la in layout["layers"]]


def test_adapter_only_save_and_resume(tmp_path):
    from peft import PeftModel

    base = pruned("cfsp")
    config = recipe(tmp_path, save_steps=2, max_steps=4, logging_steps=1)
    result = recover(copy.deepcopy(base), None, config, merge=False, save_directory=tmp_path / "adapter")
    assert os.path.isfile(tmp_path / "adapter" / "adapter_config.json")
    assert sorted(os.listdir(tmp_path / "trainer")) == ["checkpoint-2", "checkpoint-4"]
    reloaded = PeftModel.from_pretrained(copy.deepcopy(base), tmp_path / "adapter")
    torch.testing.assert_close(logits(reloaded), logits(result.model))
    # resuming from the step-2 checkpoint restores steps 1-2 and trains 3-4 to the same result
    resumed = recover(copy.deepcopy(base), None, recipe(tmp_path, save_steps=2, max_steps=4, logging_steps=1),
                      merge=False, resume_from_checkpoint=str(tmp_path / "trainer" / "checkpoint-2"))
    first = [(e["step"], e["loss"]) for e in result.log_history if "loss" in e]
    again = [(e["step"], e["loss"]) for e in resumed.log_history if "loss" in e]
    assert [s for s, _ in again] == [1, 2, 3, 4] and again[:2] == first[:2]
    assert again[2][1] == pytest.approx(first[2][1], rel=1e-4)
    torch.testing.assert_close(logits(resumed.model), logits(result.model), atol=1e-4, rtol=1e-4)


def test_pruner_recover_is_a_thin_wrapper(tmp_path):
    model = pruned("wanda-sp")
    out = FlapPruner.recover(model, None, recipe(tmp_path, rank_allocation="uniform", max_steps=1))
    assert type(out).__name__ == "LlamaForCausalLM" and out.config.recovery["ranks"] == [4, 4, 4]


@pytest.mark.parametrize("value", [float("inf"), float("nan"), float("-inf")])
@pytest.mark.parametrize("field", ["learning_rate", "alpha", "dropout", "num_train_epochs", "max_rank_factor",
                                   "rank_temperature"])
def test_recovery_config_refuses_non_finite_floats(field, value):
    with pytest.raises(ValueError, match=f"RecoveryConfig: invalid {field}={value!r}; allowed: .*finite"):
        RecoveryConfig(**{field: value})


def test_training_stops_on_a_non_finite_loss(tmp_path):
    from optimum_flap.checkpoint.finite import NonFiniteError
    from optimum_flap.recovery import NonFiniteLossError

    with pytest.raises(NonFiniteLossError, match=r"Training (loss|grad_norm) became (nan|inf) at step \d"):
        recover(pruned("cfsp"), None, recipe(tmp_path, logging_steps=1, learning_rate=1e12, finetuning="full"))
    model = pruned("cfsp")  # NaN weights are refused before the first step
    with torch.no_grad():
        model.model.layers[1].mlp.up_proj.weight[0, 0] = float("nan")
    with pytest.raises(NonFiniteError, match=r"Cannot recover the model: tensor model\.layers\.1\.mlp\.up_proj"):
        recover(model, None, recipe(tmp_path, logging_steps=1))


def test_default_output_dir_leaves_nothing_behind(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = recipe(tmp_path, max_steps=2)
    config.output_dir = None
    config.validate()
    result = recover(pruned("cfsp"), None, config)
    assert result.steps == 2 and os.listdir(tmp_path) == []
    with pytest.raises(ValueError, match="invalid output_dir=None; allowed: a directory path when save_steps=2"):
        RecoveryConfig(save_steps=2)


def _sparsify(model, pattern):
    """Zero half of every decoder Linear weight: at random (unstructured) or 2 of every 4 inputs (2:4)."""
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for module in model.model.layers.modules():
            if isinstance(module, torch.nn.Linear):
                weight = module.weight
                if pattern == "2:4":
                    groups = weight.view(weight.shape[0], -1, 4)
                    smallest = groups.abs().argsort(dim=-1)[..., :2]
                    groups.scatter_(-1, smallest, 0.0)
                else:
                    weight.mul_(torch.rand(weight.shape, generator=generator) >= 0.5)
    return model


@pytest.mark.parametrize("finetuning", ["lora", "full"])
@pytest.mark.parametrize("pattern", ["unstructured", "2:4"])
def test_recovery_keeps_the_zeros_of_sparse_weights(tmp_path, pattern, finetuning):
    model = _sparsify(pruned("flap", round_to=4), pattern)  # widths in multiples of 4 for the 2:4 groups
    linears = {n: m for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and ".layers." in n}
    before = {n: m.weight.detach().clone() for n, m in linears.items()}
    zeros = {n: w == 0 for n, w in before.items()}
    assert all(0.45 < z.float().mean() < 0.6 for z in zeros.values())
    config = recipe(tmp_path, finetuning=finetuning, learning_rate=2e-2 if finetuning == "lora" else 1e-3,
                    train_biases=True)
    result = recover(model, None, config)
    after = {n: m.weight for n, m in result.model.named_modules() if n in linears}
    assert set(after) == set(linears)
    for name, weight in after.items():
        assert torch.count_nonzero(weight[zeros[name]]) == 0, name
    changed = [n for n in after if not torch.allclose(after[n][~zeros[n]], before[n][~zeros[n]])]
    assert len(changed) == len(after)  # training did change every kept weight matrix
    if pattern == "2:4":
        for weight in after.values():
            assert (weight.view(weight.shape[0], -1, 4) != 0).sum(-1).max() <= 2
