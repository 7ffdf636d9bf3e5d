"""One answer on every path: each registered method saves the same tensors however the model is held.

The reference is the in-memory prune (`FlapPruner.from_pretrained(path)`). Against it, for every method in
the registry (a method registered later is covered without editing this file):

* the streamed prune (`from_pretrained(path, offload_folder=...)`: blocks read from the checkpoint one at
  a time, pruned blocks written to the offload folder);
* the dispatched prune (accelerate `device_map` with blocks on "disk");
* a 2-process calibration (torch.distributed, gloo), where the statistics are merged across ranks.

Each path starts from two checkpoints: the dense tiny Llama, and the same model already pruned by FLAP
into a per-layer (remote-code) checkpoint, so re-pruning is covered too. The saved safetensors and the
pruning records of `config.json` must match the reference's (exactly; across processes to float32
rounding, since the merged sums are added in another order).
"""

from __future__ import annotations

import json
import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from conftest import ckpt_tiny_model, ckpt_tiny_tokenizer
from test_scale import _free_port, _tensors

from optimum_flap import FlapConfig, FlapPruner
from optimum_flap.methods import get_method_class, registered_methods

NUM_LAYERS = 4
CALIBRATION = torch.randint(3, 128, (4, 16), generator=torch.Generator().manual_seed(0)).tolist()
#: blocks 1 and 2 on disk, the rest in memory: both kinds of block in one dispatched model
DEVICE_MAP = {"model.embed_tokens": "cpu", "model.layers.0": "cpu", "model.layers.1": "disk",
              "model.layers.2": "disk", "model.layers.3": "cpu", "model.norm": "cpu", "model.rotary_emb": "cpu",
              "lm_head": "cpu"}
#: what config.json must agree on (besides the tensors)
RECORDS = ("checkpoint_format", "pruning_layout", "pruning_sparsity", "num_attention_heads", "num_key_value_heads",
           "intermediate_size", "per_layer_config")
INPUTS = ("dense", "pruned")

#: (method, path) pairs that cannot run, and why. A pair listed here is checked to be refused with a
#: clear error instead (so the exclusion goes stale, and fails, the day the method learns the path).
SINGLE_PROCESS_ONLY = {
    "magnitude": "the weight-level methods (MaskMethod) do not opt into supports_distributed; needs no data",
    "wanda": "its per-input-column norms are not merged across ranks",
    "sparsegpt": "its Hessians and sequential weight updates are not merged across ranks",
    "barber": "its block-error gradients are not merged across ranks",
}
#: options a method needs to run on every path: minitron's ratio search scores whole candidate models, so a
#: streamed or dispatched model is refused it (tests/test_minitron_scale.py); the matrix gives it a shape
PATH_OPTIONS = {"minitron": dict(target_shape=dict(hidden_size=48, num_key_value_heads=1, intermediate_size=64))}
#: (method, input) pairs refused on every path, with the message that says why: minitron writes a stock shape,
#: the same widths in every layer, which a per-layer checkpoint does not have
REFUSED_INPUTS = {("minitron", "pruned"): "minitron prunes a model whose layers all have the same widths"}


def _recipe(method: str) -> FlapConfig:
    return FlapConfig(method=method, pruning_ratio=0.3, dataset=CALIBRATION, num_samples=len(CALIBRATION),
                      seq_len=16, batch_size=2, **PATH_OPTIONS.get(method, {}))


def _refused(method: str, source: str, pruner: FlapPruner, output) -> bool:
    """For a pair of REFUSED_INPUTS: check that `pruner.prune(output)` refuses it with its message, and say so."""
    if (method, source) not in REFUSED_INPUTS:
        return False
    with pytest.raises(ValueError, match=REFUSED_INPUTS[method, source]):
        pruner.prune(output)
    return True


def _records(path) -> dict:
    config = json.loads((path / "config.json").read_text())
    return {key: config.get(key) for key in RECORDS}


def _assert_same_checkpoint(reference, other, exact: bool = True) -> None:
    a, b = _tensors(reference), _tensors(other)
    assert sorted(a) == sorted(b)
    for name in a:
        assert a[name].shape == b[name].shape and a[name].dtype == b[name].dtype, name
        if exact:
            assert torch.equal(a[name], b[name]), name
        else:
            torch.testing.assert_close(a[name], b[name], atol=1e-5, rtol=1e-5, msg=name)
    assert _records(reference) == _records(other)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, str]:
    """The two inputs: a dense tiny GQA Llama (small shards) and that model pruned by FLAP into per-layer sizes."""
    root = tmp_path_factory.mktemp("inputs")
    dense = root / "dense"
    ckpt_tiny_model("llama", kv_heads=2, num_layers=NUM_LAYERS).save_pretrained(dense, max_shard_size="40KB")
    ckpt_tiny_tokenizer().save_pretrained(dense)
    FlapPruner.from_pretrained(dense, config=_recipe("flap")).prune(root / "pruned")
    assert json.loads((root / "pruned" / "config.json").read_text())["checkpoint_format"] != "stock"
    return {"dense": str(dense), "pruned": str(root / "pruned")}


