"""A model dispatched by accelerate with blocks on disk: weights readable, surgery kept, saved and reloaded."""

from __future__ import annotations

import pytest
import torch
from conftest import ckpt_tiny_model, narrow_mlp
from torch import nn
from transformers import AutoModelForCausalLM

from optimum_flap.streaming import iter_dispatched_state, onloaded, write_sharded_checkpoint

DEVICE_MAP = {"model.embed_tokens": "cpu", "model.layers.0": "cpu", "model.layers.1": "disk",
              "model.layers.2": "disk", "model.norm": "cpu", "model.rotary_emb": "cpu", "lm_head": "cpu"}
IDS = torch.tensor([[1, 7, 19, 44, 3, 90, 12]])
KEEP = torch.tensor([2, 5, 11, 40, 41, 77])


@pytest.fixture
def dispatched(tmp_path):
    dense = ckpt_tiny_model("llama", kv_heads=2, num_layers=3)
    dense.save_pretrained(tmp_path / "dense", max_shard_size="60KB")
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "dense", device_map=DEVICE_MAP,
                                                 offload_folder=tmp_path / "offload").eval()
    return dense, model, tmp_path


def _narrow_mlp(mlp: nn.Module) -> None:
    narrow_mlp(mlp, KEEP, torch.linspace(-1, 1, mlp.down_proj.out_features))


def test_offloaded_weights_are_real_inside_onloaded(dispatched):
    dense, model, _ = dispatched
    block = model.model.layers[2]
    assert block.mlp.down_proj.weight.is_meta  # what made scoring fail with "Tensor on device meta"
    with onloaded(block):
        assert torch.equal(block.mlp.down_proj.weight, dense.model.layers[2].mlp.down_proj.weight)
        assert torch.equal(block.input_layernorm.weight, dense.model.layers[2].input_layernorm.weight)
    assert block.mlp.down_proj.weight.is_meta


def test_surgery_on_offloaded_blocks_is_kept_saved_and_reloaded(dispatched):
    dense, model, tmp_path = dispatched
    for index in range(3):
        _narrow_mlp(dense.model.layers[index].mlp)
        with onloaded(model.model.layers[index], write_back=True):
            _narrow_mlp(model.model.layers[index].mlp)
    down = model.model.layers[1].mlp.down_proj
    assert down.weight.is_meta and down.weight.shape == (64, len(KEEP))  # offloaded again, new shape
    assert (tmp_path / "offload" / "model.layers.1.mlp.down_proj.bias.dat").is_file()
    with torch.no_grad():
        expected = dense(IDS).logits
        torch.testing.assert_close(model(IDS).logits, expected)

    write_sharded_checkpoint(iter_dispatched_state(model), tmp_path / "pruned", max_shard_size="40KB")
    model.config.intermediate_size = len(KEEP)
    model.config.mlp_bias = False
    model.config.save_pretrained(tmp_path / "pruned")
    state = dict(iter_dispatched_state(model))
    assert not any(tensor.is_meta for tensor in state.values())
    assert torch.equal(state["model.layers.2.mlp.down_proj.bias"], torch.linspace(-1, 1, 64))
    # the stock class has no down_proj bias: check the saved tensors, then reload the rest and compare
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "pruned").eval()
    for name, tensor in reloaded.state_dict().items():
        torch.testing.assert_close(tensor, dense.state_dict()[name], rtol=0, atol=0)


def test_surgery_under_cpu_offload_hooks():
    """accelerate.cpu_offload keeps the weights in an in-memory map: surgery results go there."""
    from accelerate import cpu_offload

    dense = ckpt_tiny_model("llama", kv_heads=2, num_layers=2)
    model = ckpt_tiny_model("llama", kv_heads=2, num_layers=2)
    cpu_offload(model, execution_device=torch.device("cpu"))
    assert model.model.layers[0].mlp.up_proj.weight.is_meta
    for index in range(2):
        _narrow_mlp(dense.model.layers[index].mlp)
        with onloaded(model.model.layers[index], write_back=True):
            _narrow_mlp(model.model.layers[index].mlp)
    assert model.model.layers[1].mlp.up_proj.weight.is_meta
    with torch.no_grad():
        torch.testing.assert_close(model(IDS).logits, dense(IDS).logits)
    state = dict(iter_dispatched_state(model))
    assert set(state) == set(dense.state_dict())
    for name, tensor in dense.state_dict().items():
        assert torch.equal(state[name], tensor), name
