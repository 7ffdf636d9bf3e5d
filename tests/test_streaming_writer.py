"""write_sharded_checkpoint: shard by shard, loadable by transformers, same logits as save_pretrained."""

from __future__ import annotations

import json
import weakref

import pytest
import torch
from conftest import ckpt_tiny_model
from transformers import AutoModelForCausalLM

from optimum_flap.streaming import StreamedCheckpoint, write_sharded_checkpoint

IDS = torch.tensor([[3, 14, 15, 92, 65, 35]])


def _logits(path) -> torch.Tensor:
    with torch.no_grad():
        return AutoModelForCausalLM.from_pretrained(path).eval()(IDS).logits


def test_streamed_write_loads_like_save_pretrained(tmp_path):
    model = ckpt_tiny_model("llama", kv_heads=2, num_layers=3)
    model.save_pretrained(tmp_path / "reference", max_shard_size="40KB")
    alive: list[int] = []  # bytes of yielded tensors still referenced, checked at every yield
    peak = 0

    def stream():
        nonlocal peak
        for name, tensor in model.state_dict().items():
            fresh = tensor.clone()
            alive.append(fresh.numel() * 4)
            weakref.finalize(fresh, alive.remove, fresh.numel() * 4)
            peak = max(peak, sum(alive))
            yield name, fresh
            del fresh

    weight_map = write_sharded_checkpoint(stream(), tmp_path / "streamed", max_shard_size="40KB")
    model.config.save_pretrained(tmp_path / "streamed")
    index = json.loads((tmp_path / "streamed" / "model.safetensors.index.json").read_text())
    assert index["weight_map"] == weight_map and len(set(weight_map.values())) >= 4
    assert index["metadata"]["total_size"] == sum(t.numel() * 4 for t in model.state_dict().values())
    assert not list((tmp_path / "streamed").glob("*.partial"))
    # one shard's tensors plus the one that overflowed it, never the whole model
    largest = max(t.numel() * 4 for t in model.state_dict().values())
    assert peak <= 40_000 + largest < index["metadata"]["total_size"] / 2
    torch.testing.assert_close(_logits(tmp_path / "streamed"), _logits(tmp_path / "reference"), rtol=0, atol=0)


def test_single_shard_and_round_trip_through_the_reader(tmp_path):
    model = ckpt_tiny_model("qwen3", kv_heads=2, num_layers=2, tie_word_embeddings=True)
    model.save_pretrained(tmp_path / "sharded", max_shard_size="20KB")
    with StreamedCheckpoint(tmp_path / "sharded") as streamed:
        weight_map = write_sharded_checkpoint(streamed.iter_state(), tmp_path / "copy", max_shard_size="1GB")
        streamed.model.config.save_pretrained(tmp_path / "copy")
    assert set(weight_map.values()) == {"model.safetensors"}
    assert not (tmp_path / "copy" / "model.safetensors.index.json").exists()
    with torch.no_grad():
        expected = model(IDS).logits
    torch.testing.assert_close(_logits(tmp_path / "copy"), expected, rtol=0, atol=0)


def test_rejects_duplicates_and_empty_streams(tmp_path):
    with pytest.raises(ValueError, match="'a' appears twice"):
        write_sharded_checkpoint([("a", torch.ones(2)), ("a", torch.ones(2))], tmp_path / "dup")
    with pytest.raises(ValueError, match="no tensors to write"):
        write_sharded_checkpoint([], tmp_path / "empty")