@pytest.fixture(scope="module")
def in_memory(checkpoints, tmp_path_factory) -> dict[tuple[str, str], str]:
    """The reference of every (method, input): the model loaded whole and pruned in memory."""
    root = tmp_path_factory.mktemp("in-memory")
    saved = {}
    for method in registered_methods():
        for source in INPUTS:
            saved[method, source] = root / f"{method}-{source}"
            pruner = FlapPruner.from_pretrained(checkpoints[source], config=_recipe(method))
            if not _refused(method, source, pruner, saved[method, source]):
                pruner.prune(saved[method, source])
    return saved


def test_the_matrix_covers_every_registered_method():
    assert {"flap", "cfsp", "wanda", "sparsegpt", "barber"} <= set(registered_methods())
    assert set(SINGLE_PROCESS_ONLY) <= set(registered_methods()), "an exclusion names a method that is gone"
    assert {m for m, _ in REFUSED_INPUTS} | set(PATH_OPTIONS) <= set(registered_methods())


@pytest.mark.parametrize("source", INPUTS)
@pytest.mark.parametrize("method", registered_methods())
def test_streamed_prune_saves_the_in_memory_tensors(method, source, checkpoints, in_memory, tmp_path):
    pruner = FlapPruner.from_pretrained(checkpoints[source], config=_recipe(method), offload_folder=tmp_path / "off")
    if _refused(method, source, pruner, tmp_path / "streamed"):
        return
    pruner.prune(tmp_path / "streamed")
    assert pruner.streamed.peak_loaded == 1
    _assert_same_checkpoint(in_memory[method, source], tmp_path / "streamed")


@pytest.mark.parametrize("source", INPUTS)
@pytest.mark.parametrize("method", registered_methods())
def test_dispatched_prune_saves_the_in_memory_tensors(method, source, checkpoints, in_memory, tmp_path):
    pruner = FlapPruner.from_pretrained(checkpoints[source], config=_recipe(method), device_map=DEVICE_MAP,
                                        offload_folder=tmp_path / "off")
    assert pruner.model.model.layers[1].mlp.down_proj.weight.is_meta  # on disk
    if _refused(method, source, pruner, tmp_path / "dispatched"):
        return
    pruner.prune(tmp_path / "dispatched")
    _assert_same_checkpoint(in_memory[method, source], tmp_path / "dispatched")


def _prune_every_method_in_rank(rank: int, world_size: int, port: int, checkpoints: dict, out: str) -> None:
    """One rank of the 2-process run: every method on every input, saved by rank 0; refusals written down."""
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size)
    refused = {}
    try:
        for method in registered_methods():
            for source in INPUTS:
                try:
                    pruner = FlapPruner.from_pretrained(checkpoints[source], config=_recipe(method))
                    pruner.prune(os.path.join(out, f"{method}-{source}"))
                except ValueError as error:
                    refused[f"{method}-{source}"] = str(error)
        with open(os.path.join(out, f"refused-rank{rank}.json"), "w") as file:
            json.dump(refused, file)
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def two_processes(checkpoints, tmp_path_factory):
    out = tmp_path_factory.mktemp("two-processes")
    # forked, not spawned: the ranks start without importing torch and transformers again
    mp.start_processes(_prune_every_method_in_rank, args=(2, _free_port(), checkpoints, str(out)), nprocs=2,
                       join=True, start_method="fork")
    return out, [json.loads((out / f"refused-rank{rank}.json").read_text()) for rank in range(2)]


@pytest.mark.parametrize("source", INPUTS)
@pytest.mark.parametrize("method", registered_methods())
def test_two_process_calibration_saves_the_in_memory_tensors(method, source, in_memory, two_processes):
    out, refused = two_processes
    key = f"{method}-{source}"
    if method in SINGLE_PROCESS_ONLY:  # refused clearly by every rank, before any work, and nothing saved
        assert not get_method_class(method).supports_distributed, f"{method} merges now: drop its exclusion"
        for messages in refused:
            assert f"method={method!r} cannot calibrate across 2 processes" in messages[key]
        assert not (out / key).exists()
        return
    if (method, source) in REFUSED_INPUTS:
        assert all(REFUSED_INPUTS[method, source] in messages[key] for messages in refused)
        return
    assert key not in refused[0] and key not in refused[1], (refused[0].get(key), refused[1].get(key))
    _assert_same_checkpoint(in_memory[method, source], out / key, exact=False)
