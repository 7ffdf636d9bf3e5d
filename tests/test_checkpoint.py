"""Pruned checkpoints: save, reload with transformers, and get the same model back."""

from __future__ import annotations

import json
import os

import pytest
import torch
from conftest import ckpt_make_pruned, ckpt_tiny_model, ckpt_tiny_tokenizer
from safetensors import safe_open
from tiny_models import calibration_ids
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
from transformers.integrations.heterogeneity.configuration_utils import AmbiguousGlobalPerLayerAttributeError

from optimum_flap import FlapConfig, FlapPruner
from optimum_flap.architectures import ARCHITECTURES
from optimum_flap.checkpoint import (
    REMOTE_CODE_FORMAT,
    STOCK_FORMAT,
    CheckpointError,
    load_pruned_model,
    plan_checkpoint,
    save_pruned_model,
)
from optimum_flap.checkpoint import save as save_module
from optimum_flap.models import FlapLlamaConfig

#: (id, family, kv heads of the dense model)
ARCHS = [
    ("llama-mha", "llama", 4),
    ("llama-gqa", "llama", 2),
    ("mistral", "mistral", 2),
    ("qwen2", "qwen2", 2),
    ("qwen3", "qwen3", 2),
]


def _layers(kind: str, kv_heads: int) -> list[tuple[int, int]]:
    """(kv groups kept, MLP channels kept) per layer for a structure kind."""
    if kind == "heterogeneous":
        return [(1, 40), (kv_heads, 96), (max(1, kv_heads - 1), 7)]
    if kind == "uniform":
        return [(1, 48)] * 3
    return [(1, 1)] * 3  # pruned down to the minimum: one head group, one channel


def _input_ids() -> torch.Tensor:
    return torch.tensor([[1, 5, 9, 33, 4, 77, 12, 100], [1, 64, 3, 3, 90, 21, 8, 50]])


def _logits(model, ids=None) -> torch.Tensor:
    with torch.no_grad():
        return model(ids if ids is not None else _input_ids()).logits


def _generate(model) -> torch.Tensor:
    with torch.no_grad():
        return model.generate(
            _input_ids()[:1], max_new_tokens=10, do_sample=False, use_cache=True, pad_token_id=0
        )


def _expected_format(family: str, kind: str) -> str:
    # with bias compensation on o_proj and down_proj, only Llama's stock config (attention_bias +
    # mlp_bias) can hold the biases, and only uniform layouts fit a stock config
    return STOCK_FORMAT if family == "llama" and kind != "heterogeneous" else REMOTE_CODE_FORMAT


@pytest.mark.parametrize("kind", ["heterogeneous", "uniform", "minimum"])
@pytest.mark.parametrize(("family", "kv_heads"), [a[1:] for a in ARCHS], ids=[a[0] for a in ARCHS])
def test_reload_matches_in_memory_model(tmp_path, family, kv_heads, kind):
    model = ckpt_make_pruned(ckpt_tiny_model(family, kv_heads=kv_heads), _layers(kind, kv_heads))
    expected_logits, expected_tokens = _logits(model), _generate(model)

    plan = save_pruned_model(model, tmp_path / "ckpt", ckpt_tiny_tokenizer())
    assert plan.checkpoint_format == _expected_format(family, kind)
    config = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    assert config["checkpoint_format"] == plan.checkpoint_format
    assert config["model_type"] == family  # both kinds: stock readers (AutoTokenizer) need no remote code
    assert config["pruning_config"] == model.config.pruning_config
    assert "quantization_config" not in config
    assert not list((tmp_path / "ckpt").glob("*.bin")) and not list((tmp_path / "ckpt").glob("*.pt"))

    reloaded = load_pruned_model(tmp_path / "ckpt")
    assert type(reloaded) is plan.model_class  # the stock class for stock checkpoints, ours otherwise
    assert reloaded.dtype == torch.float32
    torch.testing.assert_close(_logits(reloaded), expected_logits, atol=1e-5, rtol=0)
    assert torch.equal(_generate(reloaded), expected_tokens)
    # the modules have the recorded sizes
    for layer, (kv_keep, inter) in zip(reloaded.model.layers, _layers(kind, kv_heads), strict=True):
        assert layer.self_attn.k_proj.out_features == kv_keep * 16
        assert layer.mlp.down_proj.in_features == inter
        assert layer.self_attn.num_key_value_groups == 4 // kv_heads


