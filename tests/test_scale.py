"""Pruning beyond memory: streamed from disk to disk, accelerate-dispatched with disk layers, two processes."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from conftest import ckpt_tiny_model, ckpt_tiny_tokenizer
from safetensors import safe_open

from optimum_flap import FlapConfig, FlapPruner, load_pruned_model
from optimum_flap.commands.cli import ACTIVATION_STORAGES, main
from optimum_flap.engine import STORAGES
from optimum_flap.streaming import checkpoint_weight_map

CALIBRATION = torch.randint(3, 128, (8, 16), generator=torch.Generator().manual_seed(0)).tolist()
IDS = torch.tensor([[1, 5, 9, 33, 4, 77, 12, 100]])
DISK_MAP = {"model.embed_tokens": "cpu", "model.layers.0": "cpu", "model.layers.1": "disk",
            "model.layers.2": "disk", "model.layers.3": "disk", "model.norm": "cpu", "model.rotary_emb": "cpu",
            "lm_head": "cpu"}


def _recipe(method: str = "flap") -> FlapConfig:
    options = {"structure": "AL-AM"} if method == "flap" else {"cfsp_prune_attention": True}
    return FlapConfig(method=method, pruning_ratio=0.3, dataset=CALIBRATION, num_samples=8, seq_len=16, batch_size=2,
                      **options)


@pytest.fixture(scope="module")
def sharded(tmp_path_factory):
    """A tiny GQA llama with 4 blocks saved in small shards, with a tokenizer."""
    path = tmp_path_factory.mktemp("dense")
    ckpt_tiny_model("llama", kv_heads=2, num_layers=4).save_pretrained(path, max_shard_size="40KB")
    ckpt_tiny_tokenizer().save_pretrained(path)
    return path


def _tensors(path) -> dict[str, torch.Tensor]:
    tensors = {}
    for name, file in checkpoint_weight_map(path).items():
        with safe_open(file, framework="pt") as handle:
            tensors[name] = handle.get_tensor(name)
    return tensors


def _assert_same_checkpoint(left, right, exact: bool = True) -> None:
    """Same tensor names and values (to float tolerance unless `exact`), same layout and format."""
    a, b = _tensors(left), _tensors(right)
    assert sorted(a) == sorted(b)
    for name in a:
        if exact:
            assert torch.equal(a[name], b[name]), name
        else:  # statistics merged across processes: equal up to float32 rounding
            torch.testing.assert_close(a[name], b[name], atol=1e-5, rtol=1e-5)
    config_a, config_b = (json.loads((p / "config.json").read_text()) for p in (left, right))
    assert config_a["pruning_layout"] == config_b["pruning_layout"]
    assert config_a["checkpoint_format"] == config_b["checkpoint_format"]


def _text_recipe(tmp_path) -> FlapConfig:
    """The recipe with the calibration ids written as text, for the command line."""
    text = tmp_path / "calibration.txt"
    text.write_text(" ".join(f"w{i}" for row in CALIBRATION for i in row))
    recipe = _recipe()
    recipe.dataset = str(text)
    return recipe


def _cli_recipe(recipe: FlapConfig) -> list[str]:
    return ["--method", "flap", "--ratio", "0.3", "--structure", "AL-AM", "--dataset", recipe.dataset,
            "--num-samples", "8", "--seq-len", "16", "--batch-size", "2"]


def _in_memory(sharded, tmp_path, method: str = "flap", config: FlapConfig | None = None):
    """The reference: the whole model loaded and pruned in memory, saved to tmp_path / "in-memory"."""
    pruner = FlapPruner.from_pretrained(sharded, config=config or _recipe(method))
    pruner.prune()
    pruner.save_pretrained(tmp_path / "in-memory")
    return pruner


@pytest.mark.parametrize("method", ["flap", "cfsp"])
def test_streamed_prune_saves_the_in_memory_tensors_one_block_at_a_time(sharded, tmp_path, method):
    reference = _in_memory(sharded, tmp_path, method)
    pruner = FlapPruner.from_pretrained(sharded, config=_recipe(method), offload_folder=tmp_path / "offload")
    assert pruner.model.model.layers[0].mlp.down_proj.weight.is_meta  # nothing of the blocks is loaded
    pruner.prune()
    assert pruner.streamed.peak_loaded == 1 and not pruner.streamed.loaded
    assert pruner.report.achieved_ratio == pytest.approx(reference.report.achieved_ratio)
    pruner.save_pretrained(tmp_path / "streamed", max_shard_size="30KB")
    assert len(set(checkpoint_weight_map(tmp_path / "streamed").values())) > 2
    _assert_same_checkpoint(tmp_path / "in-memory", tmp_path / "streamed")
    reloaded = load_pruned_model(tmp_path / "streamed")
    with torch.no_grad():
        torch.testing.assert_close(reloaded(IDS).logits, reference.model(IDS).logits, atol=1e-5, rtol=0)


def test_streamed_prune_in_bfloat16_and_bad_dtype(sharded, tmp_path):
    with pytest.raises(ValueError, match="dtype='float99' is not a torch dtype"):
        FlapPruner.from_pretrained(sharded, config=_recipe(), offload_folder=tmp_path / "offload", dtype="float99")
    pruner = FlapPruner.from_pretrained(sharded, config=_recipe(), offload_folder=tmp_path / "offload",
                                        dtype="bfloat16")
    pruner.prune()
    pruner.save_pretrained(tmp_path / "bf16")
    assert {t.dtype for t in _tensors(tmp_path / "bf16").values()} == {torch.bfloat16}


def test_streamed_prune_from_the_cli(sharded, tmp_path):
    assert ACTIVATION_STORAGES == STORAGES
    recipe = _text_recipe(tmp_path)
    _in_memory(sharded, tmp_path, config=recipe)
    code = main(["prune", "--model", str(sharded), *_cli_recipe(recipe),
                 "--offload-folder", str(tmp_path / "offload"), "--activations", "disk",
                 "--output", str(tmp_path / "cli")])
    assert code == 0
    _assert_same_checkpoint(tmp_path / "in-memory", tmp_path / "cli")


def test_dispatched_model_with_disk_layers_prunes_saves_and_reloads(sharded, tmp_path):
    reference = _in_memory(sharded, tmp_path)
    pruner = FlapPruner.from_pretrained(sharded, config=_recipe(), device_map=DISK_MAP,
                                        offload_folder=tmp_path / "offload")
    assert pruner.model.model.layers[2].mlp.down_proj.weight.is_meta  # on disk
    pruner.prune()
    down = pruner.model.model.layers[2].mlp.down_proj
    assert down.weight.is_meta and down.weight.shape == reference.model.model.layers[2].mlp.down_proj.weight.shape
    with torch.no_grad():  # the dispatched model runs with the pruned weights read back from disk
        torch.testing.assert_close(pruner.model(IDS).logits, reference.model(IDS).logits, atol=1e-5, rtol=0)
    pruner.save_pretrained(tmp_path / "dispatched")
    _assert_same_checkpoint(tmp_path / "in-memory", tmp_path / "dispatched")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _prune_in_rank(rank: int, world_size: int, port: int, dense: str, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size)
    try:
        pruner = FlapPruner.from_pretrained(dense, config=_recipe())
        pruner.prune()
        pruner.save_pretrained(os.path.join(out, "pruned"))
        torch.save(_kept_and_biases(pruner.model), os.path.join(out, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def _kept_and_biases(model) -> dict:
    layers = model.model.layers
    return {"layout": model.config.pruning_layout,
            "biases": [(layer.self_attn.o_proj.bias.detach(), layer.mlp.down_proj.bias.detach()) for layer in layers]}


def test_two_gloo_processes_give_the_single_process_plan(sharded, tmp_path):
    single = _in_memory(sharded, tmp_path)
    expected = _kept_and_biases(single.model)
    mp.spawn(_prune_in_rank, args=(2, _free_port(), str(sharded), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{rank}.pt") for rank in range(2)]
    for result in ranks:
        assert result["layout"] == expected["layout"]  # same kept head groups and channels
        for (attention, mlp), (attention_ref, mlp_ref) in zip(result["biases"], expected["biases"]):
            torch.testing.assert_close(attention, attention_ref, atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(mlp, mlp_ref, atol=1e-5, rtol=1e-5)
    for left, right in zip(ranks[0]["biases"], ranks[1]["biases"]):
        assert all(torch.equal(a, b) for a, b in zip(left, right))  # every rank holds the same model
    assert sorted(_tensors(tmp_path / "pruned")) == sorted(_tensors(tmp_path / "in-memory"))  # rank 0 wrote


def test_torchrun_two_processes_stream_from_the_cli(sharded, tmp_path):
    """The documented multi-process command: each rank streams its share, rank 0 writes the same checkpoint."""
    recipe = _text_recipe(tmp_path)
    _in_memory(sharded, tmp_path, config=recipe)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "optimum_flap.commands.cli", "prune", "--model", str(sharded), *_cli_recipe(recipe),
               "--offload-folder", str(tmp_path / "offload"), "--output", str(tmp_path / "torchrun")]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(p.name for p in (tmp_path / "offload").iterdir()) == ["rank0", "rank1"]
    assert result.stdout.count("saved") == 2  # both ranks report; rank 0 wrote
    _assert_same_checkpoint(tmp_path / "in-memory", tmp_path / "torchrun", exact=False)


def test_method_without_merge_is_refused_across_processes(monkeypatch):
    from optimum_flap.methods.base import PruningMethod

    class Sequential(PruningMethod):  # a method that did not opt into `supports_distributed`
        name = "sequential"
        propagation = "pruned"

    monkeypatch.setattr("optimum_flap.pruner.distributed_world", lambda: (0, 2))
    monkeypatch.setattr("optimum_flap.pruner.get_method_class", lambda name: Sequential)
    with pytest.raises(ValueError, match="method='flap' cannot calibrate across 2 processes"):
        FlapPruner(_recipe()).prune_model(ckpt_tiny_model("llama"), ckpt_tiny_tokenizer())


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without a GPU")
def test_cuda_without_gpu_is_a_one_line_error(sharded, tmp_path, capsys):
    with pytest.raises(ValueError, match=r"device='cuda' is not available on this machine; available: cpu"):
        FlapPruner(_recipe(), device="cuda")
    code = main(["prune", "--model", str(sharded), "--device", "cuda", "--output", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "device='cuda' is not available" in err


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_streamed_blocks_run_on_the_gpu(sharded, tmp_path):
    reference = _in_memory(sharded, tmp_path)
    pruner = FlapPruner.from_pretrained(sharded, config=_recipe(), offload_folder=tmp_path / "offload",
                                        device="cuda")
    pruner.prune()
    pruner.save_pretrained(tmp_path / "streamed")
    reloaded = load_pruned_model(tmp_path / "streamed")
    assert reloaded.config.pruning_layout == reference.model.config.pruning_layout
    with torch.no_grad():
        torch.testing.assert_close(reloaded(IDS).logits, reference.model(IDS).logits, atol=1e-3, rtol=1e-3)
