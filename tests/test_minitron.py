"""Minitron-style stock-shaped pruning: options, importances, the shape search, and stock checkpoints.

The core check, per family: a model pruned on every axis (hidden size, heads, MLP width, depth) saves
as a stock checkpoint (no auto_map, no per_layer_config) that `AutoModelForCausalLM.from_pretrained`
loads, in a process where optimum_flap cannot be imported, with the in-memory pruned model's logits.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from conftest import ckpt_tiny_tokenizer
from package_free import WITHOUT_OPTIMUM_FLAP
from safetensors.torch import save_file
from test_architectures import tiny
from tiny_models import calibration_ids, tiny_model

from optimum_flap import FlapConfig, FlapPruner
from optimum_flap.accounting import decoder_linear_parameters
from optimum_flap.architectures import UnsupportedArchitectureError, get_architecture
from optimum_flap.methods.minitron.importance import MagnitudeSums, group_norms
from optimum_flap.methods.minitron.shapes import TOLERANCE, ShapeSpace, StockShape, candidate_shapes

IDS = torch.tensor(calibration_ids(num_samples=2, seq_len=12, seed=5))

#: family -> a builder of its tiny model; the first four from tiny_models, the rest from test_architectures
BUILDERS = {
    "llama": lambda: tiny_model("llama-gqa", num_hidden_layers=4),
    "mistral": lambda: tiny_model("mistral", num_hidden_layers=4),
    "qwen2": lambda: tiny_model("qwen2", num_hidden_layers=4),
    "qwen3": lambda: tiny_model("qwen3", num_hidden_layers=4),
    **{name: (lambda name=name: tiny(name)) for name in ("gemma2", "gemma3", "phi3", "granite", "smollm3", "olmo2")},
}
#: every axis at once; OLMo-2 keeps its heads (its q/k norms span all of them)
TARGET = dict(hidden_size=48, num_key_value_heads=1, intermediate_size=64, num_hidden_layers=3)


def minitron(model, **options):
    options.setdefault("dataset", calibration_ids(num_samples=12, seq_len=16))
    config = FlapConfig(method="minitron", batch_size=4, **options)
    pruner = FlapPruner(config)
    pruner.prune_model(model, ckpt_tiny_tokenizer())
    return pruner


def target_for(family: str) -> dict:
    return {k: v for k, v in TARGET.items() if not (family == "olmo2" and k == "num_key_value_heads")}


CHILD = WITHOUT_OPTIMUM_FLAP + textwrap.dedent(
    r"""
    import torch
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    results = {}
    for name, case in json.loads(sys.argv[1]).items():
        model = AutoModelForCausalLM.from_pretrained(case["dir"]).eval()
        expected = load_file(case["expected"])
        with torch.no_grad():
            logits = model(expected["ids"]).logits
        tokens = model.generate(expected["ids"][:1], max_new_tokens=4, min_new_tokens=4, do_sample=False,
                                pad_token_id=0)
        results[name] = {"class": type(model).__module__, "max_diff": (logits - expected["logits"]).abs().max().item(),
                         "generated": tokens.shape[1]}
    results["optimum_flap_imported"] = any(m.split(".")[0] == "optimum_flap" for m in sys.modules)
    print("\nRESULTS=" + json.dumps(results))
    """
)


def test_every_family_reloads_stock_without_the_package(tmp_path):
    cases = {}
    for family, build in BUILDERS.items():
        model = build()
        dense_layers = model.config.num_hidden_layers
        pruner = minitron(model, target_shape=target_for(family), depth_importance="block")
        with torch.no_grad():
            logits = model(input_ids=IDS).logits
        plan = pruner.save_pretrained(tmp_path / family)
        assert plan.checkpoint_format == "stock", (family, plan.reason)
        saved = json.loads((tmp_path / family / "config.json").read_text())
        assert "auto_map" not in saved and "per_layer_config" not in saved, family
        assert saved["architectures"] == [type(model).__name__]
        assert saved["hidden_size"] == 48 and saved["intermediate_size"] == 64 and saved["num_hidden_layers"] == 3
        assert saved["num_key_value_heads"] == (2 if family == "olmo2" else 1), family
        for key in ("layer_types", "no_rope_layers"):  # per-layer lists follow the kept layers
            if saved.get(key) is not None:
                assert len(saved[key]) == 3, (family, key)
        kept = saved["minitron_search"]["layer_scores"]
        assert len(kept) == dense_layers
        save_file({"ids": IDS, "logits": logits}, str(tmp_path / f"{family}.safetensors"))
        cases[family] = {"dir": str(tmp_path / family), "expected": str(tmp_path / f"{family}.safetensors")}
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_VERBOSITY="error")
    proc = subprocess.run([sys.executable, "-I", "-c", CHILD, json.dumps(cases)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr[-4000:]
    results = json.loads(next(x for x in proc.stdout.splitlines() if x.startswith("RESULTS=")).removeprefix("RESULTS="))
    assert results.pop("optimum_flap_imported") is False
    assert set(results) == set(BUILDERS)
    for family, out in results.items():
        assert out["class"].startswith("transformers.models."), (family, out)
        assert out["max_diff"] <= 1e-5, (family, out)
        assert out["generated"] == IDS.shape[1] + 4, (family, out)


def test_gemma_embeddings_keep_their_scale_after_the_hidden_cut():
    """Gemma multiplies embeddings by sqrt(hidden_size): the saved weights absorb sqrt(old / new)."""
    dense = tiny("gemma2")
    model = tiny("gemma2")
    minitron(model, target_shape=dict(hidden_size=48))
    kept = model.config.minitron_search  # the search record exists; the kept channels are read from the weights
    assert kept["candidates"][0]["hidden_size"] == 48
    with torch.no_grad():
        dense_embedded = dense.model.embed_tokens(IDS)
        pruned_embedded = model.model.embed_tokens(IDS)
    # every kept channel is one of the dense channels, with the dense value (scale included)
    matches = (pruned_embedded[..., :, None] - dense_embedded[..., None, :]).abs().amax(dim=(0, 1)) < 1e-5
    assert matches.any(dim=1).all() and int(matches.any(dim=0).sum()) == 48
    assert float(model.model.embed_tokens.embed_scale) == pytest.approx(48**0.5)


def test_search_hits_the_ratio_and_reports_every_candidate():
    model = tiny_model("llama-gqa", num_hidden_layers=4)
    dense = decoder_linear_parameters(model, get_architecture(model))
    pruner = minitron(model, pruning_ratio=0.3, minitron_axes=("hidden_size", "heads", "ffn", "depth"),
                      search_candidates=4, search_samples=4)
    report = pruner.report
    assert abs(report.achieved_ratio - 0.3) <= TOLERANCE
    assert report.decoder_parameters_before == dense
    assert len(report.shape_search) == 4
    assert all(abs(c["ratio"] - 0.3) <= TOLERANCE and c["kl"] >= 0 for c in report.shape_search)
    chosen = [c for c in report.shape_search if c.get("chosen")]
    assert len(chosen) == 1 and chosen[0]["kl"] == min(c["kl"] for c in report.shape_search)
    assert model.config.hidden_size == chosen[0]["hidden_size"]
    assert report.parameters_after == chosen[0]["parameters"] == sum(p.numel() for p in model.parameters())
    assert "kl=" in report.summary()


def test_candidate_shapes_stay_within_bounds_and_on_multiples():
    space = ShapeSpace(StockShape(576, 3, 1536, 30), group_size=3, head_dim=64, biased=frozenset())
    shapes, hit = candidate_shapes(space, ("hidden_size", "heads", "ffn"), 0.2, 8, 0.4, 0.2)
    assert hit and shapes
    for shape in shapes:
        assert abs(space.ratio(shape) - 0.2) <= TOLERANCE
        assert shape.hidden_size % (shape.num_key_value_heads * 3) == 0 and shape.hidden_size % 8 == 0
        assert shape.intermediate_size % 8 == 0 and shape.intermediate_size >= 0.6 * 1536
        assert shape.num_hidden_layers == 30
    depth, hit = candidate_shapes(space, ("depth",), 0.35, 8, 0.4, 0.5)
    assert not hit and [s.num_hidden_layers for s in depth] == [20]  # 10 of 30 layers is the closest (33.3%)


def test_aggregations_over_tokens():
    sums = MagnitudeSums()
    sums.update(torch.tensor([[1.0, -3.0], [-1.0, 4.0]]))
    sums.update(torch.tensor([[2.0, 0.0]]))
    torch.testing.assert_close(sums.aggregate("mean"), torch.tensor([4 / 3, 7 / 3], dtype=torch.float64))
    torch.testing.assert_close(sums.aggregate("rms"), torch.tensor([2.0**0.5, (25 / 3) ** 0.5], dtype=torch.float64))
    x = torch.tensor([[[3.0, 4.0, 0.0, 1.0]]])
    torch.testing.assert_close(group_norms(x, 2), torch.tensor([[5.0, 1.0]]))


def test_depth_by_loss_measures_each_layer_and_drops_the_cheapest():
    model = tiny_model("llama-gqa", num_hidden_layers=4)
    with torch.no_grad():  # layer 2 barely changes the residual stream: removing it costs almost nothing
        layer = model.model.layers[2]
        layer.self_attn.o_proj.weight.mul_(1e-4)
        layer.mlp.down_proj.weight.mul_(1e-4)
    layers = list(model.model.layers)
    minitron(model, target_shape=dict(num_hidden_layers=3), depth_importance="loss")
    scores = model.config.minitron_search["layer_scores"]
    assert abs(scores[2]) < 1e-4 and all(abs(scores[i]) > 1e-3 for i in (0, 1, 3))
    dropped = min(range(4), key=scores.__getitem__)
    assert list(model.model.layers) == [layer for i, layer in enumerate(layers) if i != dropped]
    assert [layer.self_attn.layer_idx for layer in model.model.layers] == [0, 1, 2]


def test_olmo2_heads_axis_is_refused_naming_the_axis():
    with pytest.raises(UnsupportedArchitectureError, match="heads axis because its q_norm / k_norm"):
        minitron(tiny("olmo2"), pruning_ratio=0.2)


@pytest.mark.parametrize(("options", "message"), [
    (dict(minitron_axes="hidden_size,width"), "minitron_axes='hidden_size,width'"),
    (dict(target_shape={"hidden": 3}), "target_shape='hidden=3'"),
    (dict(max_width_pruning=1.5), "max_width_pruning=1.5"),
])
def test_bad_options_are_refused(options, message):
    with pytest.raises(ValueError, match=message):
        FlapConfig(method="minitron", **options)


def test_options_round_trip_through_json():
    config = FlapConfig(method="minitron", pruning_ratio=0.2, minitron_axes=("ffn", "depth"),
                        target_shape={"hidden_size": 512, "num_hidden_layers": 26})
    again = FlapConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert again.method_options.axes == ("ffn", "depth")
    assert again.method_options.shape == {"hidden_size": 512, "num_hidden_layers": 26}


def test_a_target_shape_the_stock_config_rejects_is_refused():
    with pytest.raises(ValueError, match="not a multiple of the 8 attention heads"):
        minitron(tiny_model("llama-gqa"), target_shape=dict(hidden_size=60))


def test_command_line_prunes_to_a_stock_checkpoint(tmp_path, capsys):
    from optimum_flap.commands.cli import main

    dense = tmp_path / "dense"
    tiny_model("llama-gqa", num_hidden_layers=4).save_pretrained(dense)
    ckpt_tiny_tokenizer().save_pretrained(dense)
    text = tmp_path / "calibration.txt"
    text.write_text(" ".join(f"w{i % 120}" for i in range(2000)))
    status = main(["prune", "--model", str(dense), "--method", "minitron", "--ratio", "0.3",
                   "--minitron-axes", "hidden_size,heads,ffn,depth", "--search-candidates", "3",
                   "--search-samples", "2", "--dataset", str(text), "--num-samples", "8", "--seq-len", "16",
                   "-o", str(tmp_path / "out")])
    assert status == 0
    out = capsys.readouterr().out
    assert out.startswith("minitron: removed") and out.count("kl=") == 3
    saved = json.loads((tmp_path / "out" / "config.json").read_text())
    assert saved["checkpoint_format"] == "stock" and "auto_map" not in saved
    assert saved["pruning_config"]["minitron_axes"] == "hidden_size,heads,ffn,depth"


def test_model_card_counts_what_the_report_counts(tmp_path):
    model = tiny_model("llama-gqa", num_hidden_layers=4)
    pruner = minitron(model, target_shape=TARGET, depth_importance="block")
    pruner.save_pretrained(tmp_path / "out")
    from optimum_flap.checkpoint.card import pruning_stats
    from optimum_flap.checkpoint.save import plan_checkpoint

    stats = pruning_stats(model, plan_checkpoint(model))
    assert stats["dense_decoder_linear_parameters"] == pruner.report.decoder_parameters_before
    assert stats["pruned_decoder_linear_parameters"] == pruner.report.decoder_parameters_after
    assert stats["achieved_ratio"] == pytest.approx(pruner.report.achieved_ratio)
    assert f"| {pruner.report.achieved_ratio:.4f} |" in (tmp_path / "out" / "README.md").read_text()