@pytest.mark.parametrize("family", ["llama", "mistral", "qwen2", "qwen3"])
def test_uniform_without_output_bias_is_stock(tmp_path, family):
    model = ckpt_make_pruned(
        ckpt_tiny_model(family), [(1, 48)] * 3, attention_output_bias=False, mlp_output_bias=False
    )
    plan = save_pruned_model(model, tmp_path / "ckpt")
    assert plan.checkpoint_format == STOCK_FORMAT
    files = sorted(p.name for p in (tmp_path / "ckpt").iterdir())
    assert not [f for f in files if f.endswith(".py")], files
    config = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    assert config["model_type"] == family and "auto_map" not in config
    assert config["num_attention_heads"] == 2 and config["intermediate_size"] == 48 and config["head_dim"] == 16
    assert config["dense_sizes"] == {"num_attention_heads": 4, "num_key_value_heads": 2, "intermediate_size": 96}
    reloaded = load_pruned_model(tmp_path / "ckpt")
    assert type(reloaded) is ARCHITECTURES[family].classes.stock_model_class
    torch.testing.assert_close(_logits(reloaded), _logits(model), atol=1e-5, rtol=0)


def test_qwen3_attention_bias_flag_holds_o_proj_bias(tmp_path):
    """Qwen3's `attention_bias` covers o_proj, so a uniform prune with attention compensation only is stock."""
    model = ckpt_make_pruned(ckpt_tiny_model("qwen3"), [(1, 48)] * 3, mlp_output_bias=False)
    plan = save_pruned_model(model, tmp_path / "ckpt")
    assert plan.checkpoint_format == STOCK_FORMAT
    assert plan.config.attention_bias is True
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "ckpt")
    torch.testing.assert_close(_logits(reloaded), _logits(model), atol=1e-5, rtol=0)
    with safe_open(tmp_path / "ckpt" / "model.safetensors", "pt") as f:  # zero q/k/v biases were added
        assert torch.count_nonzero(f.get_tensor("model.layers.0.self_attn.q_proj.bias")) == 0


def test_llama_heads_not_dividing_hidden_uses_remote_code(tmp_path):
    """LlamaConfig requires hidden_size % num_attention_heads == 0: 3 heads of 16 in a 64-wide model can't be stock."""
    model = ckpt_make_pruned(ckpt_tiny_model("llama", kv_heads=4), [(3, 48)] * 3)
    plan = save_pruned_model(model, tmp_path / "ckpt")
    assert plan.checkpoint_format == REMOTE_CODE_FORMAT
    assert "stock config rejects" in plan.reason
    with pytest.raises(CheckpointError, match="stock format"):
        plan_checkpoint(model, "stock")
    reloaded = load_pruned_model(tmp_path / "ckpt")
    torch.testing.assert_close(_logits(reloaded), _logits(model), atol=1e-5, rtol=0)


def test_forced_formats(tmp_path):
    model = ckpt_make_pruned(ckpt_tiny_model("llama"), [(1, 48)] * 3)
    with pytest.raises(CheckpointError, match="different sizes"):
        plan_checkpoint(ckpt_make_pruned(ckpt_tiny_model("llama"), _layers("heterogeneous", 2)), "stock")
    plan = save_pruned_model(model, tmp_path / "ckpt", checkpoint_format=REMOTE_CODE_FORMAT)
    assert plan.checkpoint_format == REMOTE_CODE_FORMAT
    torch.testing.assert_close(_logits(load_pruned_model(tmp_path / "ckpt")), _logits(model), atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="checkpoint_format"):
        plan_checkpoint(model, "pickle")


