"""magnitude, wanda and sparsegpt through FlapPruner on tiny models: exact sparsity, N:M, checkpoints."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from package_free import WITHOUT_OPTIMUM_FLAP
from safetensors.torch import save_file
from tiny_models import calibration_ids, tiny_model

from optimum_flap import FlapConfig, FlapPruner
from optimum_flap.architectures import LLAMA
from optimum_flap.engine.statistics import ChannelStatistics
from optimum_flap.evaluation import speed
from optimum_flap.evaluation.sparse_kernels import is_two_four, semi_structured_weights
from optimum_flap.methods.sparsity import follows_n_m, input_norm, unstructured_mask, wanda_scores

PATHS = tuple(LLAMA.projection_paths())
CALIBRATION = dict(dataset=calibration_ids(16, 16), num_samples=16, seq_len=16, batch_size=4)


def prune(method: str, family: str = "llama-gqa", hidden_size: int = 64, intermediate_size: int = 96, **options):
    model = tiny_model(family, hidden_size=hidden_size, intermediate_size=intermediate_size)
    pruner = FlapPruner(FlapConfig(method=method, **CALIBRATION, **options))
    pruner.prune_model(model)
    return model, pruner


def weights(model):
    return [{path: layer.get_submodule(path).weight.detach() for path in PATHS} for layer in model.model.layers]


@pytest.mark.parametrize("method", ["magnitude", "wanda", "sparsegpt"])
def test_unstructured_sparsity_is_exact_in_every_comparison_group(method):
    model, pruner = prune(method, pruning_ratio=0.5)
    for layer in weights(model):
        for path, weight in layer.items():
            zeros = weight == 0
            if method == "magnitude":  # one comparison group: the whole matrix
                assert int(zeros.sum()) == math.floor(weight.numel() * 0.5), path
            else:  # Wanda's output rows; SparseGPT keeps the same count per row
                assert (zeros.sum(dim=1) == weight.shape[1] // 2).all(), path
    report = pruner.report
    assert report.kind == "mask" and report.achieved_ratio == pytest.approx(0.5)
    assert report.parameters_after == report.parameters_before  # shapes are unchanged
    assert "sparsity 50.00% of decoder linear weights" in report.summary()
    assert pruner.layout is None and getattr(model.config, "pruning_layout", None) is None
    assert model.config.pruning_sparsity[0]["self_attn.q_proj"] == pytest.approx(0.5)
    assert model.config.pruning_config["sparsity_type"] == "unstructured"


@pytest.mark.parametrize("method", ["magnitude", "wanda", "sparsegpt"])
@pytest.mark.parametrize(("sparsity_type", "kept", "group"), [("2:4", 2, 4), ("4:8", 4, 8), ("1:4", 1, 4)])
def test_n_m_pattern_holds_in_every_group_of_m_inputs(method, sparsity_type, kept, group):
    model, pruner = prune(method, sparsity_type=sparsity_type)  # the ratio is implied by the pattern
    assert pruner.config.pruning_ratio == pytest.approx(1 - kept / group)
    for layer in weights(model):
        for path, weight in layer.items():
            assert follows_n_m(weight != 0, kept, group), path
    assert pruner.report.achieved_ratio == pytest.approx(1 - kept / group)


def test_wanda_scores_each_layer_on_the_pruned_model_inputs():
    """Sequential: layer 1's mask is Wanda's mask of the inputs the *pruned* layer 0 gives."""
    model, _ = prune("wanda", pruning_ratio=0.5)
    dense = tiny_model("llama-gqa")
    ids = torch.tensor(CALIBRATION["dataset"])

    def layer1_mask(source):
        stats = ChannelStatistics()
        layer = source.model.layers[1]
        handle = layer.self_attn.q_proj.register_forward_pre_hook(lambda _m, args: stats.update(args[0]))
        with torch.no_grad():
            source(ids)
        handle.remove()
        weight = dense.model.layers[1].self_attn.q_proj.weight
        return unstructured_mask(wanda_scores(weight, input_norm(stats)), 0.5, "output1")

    pruned_mask = model.model.layers[1].self_attn.q_proj.weight != 0
    assert torch.equal(pruned_mask, layer1_mask(model))
    assert not torch.equal(pruned_mask, layer1_mask(dense))  # dense inputs would give another mask


def test_sparsegpt_reconstructs_better_than_wanda_on_the_same_layer():
    dense = tiny_model("llama-gqa")
    inputs = []
    handle = dense.model.layers[0].self_attn.q_proj.register_forward_pre_hook(
        lambda _m, args: inputs.append(args[0].reshape(-1, args[0].shape[-1])))
    with torch.no_grad():
        dense(torch.tensor(CALIBRATION["dataset"]))
    handle.remove()
    x = torch.cat(inputs)  # layer 0's inputs are the same for both methods
    errors = {}
    for method in ("wanda", "sparsegpt"):
        model, _ = prune(method, pruning_ratio=0.5)
        with torch.no_grad():
            errors[method] = {
                path: float(((x @ (dense.model.layers[0].get_submodule(path).weight
                                   - model.model.layers[0].get_submodule(path).weight).T) ** 2).sum())
                for path in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj")
            }
    for path, error in errors["sparsegpt"].items():
        assert error < errors["wanda"][path], (path, errors)


def test_sparsegpt_block_selection_is_the_released_per_block_threshold_with_exact_sparsity():
    """`sparsegpt_mask_selection="block"`: one threshold over all rows of each 128-column block (the release).

    Layer 0's down_proj (192 inputs: blocks of 128 and 64) is scored on the dense layer's inputs, so its
    first block's mask follows from the formula alone: tmp = W^2 / diag(U)^2 with U the upper Cholesky
    factor of (H + 1% mean diag)^-1, pruned where tmp <= the k-th smallest tmp of the block, k its share
    of floor(numel * ratio) (the release indexes sort(tmp)[k], one weight more). float64: no near-ties flip.
    """
    dense = tiny_model("llama-gqa", hidden_size=64, intermediate_size=192).double()
    inputs = []
    down = dense.model.layers[0].mlp.down_proj
    handle = down.register_forward_pre_hook(lambda _m, args: inputs.append(args[0].reshape(-1, args[0].shape[-1])))
    with torch.no_grad():
        dense(torch.tensor(CALIBRATION["dataset"]))
    handle.remove()
    x = torch.cat(inputs)
    hessian = 2 * x.T @ x / x.shape[0]
    hessian.diagonal().add_(0.01 * hessian.diagonal().mean())
    upper = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(hessian)), upper=True)
    block = down.weight.detach()[:, :128]
    saliency = block**2 / upper.diagonal()[:128] ** 2
    share = math.floor(block.numel() * 0.5)
    expected_pruned = saliency <= saliency.flatten().sort().values[share - 1]

    model = dense.__class__(dense.config).double()
    model.load_state_dict(dense.state_dict())
    FlapPruner(FlapConfig(method="sparsegpt", pruning_ratio=0.5, sparsegpt_mask_selection="block",
                          **CALIBRATION)).prune_model(model)
    pruned = model.model.layers[0].mlp.down_proj.weight == 0
    assert torch.equal(pruned[:, :128], expected_pruned)
    assert len(set(pruned.sum(dim=1).tolist())) > 1  # rows end with different sparsities, unlike "row"
    for layer in weights(model):
        for path, weight in layer.items():  # every matrix exactly at the ratio over its uneven blocks
            assert int((weight == 0).sum()) == math.floor(weight.numel() * 0.5), path


def test_sparsegpt_mask_selection_is_a_sparsegpt_and_barber_option():
    assert FlapConfig(method="sparsegpt").sparsegpt_mask_selection == "row"
    assert FlapConfig(method="barber", barber_init="sparsegpt",
                      sparsegpt_mask_selection="block").sparsegpt_mask_selection == "block"
    with pytest.raises(ValueError, match="sparsegpt_mask_selection='column'; allowed: row, block"):
        FlapConfig(method="sparsegpt", sparsegpt_mask_selection="column")
    with pytest.raises(ValueError, match="does not apply to method='wanda'"):
        FlapConfig(method="wanda", sparsegpt_mask_selection="block")
    two_four = [prune("sparsegpt", sparsity_type="2:4", sparsegpt_mask_selection=selection)[0]
                for selection in ("row", "block")]  # N:M is chosen per row whatever the selection
    assert all(torch.equal(a, b) for first, second in zip(*map(weights, two_four)) for a, b in
               zip(first.values(), second.values()))


def _no_calibration(monkeypatch):
    def refuse(*_args, **_kwargs):
        raise AssertionError("calibration data was loaded")

    monkeypatch.setattr("optimum_flap.pruner.load_calibration_ids", refuse)


def test_magnitude_needs_no_calibration_data(monkeypatch):
    _no_calibration(monkeypatch)
    model = tiny_model("llama-gqa")
    FlapPruner(FlapConfig(method="magnitude", pruning_ratio=0.5)).prune_model(model)
    assert model.config.pruning_sparsity[1]["mlp.down_proj"] == pytest.approx(0.5)


def test_zero_ratio_keeps_the_model_and_reports_a_mask_run():
    model = tiny_model("llama-gqa")
    before = [p.clone() for p in model.parameters()]
    pruner = FlapPruner(FlapConfig(method="wanda", pruning_ratio=0.0, **CALIBRATION))
    pruner.prune_model(model)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert pruner.report.kind == "mask" and pruner.report.achieved_ratio == 0.0 and pruner.layout is None


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (dict(sparsity_type="2:4", pruning_ratio=0.3), "keeps 2 of every 4"),
        (dict(sparsity_type="4:2"), "0 < N < M"),
        (dict(sparsity_type="half"), "neither 'unstructured' nor 'N:M'"),
        (dict(sparsity_type="2:4", pruning_ratio=1.0), "pruning_ratio"),
    ],
)
def test_bad_sparsity_recipes_are_refused_when_the_config_is_built(options, message):
    with pytest.raises(ValueError, match=message):
        FlapConfig(method="wanda", **options)


def test_n_m_refuses_input_widths_it_cannot_divide_before_calibrating(monkeypatch):
    _no_calibration(monkeypatch)
    model = tiny_model("llama-gqa", intermediate_size=90)  # down_proj has 90 inputs
    config = FlapConfig(method="wanda", sparsity_type="4:8")
    with pytest.raises(ValueError, match="mlp.down_proj has 90 inputs"):
        FlapPruner(config).prune_model(model)


def test_n_m_recipe_round_trips_with_its_implied_ratio():
    config = FlapConfig(method="sparsegpt", sparsity_type="4:8")
    assert FlapConfig.from_dict(config.to_dict()) == config and config.pruning_ratio == 0.5
    assert FlapConfig(method="flap").pruning_ratio == 0.2  # the structured default is unchanged


# Runs with `python -I` and a finder that refuses optimum_flap: only torch and transformers load the model.
CHILD = WITHOUT_OPTIMUM_FLAP + textwrap.dedent(
    r"""
    import torch
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    directory, expected = sys.argv[1], load_file(sys.argv[2])
    model = AutoModelForCausalLM.from_pretrained(directory)
    with torch.no_grad():
        logits = model(expected["ids"]).logits
    print("RESULTS=" + json.dumps({
        "max_diff": (logits - expected["logits"]).abs().max().item(),
        "class": type(model).__name__,
        "zeros": (model.model.layers[0].self_attn.q_proj.weight == 0).float().mean().item(),
        "imported": any(m.split(".")[0] == "optimum_flap" for m in sys.modules),
    }))
    """
)


def test_sparse_checkpoint_reloads_without_the_package_with_identical_logits(tmp_path):
    model, pruner = prune("sparsegpt", sparsity_type="2:4")
    ids = torch.tensor([[1, 5, 9, 33, 4, 77, 12, 100]])
    with torch.no_grad():
        logits = model(ids).logits
    pruner.save(model, tmp_path / "ckpt")
    save_file({"ids": ids, "logits": logits}, str(tmp_path / "expected.safetensors"))
    config = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    assert config["model_type"] == "llama" and "auto_map" not in config
    assert config["pruning_config"]["method"] == "sparsegpt" and config["pruning_config"]["sparsity_type"] == "2:4"
    assert config["pruning_sparsity"][2]["mlp.up_proj"] == pytest.approx(0.5)
    card = (tmp_path / "ckpt" / "README.md").read_text()
    assert "sparsegpt" in card and "mlp.up_proj" in card

    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_VERBOSITY="error")
    proc = subprocess.run([sys.executable, "-I", "-c", CHILD, str(tmp_path / "ckpt"),
                           str(tmp_path / "expected.safetensors")],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads(next(x for x in proc.stdout.splitlines() if x.startswith("RESULTS="))[len("RESULTS="):])
    assert result == {"max_diff": 0.0, "class": "LlamaForCausalLM", "zeros": 0.5, "imported": False}


def test_speed_report_says_no_sparse_speed_up_is_measured_on_cpu():
    model, _ = prune("wanda", sparsity_type="2:4")
    report = speed(model, batch_sizes=(1,), prompt_len=8, new_tokens=2, warmup=0, repeats=1)
    assert report.sparse_kernels == ("21 2:4 Linear layers; on cpu the zero weights run through dense kernels: "
                                     "no sparse speed-up is measured")
    dense = speed(tiny_model("llama-gqa"), batch_sizes=(1,), prompt_len=8, new_tokens=2, warmup=0, repeats=1)
    assert dense.sparse_kernels == "no 2:4 Linear layers: dense kernels"
    assert not is_two_four(torch.tensor([[1.0, 2.0, 3.0, 0.0]])) and is_two_four(torch.tensor([[1.0, 0, 0, 2.0]]))


@pytest.mark.skipif(not torch.cuda.is_available() or torch.cuda.get_device_capability() < (8, 0),
                    reason="semi-structured sparse kernels need a CUDA GPU of compute capability 8.0+")
def test_two_four_model_runs_through_semi_structured_kernels_on_a_recent_gpu():
    model, _ = prune("wanda", sparsity_type="2:4", hidden_size=128, intermediate_size=256)
    model = model.half().cuda()
    ids = torch.tensor([[1, 5, 9, 33, 4, 77, 12, 100]], device="cuda")
    with torch.no_grad():
        dense_logits = model(ids).logits
        with semi_structured_weights(model) as description:
            sparse_logits = model(ids).logits
    assert "semi-structured sparse kernels" in description
    torch.testing.assert_close(sparse_logits, dense_logits, atol=5e-2, rtol=5e-2)
