"""write_sharded_checkpoint: shard by shard, loadable by transformers, same logits as save_pretrained."""

from __future__ import annotations

import json
import weakref

import pytest
import torch
from conftest import ckpt_tiny_model

from optimum_flap import load_pruned_model
from optimum_flap.streaming import StreamedCheckpoint, write_sharded_checkpoint

IDS = torch.tensor([[3, 14, 15, 92, 65, 35]])


def _logits(path) -> torch.Tensor:
    with torch.no_grad():
        return load_pruned_model(path).eval()(IDS).logits


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


def test_planned_layout_writes_tensors_in_any_order(tmp_path):
    from safetensors.torch import load_file

    generator = torch.Generator().manual_seed(0)
    tensors = {"a.weight": torch.randn(40, 30, generator=generator), "b.bias": torch.randn(7).to(torch.bfloat16),
               "c.index": torch.arange(12, dtype=torch.int64).reshape(3, 4), "d.scale": torch.tensor(2.5)}
    layout = {name: (tensor.shape, tensor.dtype) for name, tensor in tensors.items()}
    weight_map = write_sharded_checkpoint(reversed(list(tensors.items())), tmp_path / "planned",
                                          max_shard_size="4KB", layout=layout)
    assert set(weight_map.values()) == {"model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"}
    loaded = {}
    for file in set(weight_map.values()):
        loaded.update(load_file(tmp_path / "planned" / file))
    assert loaded.keys() == tensors.keys()
    assert all(torch.equal(loaded[name], tensors[name]) and loaded[name].dtype == tensors[name].dtype
               for name in tensors)
    with pytest.raises(ValueError, match="without 1 tensor"):
        write_sharded_checkpoint(list(tensors.items())[1:], tmp_path / "short", layout=layout)
    with pytest.raises(ValueError, match="the layout says"):
        write_sharded_checkpoint([("a.weight", torch.zeros(3))], tmp_path / "wrong", layout=layout)