def test_per_layer_config_is_native_schema(tmp_path):
    model = ckpt_make_pruned(ckpt_tiny_model("llama"), _layers("heterogeneous", 2))
    save_pruned_model(model, tmp_path / "ckpt")
    raw = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    assert raw["per_layer_config"] == {
        "0": {"num_attention_heads": 2, "num_key_value_heads": 1, "intermediate_size": 40},
        "1": {"num_attention_heads": 4, "num_key_value_heads": 2, "intermediate_size": 96},
        "2": {"num_attention_heads": 2, "num_key_value_heads": 1, "intermediate_size": 7},
    }
    # global sizes are the dense model's; per-layer bias flags are only for o_proj / down_proj
    assert (raw["num_attention_heads"], raw["intermediate_size"], raw["head_dim"]) == (4, 96, 16)
    assert raw["attention_output_bias"] and raw["mlp_output_bias"] and not raw["attention_bias"]
    config = AutoConfig.from_pretrained(tmp_path / "ckpt")
    assert config.is_heterogeneous
    assert [config.per_layer_config[i].intermediate_size for i in range(3)] == [40, 96, 7]
    from transformers.configuration_utils import get_head_shapes

    assert get_head_shapes(config) == ([1, 2, 1], 16)  # transformers' own per-layer machinery reads it


def test_dense_global_sizes_with_unpruned_layer(tmp_path):
    """A layer left at the dense size still gets an explicit per_layer_config entry."""
    model = ckpt_make_pruned(ckpt_tiny_model("mistral"), [(2, 96), (1, 10), (2, 96)])
    save_pruned_model(model, tmp_path / "ckpt")
    raw = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    assert sorted(raw["per_layer_config"]) == ["0", "1", "2"]
    torch.testing.assert_close(_logits(load_pruned_model(tmp_path / "ckpt")), _logits(model), atol=1e-5, rtol=0)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("kind", ["heterogeneous", "uniform"])
def test_dtype_is_preserved(tmp_path, dtype, kind):
    model = ckpt_make_pruned(ckpt_tiny_model("llama", dtype=dtype), _layers(kind, 2))
    save_pruned_model(model, tmp_path / "ckpt")
    assert json.loads((tmp_path / "ckpt" / "config.json").read_text())["dtype"] == str(dtype).split(".")[1]
    with safe_open(tmp_path / "ckpt" / "model.safetensors", "pt") as f:
        assert f.get_tensor("model.layers.0.mlp.down_proj.bias").dtype == dtype
    reloaded = load_pruned_model(tmp_path / "ckpt")
    assert reloaded.dtype == dtype
    assert {p.dtype for p in reloaded.parameters()} == {dtype}
    torch.testing.assert_close(_logits(reloaded), _logits(model), atol=0, rtol=0)


