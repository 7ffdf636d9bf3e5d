"""End to end: prune with FlapPruner (every structure, every family), save, reload, same model."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import ckpt_tiny_model, ckpt_tiny_tokenizer
from transformers import AutoTokenizer

from optimum_flap import FlapConfig, FlapPruner, load_pruned_model

ARCHS = [("llama-mha", "llama", 4), ("llama-gqa", "llama", 2), ("mistral", "mistral", 2),
         ("qwen2", "qwen2", 2), ("qwen3", "qwen3", 2)]
STRUCTURES = ["UL-UM", "UL-MM", "AL-MM", "AL-AM"]
CALIBRATION = torch.randint(3, 128, (8, 32), generator=torch.Generator().manual_seed(0)).tolist()
IDS = torch.tensor([[1, 5, 9, 33, 4, 77, 12, 100], [1, 64, 3, 3, 90, 21, 8, 50]])


def _recipe(structure: str, kv_heads: int, ratio: float = 0.4) -> FlapConfig:
    # manual structures remove whole key/value groups: 4 heads / kv_heads per group, 3 layers
    remove_heads = {"UL-MM": 3 * (4 // kv_heads), "AL-MM": 2 * (4 // kv_heads)}.get(structure)
    return FlapConfig(pruning_ratio=ratio, structure=structure, remove_heads=remove_heads, dataset=CALIBRATION,
                      num_samples=8, seq_len=32, batch_size=4)


def _outputs(model):
    with torch.no_grad():
        logits = model(IDS).logits
        tokens = model.generate(IDS[:1], max_new_tokens=10, do_sample=False, use_cache=True, pad_token_id=0)
    return logits, tokens


@pytest.mark.parametrize("structure", STRUCTURES)
@pytest.mark.parametrize(("family", "kv_heads"), [a[1:] for a in ARCHS], ids=[a[0] for a in ARCHS])
def test_pruned_model_round_trips(tmp_path, family, kv_heads, structure):
    model = ckpt_tiny_model(family, kv_heads=kv_heads)
    FlapPruner(_recipe(structure, kv_heads)).prune_model(model)
    logits, tokens = _outputs(model)
    FlapPruner.save(model, tmp_path / "ckpt", tokenizer=ckpt_tiny_tokenizer())

    config = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    assert config["pruning_config"]["structure"] == structure
    assert config["checkpoint_format"] in ("stock", "flap-remote-code")
    if structure.startswith("AL"):
        assert config["checkpoint_format"] == "flap-remote-code"  # adaptive: layers differ
    reloaded = load_pruned_model(tmp_path / "ckpt")
    new_logits, new_tokens = _outputs(reloaded)
    torch.testing.assert_close(new_logits, logits, atol=1e-5, rtol=0)
    assert torch.equal(new_tokens, tokens)
    assert AutoTokenizer.from_pretrained(tmp_path / "ckpt") is not None


def test_pruner_save_pretrained_bfloat16(tmp_path):
    model = ckpt_tiny_model("qwen3", dtype=torch.bfloat16)
    pruner = FlapPruner(_recipe("AL-AM", 2))
    pruner.prune_model(model, ckpt_tiny_tokenizer())
    pruner.save_pretrained(tmp_path / "ckpt")
    reloaded = load_pruned_model(tmp_path / "ckpt")
    assert reloaded.dtype == torch.bfloat16
    torch.testing.assert_close(_outputs(reloaded)[0], _outputs(model)[0], atol=0, rtol=0)
    assert AutoTokenizer.from_pretrained(tmp_path / "ckpt")("w1 w2")["input_ids"] == [5, 6]
    with pytest.raises(FileExistsError):
        pruner.save_pretrained(tmp_path / "ckpt")
