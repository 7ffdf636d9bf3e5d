"""minitron beyond one process in memory: streamed from disk to disk, and two gloo processes."""

from __future__ import annotations

import json
import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from conftest import ckpt_tiny_model, ckpt_tiny_tokenizer
from test_scale import CALIBRATION, IDS, _assert_same_checkpoint, _free_port, _tensors

from optimum_flap import FlapConfig, FlapPruner, load_pruned_model

SHAPE = dict(hidden_size=48, num_key_value_heads=1, intermediate_size=64, num_hidden_layers=3)


@pytest.fixture(scope="module")
def sharded(tmp_path_factory):
    """A tiny GQA llama with 4 blocks saved in small shards, with a tokenizer (as test_scale's)."""
    path = tmp_path_factory.mktemp("dense")
    ckpt_tiny_model("llama", kv_heads=2, num_layers=4).save_pretrained(path, max_shard_size="40KB")
    ckpt_tiny_tokenizer().save_pretrained(path)
    return path


def _recipe(**options) -> FlapConfig:
    return FlapConfig(method="minitron", dataset=CALIBRATION, num_samples=8, seq_len=16, batch_size=2, **options)


def test_streamed_prune_on_every_axis_saves_the_in_memory_tensors(sharded, tmp_path):
    recipe = dict(target_shape=SHAPE, depth_importance="block")
    reference = FlapPruner.from_pretrained(sharded, config=_recipe(**recipe))
    reference.prune()
    reference.save_pretrained(tmp_path / "in-memory")
    pruner = FlapPruner.from_pretrained(sharded, config=_recipe(**recipe), offload_folder=tmp_path / "offload")
    assert pruner.model.model.layers[0].mlp.down_proj.weight.is_meta
    pruner.prune()
    assert pruner.streamed.peak_loaded == 1
    assert pruner.report.achieved_ratio == reference.report.achieved_ratio
    pruner.save_pretrained(tmp_path / "streamed", max_shard_size="30KB")
    _assert_same_checkpoint(tmp_path / "in-memory", tmp_path / "streamed")
    saved = json.loads((tmp_path / "streamed" / "config.json").read_text())
    assert (saved["hidden_size"], saved["num_hidden_layers"], saved["checkpoint_format"]) == (48, 3, "stock")
    with torch.no_grad():
        torch.testing.assert_close(load_pruned_model(tmp_path / "streamed")(IDS).logits, reference.model(IDS).logits)


def test_streamed_search_is_refused_before_work_with_the_way_out(sharded, tmp_path):
    """A shape guessed without scoring would differ from the in-memory answer: a streamed search is refused."""
    for options in (dict(pruning_ratio=0.3), dict(target_shape=dict(num_hidden_layers=3), depth_importance="loss")):
        pruner = FlapPruner.from_pretrained(sharded, config=_recipe(**options), offload_folder=tmp_path / "o")
        with pytest.raises(ValueError, match=r"needs the whole model in memory; this one is streamed or offloaded\. "
                                             r"Give target_shape=\.\.\."):
            pruner.prune(tmp_path / "out")
        assert pruner.report is None and not (tmp_path / "out").exists()


def _prune_in_rank(rank: int, world_size: int, port: int, dense: str, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size)
    try:
        pruner = FlapPruner.from_pretrained(dense, config=_recipe(pruning_ratio=0.3, search_candidates=3,
                                                                  search_samples=2))
        pruner.prune()
        pruner.save_pretrained(os.path.join(out, "pruned"))
        torch.save({"search": pruner.report.shape_search}, os.path.join(out, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_two_gloo_processes_give_the_single_process_shape(sharded, tmp_path):
    single = FlapPruner.from_pretrained(sharded, config=_recipe(pruning_ratio=0.3, search_candidates=3,
                                                                search_samples=2))
    single.prune()
    single.save_pretrained(tmp_path / "in-memory")
    mp.spawn(_prune_in_rank, args=(2, _free_port(), str(sharded), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{rank}.pt") for rank in range(2)]
    shapes = [[{k: v for k, v in c.items() if k != "kl"} for c in r["search"]] for r in ranks]
    expected = [{k: v for k, v in c.items() if k != "kl"} for c in single.report.shape_search]
    assert shapes[0] == shapes[1] == expected  # the same candidates and the same choice on every rank
    assert sorted(_tensors(tmp_path / "pruned")) == sorted(_tensors(tmp_path / "in-memory"))
    _assert_same_checkpoint(tmp_path / "in-memory", tmp_path / "pruned", exact=False)
