"""StreamedCheckpoint: a sharded tiny checkpoint, materialised one block at a time, gives the same logits."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import ckpt_tiny_model, narrow_mlp

from optimum_flap.streaming import StreamedCheckpoint


@pytest.fixture(scope="module")
def sharded(tmp_path_factory):
    """A tiny GQA llama (4 blocks, untied lm_head) saved in many small shards."""
    model = ckpt_tiny_model("llama", kv_heads=2, num_layers=4)
    path = tmp_path_factory.mktemp("sharded")
    model.save_pretrained(path, max_shard_size="40KB")
    return model, path


def _stream_forward(streamed: StreamedCheckpoint, ids: torch.Tensor) -> torch.Tensor:
    """A normal forward where each block is read just before it runs and released right after."""
    loaded: list[int] = []

    def load(index):
        def hook(_module, _args):
            assert all(p.is_meta for block in streamed.blocks for p in block.parameters())
            streamed.load_block(index)
            loaded.append(index)
        return hook

    def release(index):
        return lambda _module, _args, _output: streamed.release_block(index)

    handles = []
    for index, block in enumerate(streamed.blocks):
        handles.append(block.register_forward_pre_hook(load(index)))
        handles.append(block.register_forward_hook(release(index)))
    try:
        with torch.no_grad():
            logits = streamed.model(ids).logits
    finally:
        for handle in handles:
            handle.remove()
    assert loaded == list(range(len(streamed.blocks)))
    return logits


def test_block_by_block_forward_equals_full_model(sharded):
    model, path = sharded
    assert len(json.loads((path / "model.safetensors.index.json").read_text())["weight_map"]) > 0
    assert len(set(json.loads((path / "model.safetensors.index.json").read_text())["weight_map"].values())) >= 4
    ids = torch.tensor([[1, 5, 9, 33, 7, 100, 3]])
    with StreamedCheckpoint(path) as streamed:
        assert all(p.is_meta for p in streamed.model.parameters())
        torch.testing.assert_close(streamed.model.model.rotary_emb.inv_freq, model.model.rotary_emb.inv_freq)
        streamed.load_non_block()
        assert streamed.model.model.embed_tokens.weight.device.type == "cpu"
        assert all(p.is_meta for p in streamed.blocks.parameters())
        logits = _stream_forward(streamed, ids)
    with torch.no_grad():
        expected = model(ids).logits
    torch.testing.assert_close(logits, expected, rtol=1e-5, atol=1e-5)


def test_tied_embeddings_and_bfloat16(tmp_path):
    model = ckpt_tiny_model("qwen3", kv_heads=2, num_layers=2, tie_word_embeddings=True, dtype=torch.bfloat16)
    model.save_pretrained(tmp_path, max_shard_size="20KB")
    ids = torch.tensor([[4, 8, 15, 16, 23, 42]])
    with StreamedCheckpoint(tmp_path) as streamed:
        assert streamed.dtype == torch.bfloat16
        streamed.load_non_block()
        assert streamed.model.lm_head.weight is streamed.model.model.embed_tokens.weight
        assert "lm_head.weight" not in dict(streamed.iter_state())
        logits = _stream_forward(streamed, ids)
    with torch.no_grad():
        torch.testing.assert_close(logits, model(ids).logits)


def test_offloaded_block_keeps_its_new_shapes(sharded, tmp_path):
    """A block changed in memory (here: a narrower MLP) is written to the offload folder and read back."""
    _model, path = sharded
    with StreamedCheckpoint(path, offload_folder=tmp_path / "offload") as streamed:
        block = streamed.load_block(1)
        mlp = block.mlp
        narrow_mlp(mlp, torch.tensor([0, 3, 5, 90]), torch.arange(mlp.down_proj.out_features, dtype=torch.float32))
        expected = {name: tensor.clone() for name, tensor in block.state_dict().items()}
        streamed.offload_block(1)
        streamed.release_block(1)
        assert block.mlp.gate_proj.weight.is_meta and block.mlp.gate_proj.weight.shape == (4, 64)
        reloaded = streamed.load_block(1)
        for name, tensor in reloaded.state_dict().items():
            assert torch.equal(tensor, expected[name]), name
        streamed.release_block(1)
        state = dict(streamed.iter_state())
    assert state["model.layers.1.mlp.down_proj.bias"].tolist() == list(range(64))
    assert state["model.layers.1.mlp.up_proj.weight"].shape == (4, 64)
    assert state["model.layers.2.mlp.up_proj.weight"].shape == (96, 64)
    assert not any(tensor.is_meta for tensor in state.values())


def test_errors_name_the_problem(tmp_path, sharded):
    with pytest.raises(FileNotFoundError, match="neither model.safetensors nor model.safetensors.index.json"):
        StreamedCheckpoint(tmp_path)
    with StreamedCheckpoint(sharded[1]) as streamed:
        with pytest.raises(IndexError, match="block 4 does not exist; the model has 4 blocks"):
            streamed.load_block(4)
        with pytest.raises(ValueError, match="needs an offload_folder"):
            streamed.offload_block(0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_blocks_run_on_the_gpu_from_a_cpu_checkpoint(sharded):
    model, path = sharded
    ids = torch.tensor([[1, 5, 9, 33, 7, 100, 3]])
    with StreamedCheckpoint(path, device="cuda") as streamed:
        streamed.load_non_block()
        assert streamed.model.model.embed_tokens.weight.device.type == "cuda"
        assert streamed.model.model.rotary_emb.inv_freq.device.type == "cuda"
        logits = _stream_forward(streamed, ids.to("cuda"))
    with torch.no_grad():
        expected = model(ids).logits
    torch.testing.assert_close(logits.cpu(), expected, rtol=1e-4, atol=1e-4)