def test_sharded_save(tmp_path):
    model = ckpt_make_pruned(ckpt_tiny_model("qwen2"), _layers("heterogeneous", 2))
    save_pruned_model(model, tmp_path / "ckpt", max_shard_size="40KB")
    shards = sorted((tmp_path / "ckpt").glob("model-*.safetensors"))
    assert len(shards) > 1
    index = json.loads((tmp_path / "ckpt" / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"].values()) == {s.name for s in shards}
    reloaded = load_pruned_model(tmp_path / "ckpt")
    torch.testing.assert_close(_logits(reloaded), _logits(model), atol=1e-5, rtol=0)


def test_tokenizer_and_tied_embeddings(tmp_path):
    model = ckpt_make_pruned(ckpt_tiny_model("llama", tie_word_embeddings=True), _layers("heterogeneous", 2))
    tokenizer = ckpt_tiny_tokenizer()
    save_pruned_model(model, tmp_path / "ckpt", tokenizer)
    loaded_tok = AutoTokenizer.from_pretrained(tmp_path / "ckpt")
    assert loaded_tok("w1 w2 w77")["input_ids"] == tokenizer("w1 w2 w77")["input_ids"]
    reloaded = load_pruned_model(tmp_path / "ckpt")
    assert reloaded.lm_head.weight.data_ptr() == reloaded.model.embed_tokens.weight.data_ptr()
    ids = torch.tensor([loaded_tok("w1 w2 w77 w5")["input_ids"]])
    torch.testing.assert_close(_logits(reloaded, ids), _logits(model, ids), atol=1e-5, rtol=0)


def test_save_does_not_touch_the_model(tmp_path):
    model = ckpt_make_pruned(ckpt_tiny_model("qwen3"), _layers("uniform", 2))  # stock path adds zero biases
    before_config = model.config.to_dict()
    before_state = {k: v.clone() for k, v in model.state_dict().items()}
    before_logits = _logits(model)
    save_pruned_model(model, tmp_path / "ckpt")
    assert model.config.to_dict() == before_config
    state = model.state_dict()
    assert state.keys() == before_state.keys()
    assert all(torch.equal(state[k], before_state[k]) for k in state)
    assert model.model.layers[0].self_attn.q_proj.bias is None
    torch.testing.assert_close(_logits(model), before_logits, atol=0, rtol=0)


@pytest.mark.parametrize("kind", ["heterogeneous", "uniform"])
def test_resave_reloaded_model(tmp_path, kind):
    model = ckpt_make_pruned(ckpt_tiny_model("llama"), _layers(kind, 2))
    first = save_pruned_model(model, tmp_path / "a")
    reloaded = load_pruned_model(tmp_path / "a")
    second = save_pruned_model(reloaded, tmp_path / "b")
    assert second.checkpoint_format == first.checkpoint_format
    a = json.loads((tmp_path / "a" / "config.json").read_text())
    b = json.loads((tmp_path / "b" / "config.json").read_text())
    assert a == b
    torch.testing.assert_close(_logits(load_pruned_model(tmp_path / "b")), _logits(model), atol=1e-5, rtol=0)


def test_load_pruned_model_reads_config_with_the_flap_class(tmp_path):
    """config.json lets stock classes read the dense global sizes; our loader must not go through them."""
    model = ckpt_make_pruned(ckpt_tiny_model("llama"), _layers("heterogeneous", 2))
    save_pruned_model(model, tmp_path / "ckpt")
    assert json.loads((tmp_path / "ckpt" / "config.json").read_text())["allow_global_per_layer_attribute_access"]
    reloaded = load_pruned_model(tmp_path / "ckpt")
    assert type(reloaded.config) is FlapLlamaConfig
    with pytest.raises(AmbiguousGlobalPerLayerAttributeError):  # strict again in memory
        reloaded.config.num_attention_heads  # noqa: B018


@pytest.mark.parametrize("method", ["flap", "cfsp"])
def test_a_reloaded_per_layer_checkpoint_can_be_pruned_again(tmp_path, method):
    """Its config refuses reads of the global (dense) sizes, which the pruning methods need: pruning it
    must give what pruning the same model in memory gives."""
    model = ckpt_make_pruned(ckpt_tiny_model("llama"), _layers("heterogeneous", 2))
    save_pruned_model(model, tmp_path / "ckpt", ckpt_tiny_tokenizer())
    config = FlapConfig(method=method, pruning_ratio=0.1, dataset=calibration_ids())
    pruner = FlapPruner.from_pretrained(tmp_path / "ckpt", config)
    before = [layer.mlp.down_proj.in_features for layer in pruner.model.model.layers]
    again = pruner.prune()
    in_memory = FlapPruner(config)
    in_memory.prune_model(model)

    def sizes(m):
        return [(layer.self_attn.k_proj.out_features, layer.mlp.down_proj.in_features) for layer in m.model.layers]

    assert sizes(again) == sizes(model) and sum(size for _, size in sizes(again)) < sum(before)
    assert pruner.report.achieved_ratio == in_memory.report.achieved_ratio > 0
    torch.testing.assert_close(_logits(again), _logits(model), atol=1e-5, rtol=0)


def test_attention_implementation_switch_reaches_pruned_layers(tmp_path):
    model = ckpt_make_pruned(ckpt_tiny_model("qwen2"), _layers("heterogeneous", 2))
    save_pruned_model(model, tmp_path / "ckpt")
    reloaded = load_pruned_model(tmp_path / "ckpt", attn_implementation="sdpa")
    reloaded.set_attn_implementation("eager")
    assert all(layer.self_attn.config._attn_implementation == "eager" for layer in reloaded.model.layers)
    torch.testing.assert_close(_logits(reloaded), _logits(model), atol=1e-5, rtol=0)


def test_static_cache_generation(tmp_path):
    model = ckpt_make_pruned(ckpt_tiny_model("llama"), _layers("heterogeneous", 2))
    save_pruned_model(model, tmp_path / "ckpt")
    reloaded = load_pruned_model(tmp_path / "ckpt")
    with torch.no_grad():
        static = reloaded.generate(
            _input_ids()[:1], max_new_tokens=6, do_sample=False, cache_implementation="static", pad_token_id=0
        )
    assert torch.equal(static, _generate(model)[:, : static.shape[1]])


@pytest.mark.parametrize("family", ["llama", "mistral", "qwen2", "qwen3"])
def test_flap_model_sets_the_same_attributes_as_stock(family):
    """The flap classes re-implement `<Family>Model.__init__`; catch a transformers release adding attributes."""
    stock = ckpt_tiny_model(family, num_layers=1)
    config = ARCHITECTURES[family].classes.flap_config_class(**{**stock.config.to_dict(), "head_dim": 16})
    flap = ARCHITECTURES[family].classes.flap_model_class(config)
    assert set(vars(flap.model)) == set(vars(stock.model))
    assert set(vars(flap)) == set(vars(stock))
    assert set(flap.state_dict()) == set(stock.state_dict())


def test_refuses_non_empty_directory(tmp_path):
    model = ckpt_make_pruned(ckpt_tiny_model("llama"), _layers("heterogeneous", 2))
    target = tmp_path / "ckpt"
    target.mkdir()
    save_pruned_model(model, target)  # an existing empty directory is fine
    with pytest.raises(FileExistsError, match="overwrite=True"):
        save_pruned_model(model, target)
    (tmp_path / "file").write_text("x")
    with pytest.raises(FileExistsError, match="not a directory"):
        save_pruned_model(model, tmp_path / "file")
    (target / "stale.txt").write_text("old")
    other = ckpt_make_pruned(ckpt_tiny_model("llama", seed=1), _layers("uniform", 2))
    with pytest.raises(FileExistsError, match="holds 'stale.txt', which is not part of a checkpoint"):
        save_pruned_model(other, target, overwrite=True)  # a file we did not write is never deleted
    assert (target / "stale.txt").read_text() == "old"
    (target / "stale.txt").unlink()
    save_pruned_model(other, target, overwrite=True)
    torch.testing.assert_close(_logits(load_pruned_model(target)), _logits(other), atol=1e-5, rtol=0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt", "file"]  # no staging or backup left


class _ExplodingTokenizer:
    def save_pretrained(self, directory):
        with open(os.path.join(directory, "tokenizer.json"), "w") as f:
            f.write("{")  # half-written
        raise OSError("disk full")


def test_failed_save_leaves_nothing(tmp_path):
    model = ckpt_make_pruned(ckpt_tiny_model("llama"), _layers("heterogeneous", 2))
    with pytest.raises(OSError, match="disk full"):
        save_pruned_model(model, tmp_path / "ckpt", _ExplodingTokenizer())
    assert list(tmp_path.iterdir()) == []


def test_failed_overwrite_keeps_the_old_checkpoint(tmp_path, monkeypatch):
    model = ckpt_make_pruned(ckpt_tiny_model("llama"), _layers("heterogeneous", 2))
    target = tmp_path / "ckpt"
    save_pruned_model(model, target)
    before = {p.name: p.read_bytes() for p in target.iterdir()}

    def fail(*args, **kwargs):
        raise RuntimeError("interrupted")

    monkeypatch.setattr(save_module.os, "replace", fail)  # fails at the very last step, the move
    with pytest.raises(RuntimeError, match="interrupted"):
        save_pruned_model(model, target, overwrite=True)
    monkeypatch.undo()
    assert {p.name: p.read_bytes() for p in target.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]


def test_inconsistent_layout_is_rejected(tmp_path):
    model = ckpt_make_pruned(ckpt_tiny_model("llama"), _layers("heterogeneous", 2))
    model.config.pruning_layout["layers"][0]["intermediate_size"] = 41
    with pytest.raises(CheckpointError, match="does not match"):
        save_pruned_model(model, tmp_path / "ckpt")
    assert not (tmp_path / "ckpt").exists()


def test_unpruned_model_saves_as_stock(tmp_path):
    model = ckpt_tiny_model("qwen2")
    plan = save_pruned_model(model, tmp_path / "ckpt")
    assert plan.checkpoint_format == STOCK_FORMAT
    torch.testing.assert_close(_logits(load_pruned_model(tmp_path / "ckpt")), _logits(model), atol=1e-5, rtol=0)
