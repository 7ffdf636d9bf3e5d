"""Every supported family beyond the Llama layout, on tiny random models built from its stock config.

Per family: the pipeline gives each block what the model's own forward gives it (statistics equal
hooks on a plain forward), every structured method prunes it at 0.3, the pruned model saves and
reloads with plain transformers with the same logits, generates, and removes 0.3 of the decoder's
linear parameters to within one unit.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from conftest import ckpt_tiny_tokenizer
from safetensors.torch import save_file
from test_checkpoint_plain_transformers import CHILD
from test_pipeline import forward_statistics, pipeline_statistics, statistics_match
from tiny_models import calibration_ids
from transformers import (
    AutoModelForCausalLM,
    Gemma2Config,
    Gemma2ForCausalLM,
    Gemma3ForCausalLM,
    Gemma3TextConfig,
    GraniteConfig,
    GraniteForCausalLM,
    Olmo2Config,
    Olmo2ForCausalLM,
    Phi3Config,
    Phi3ForCausalLM,
    SmolLM3Config,
    SmolLM3ForCausalLM,
)

from optimum_flap import FlapConfig, FlapPruner
from optimum_flap.accounting import layer_cost
from optimum_flap.architectures import UnsupportedArchitectureError, attention_geometry, get_architecture
from optimum_flap.engine.block_inputs import BlockBatch

SHAPE = dict(vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=4, num_attention_heads=4,
             num_key_value_heads=2, head_dim=16, max_position_embeddings=128, bos_token_id=1, eos_token_id=2,
             pad_token_id=0)
#: sliding window shorter than the calibration sequences, so local and global layers differ
GEMMA = dict(sliding_window=4, query_pre_attn_scalar=24,
             layer_types=["sliding_attention", "full_attention", "sliding_attention", "full_attention"])

#: name -> (config class, model class, config overrides)
FAMILIES = {
    "gemma2": (Gemma2Config, Gemma2ForCausalLM, dict(GEMMA, attn_logit_softcapping=5.0, final_logit_softcapping=3.0)),
    "gemma3": (Gemma3TextConfig, Gemma3ForCausalLM, GEMMA),
    "gemma3-1kv": (Gemma3TextConfig, Gemma3ForCausalLM, dict(GEMMA, num_key_value_heads=1)),
    "phi3": (Phi3Config, Phi3ForCausalLM, {}),
    "granite": (GraniteConfig, GraniteForCausalLM, dict(embedding_multiplier=3.0, residual_multiplier=0.5,
                                                        attention_multiplier=0.2, logits_scaling=4.0,
                                                        attention_bias=True, mlp_bias=True)),
    # layers 1 and 3 use no rotary embeddings (0 in no_rope_layers)
    "smollm3": (SmolLM3Config, SmolLM3ForCausalLM, dict(no_rope_layers=[1, 0, 1, 0])),
    "olmo2": (Olmo2Config, Olmo2ForCausalLM, {}),
}

#: recipe name -> FlapConfig options (UL-MM / AL-MM remove whole groups: one per layer / two in all)
RECIPES = {
    "flap-UL-UM": dict(structure="UL-UM"),
    "flap-AL-AM": dict(structure="AL-AM"),
    "flap-UL-MM": dict(structure="UL-MM", remove_heads="per-layer"),
    "flap-AL-MM": dict(structure="AL-MM", remove_heads="two"),
    "wanda-sp": dict(method="wanda-sp"),
    "magnitude-sp": dict(method="magnitude-sp"),
    "cfsp": dict(method="cfsp"),
}


def tiny(family: str, seed: int = 0) -> torch.nn.Module:
    config_class, model_class, overrides = FAMILIES[family]
    config = config_class(**{**SHAPE, **overrides})
    config._attn_implementation = "eager"
    torch.manual_seed(seed)
    model = model_class(config).eval()
    with torch.no_grad():  # non-trivial biases and norms, so that slicing mistakes show up
        for name, param in model.named_parameters():
            if name.endswith("bias") or "norm" in name:
                param.add_(0.1 * torch.randn_like(param))
    return model


def recipe_options(recipe: str, model) -> dict:
    options = dict(RECIPES[recipe])
    heads, kv_heads, _ = attention_geometry(model.config)
    group = heads // kv_heads
    # every layer keeps one group; OLMo-2 keeps them all
    removable_per_layer = 0 if get_architecture(model).head_removal_refused else kv_heads - 1
    if options.get("remove_heads") == "per-layer":
        options["remove_heads"] = group * removable_per_layer * model.config.num_hidden_layers
    elif options.get("remove_heads") == "two":
        options["remove_heads"] = group * min(2, removable_per_layer * model.config.num_hidden_layers)
    return options


def prune(model, recipe: str):
    config = FlapConfig(pruning_ratio=0.3, dataset=calibration_ids(num_samples=8, seq_len=16), batch_size=4,
                        **recipe_options(recipe, model))
    pruner = FlapPruner(config)
    pruner.prune_model(model)
    return pruner


@pytest.mark.parametrize("family", FAMILIES)
def test_pipeline_statistics_equal_a_plain_forward(family):
    model = tiny(family)
    assert statistics_match(pipeline_statistics(model), forward_statistics(model))


@pytest.mark.parametrize("recipe", RECIPES)
@pytest.mark.parametrize("family", FAMILIES)
def test_prune_save_reload(family, recipe, tmp_path):
    model = tiny(family)
    pruner = prune(model, recipe)
    arch = get_architecture(model)
    # within one unit (the largest: a head group) of the target
    heads, kv_heads, head_dim = attention_geometry(model.config)
    unit = max(layer_cost(layer, arch, heads // kv_heads, head_dim, False).group_cost
               for layer in arch.decoder_layers(model))
    report = pruner.report
    assert abs(report.achieved_ratio - 0.3) * report.decoder_parameters_before <= unit
    ids = torch.tensor(calibration_ids(num_samples=2, seq_len=12, seed=5))
    with torch.no_grad():
        expected = model(input_ids=ids).logits
    plan = pruner.save_pretrained(tmp_path / "pruned")
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "pruned", trust_remote_code=True).eval()
    reloaded.config._attn_implementation = "eager"
    assert type(reloaded).__name__.startswith("Flap") == (plan.checkpoint_format == "flap-remote-code")
    with torch.no_grad():
        torch.testing.assert_close(reloaded(input_ids=ids).logits, expected, rtol=1e-5, atol=1e-5)
    out = reloaded.generate(ids[:1], max_new_tokens=4, do_sample=False)
    assert out.shape == (1, 16)


def test_gemma3_global_layers_need_their_own_rotary_embeddings(monkeypatch):
    """Block 0's inputs alone (local rotary frequencies) give Gemma 3's global layers other statistics."""
    model = tiny("gemma3")
    expected = forward_statistics(model)
    monkeypatch.setattr(BlockBatch, "kwargs_for", lambda self, t: {**self.kwargs, "attention_mask": self.masks[t]})
    old = pipeline_statistics(model)
    full = [i for i, t in enumerate(model.config.layer_types) if t == "full_attention"]
    assert statistics_match([old[0]], [expected[0]])
    assert not any(statistics_match([old[i]], [expected[i]]) for i in full)


def test_single_key_value_head_prunes_only_the_mlp(caplog):
    model = tiny("gemma3-1kv")
    with caplog.at_level("INFO", logger="optimum_flap.pruner"):
        prune(model, "flap-AL-AM")
    layers = get_architecture(model).decoder_layers(model)
    assert all(layer.self_attn.q_proj.out_features == 4 * 16 for layer in layers)
    assert sum(layer.mlp.gate_proj.out_features for layer in layers) < 4 * 96
    assert "one key/value head" in caplog.text and "only MLP channels" in caplog.text


@pytest.mark.parametrize("model_type", ["mixtral", "qwen3_moe"])
def test_mixture_of_experts_is_refused_with_the_supported_families(model_type):
    from transformers import AutoConfig

    config = AutoConfig.for_model(model_type, **{k: v for k, v in SHAPE.items() if k != "head_dim"})
    with pytest.raises(UnsupportedArchitectureError, match="mixture-of-experts.*supported architectures: gemma2"):
        get_architecture(config)


@pytest.mark.parametrize("family", FAMILIES)
def test_uniform_prune_saves_in_the_stock_format(family, tmp_path):
    """UL-UM without compensation gives every layer the same sizes and no new bias: the stock config holds it."""
    model = tiny(family)
    config = FlapConfig(pruning_ratio=0.3, dataset=calibration_ids(num_samples=8, seq_len=16), batch_size=4,
                        structure="UL-UM", bias_compensation=False)
    pruner = FlapPruner(config)
    pruner.prune_model(model)
    ids = torch.tensor(calibration_ids(num_samples=2, seq_len=12, seed=5))
    with torch.no_grad():
        expected = model(input_ids=ids).logits
    plan = pruner.save_pretrained(tmp_path / "pruned")
    assert plan.checkpoint_format == "stock"
    reloaded = FAMILIES[family][1].from_pretrained(tmp_path / "pruned").eval()
    reloaded.config._attn_implementation = "eager"
    with torch.no_grad():
        torch.testing.assert_close(reloaded(input_ids=ids).logits, expected, rtol=1e-5, atol=1e-5)
    if family == "phi3":  # the fused layout at the pruned widths
        heads, kv_heads = reloaded.config.num_attention_heads, reloaded.config.num_key_value_heads
        assert (heads, kv_heads) == (2, 1)  # one group of two query heads left in every layer
        assert reloaded.model.layers[0].self_attn.qkv_proj.out_features == (heads + 2 * kv_heads) * 16
        assert reloaded.model.layers[0].mlp.gate_up_proj.out_features == 2 * reloaded.config.intermediate_size


def test_olmo2_keeps_every_head_and_refuses_a_head_count(caplog):
    model = tiny("olmo2")
    with caplog.at_level("INFO", logger="optimum_flap.pruner"):
        pruner = prune(model, "flap-AL-AM")
    layers = get_architecture(model).decoder_layers(model)
    assert all(layer.self_attn.q_proj.out_features == 4 * 16 for layer in layers)
    assert pruner.report.achieved_ratio > 0.25
    assert "q_norm / k_norm normalise all heads together" in caplog.text and "only MLP channels" in caplog.text
    config = FlapConfig(pruning_ratio=0.3, dataset=calibration_ids(), structure="UL-MM", remove_heads=8)
    with pytest.raises(UnsupportedArchitectureError, match="olmo2: attention heads cannot be removed because"):
        FlapPruner(config).prune_model(tiny("olmo2"))


def test_remote_code_checkpoints_load_without_optimum_flap(tmp_path):
    """The shipped model files alone (no optimum_flap) rebuild every family's pruned model exactly."""
    ids = torch.tensor([[1, 5, 9, 33, 4, 77, 12, 100], [1, 64, 3, 3, 90, 21, 8, 50]])
    cases = {}
    for family in FAMILIES:
        model = tiny(family)
        prune(model, "flap-AL-AM")  # bias compensation adds o/down biases: the remote-code format
        with torch.no_grad():
            logits = model(ids).logits
            tokens = model.generate(ids[:1], max_new_tokens=10, do_sample=False, pad_token_id=0)
        plan = FlapPruner.save(model, tmp_path / family, tokenizer=ckpt_tiny_tokenizer())
        assert plan.checkpoint_format == "flap-remote-code"
        expected = tmp_path / f"{family}.expected.safetensors"
        save_file({"ids": ids, "logits": logits, "tokens": tokens}, str(expected))
        cases[family] = {"dir": str(tmp_path / family), "format": plan.checkpoint_format, "expected": str(expected)}
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env.update(HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(tmp_path / "hf_modules"), TRANSFORMERS_VERBOSITY="error")
    proc = subprocess.run([sys.executable, "-I", "-c", CHILD, json.dumps(cases)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr[-4000:]
    results = json.loads(next(x for x in proc.stdout.splitlines() if x.startswith("RESULTS=")).removeprefix("RESULTS="))
    assert results.pop("optimum_flap_imported") is False
    for family, out in results.items():
        assert out["class"].startswith("transformers_modules.") and out["no_flag"] is True, (family, out)
        assert out["max_diff"] <= 1e-5 and out["same_tokens"], (family, out)
