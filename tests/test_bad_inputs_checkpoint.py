"""Faults around checkpoints: what overwrite may delete, interrupted swaps, corrupt or edited checkpoints,
GGUF-loaded models and local paths. Each fault checks the exception and, where data is at stake,
the SHA-256 of every file before and after."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import ckpt_make_pruned, ckpt_tiny_model, ckpt_tiny_tokenizer
from transformers import GgufConfig

from optimum_flap import FlapConfig
from optimum_flap.checkpoint import CheckpointError, load_pruned_model, save_pruned_model
from optimum_flap.checkpoint.target import (
    OutputDirectoryError,
    check_output_dir,
    journal_path,
    recover_swap,
    replace_directory,
)
from optimum_flap.privacy import file_sha256, publishable_model_name, publishable_recipe

TESTS = Path(__file__).resolve().parent
LAYERS = [(1, 40), (2, 96), (1, 7)]
IDS = torch.tensor([[1, 5, 9, 33, 4, 77, 12, 100]])


def _hashes(root: Path) -> dict[str, str]:
    """Relative path -> SHA-256 of every file under `root` (hidden ones included)."""
    return {str(p.relative_to(root)): file_sha256(p) for p in sorted(root.rglob("*")) if p.is_file()}


def _logits(model) -> torch.Tensor:
    with torch.no_grad():
        return model(IDS).logits


@pytest.fixture
def model():
    return ckpt_make_pruned(ckpt_tiny_model("llama"), LAYERS)


@pytest.fixture
def other():
    return ckpt_make_pruned(ckpt_tiny_model("llama", seed=1), LAYERS)


# ------------------------------------------------------------------------------ what overwrite deletes


def test_overwrite_refuses_the_current_directory(tmp_path, monkeypatch, model):
    work = tmp_path / "work"
    work.mkdir()
    (work / "notes.txt").write_text("my notes")
    save_pruned_model(model, work / "ckpt")
    before = _hashes(tmp_path)
    monkeypatch.chdir(work)
    for target in (".", "..", str(work)):
        with pytest.raises(OutputDirectoryError, match="is the current directory or contains it"):
            save_pruned_model(model, target, overwrite=True)
    assert _hashes(tmp_path) == before
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.chdir(empty)  # an empty current directory would be moved away by the swap
    with pytest.raises(OutputDirectoryError, match="Save to a new sub-directory"):
        save_pruned_model(model, ".")
    assert empty.is_dir() and Path.cwd() == empty.resolve()


def test_overwrite_refuses_a_directory_with_other_files_naming_one(tmp_path, model, other):
    target = tmp_path / "ckpt"
    save_pruned_model(model, target)
    (target / "train.log").write_text("epoch 1")
    before = _hashes(tmp_path)
    with pytest.raises(OutputDirectoryError, match=r"holds 'train\.log', which is not part of a checkpoint"):
        save_pruned_model(other, target, overwrite=True)
    (target / "runs").mkdir()  # a sub-directory is never part of a checkpoint either
    with pytest.raises(OutputDirectoryError, match=r"holds 'runs'"):
        check_output_dir(target, overwrite=True)
    (target / "runs").rmdir()
    assert _hashes(tmp_path) == before


def test_overwrite_refuses_a_config_without_weights(tmp_path):
    target = tmp_path / "half"
    target.mkdir()
    (target / "config.json").write_text("{}")
    (target / "README.md").write_text("card")
    with pytest.raises(OutputDirectoryError, match=r"config\.json but no weights file.*'config\.json' would be"):
        check_output_dir(target, overwrite=True)
    (target / "config.json").unlink()
    with pytest.raises(OutputDirectoryError, match=r"holds no config\.json.*'README\.md' would be deleted"):
        check_output_dir(target, overwrite=True)
    assert check_output_dir(tmp_path / "new", overwrite=False) == tmp_path / "new"


def test_overwrite_replaces_a_checkpoint_with_its_tokenizer(tmp_path, model, other):
    target = tmp_path / "ckpt"
    save_pruned_model(model, target, ckpt_tiny_tokenizer())
    save_pruned_model(other, target, ckpt_tiny_tokenizer(), overwrite=True)
    torch.testing.assert_close(_logits(load_pruned_model(target)), _logits(other), atol=1e-5, rtol=0)
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]


# ------------------------------------------------------------------------------- interrupted swaps


def _fake_checkpoint(directory: Path, content: str) -> None:
    directory.mkdir()
    (directory / "config.json").write_text(json.dumps({"v": content}))
    (directory / "model.safetensors").write_text(content)


def _swap_state(tmp_path: Path, stage: str) -> tuple[Path, dict[str, str], dict[str, str]]:
    """A target whose swap was killed at `stage`; returns (target, old hashes, new hashes)."""
    target, staging, backup = tmp_path / "ckpt", tmp_path / ".ckpt.x.partial", tmp_path / ".ckpt.replaced-1"
    _fake_checkpoint(target, "old")
    _fake_checkpoint(staging, "new")
    old, new = _hashes(target), _hashes(staging)
    journal_path(target).write_text(json.dumps({"staging": staging.name, "backup": backup.name}))
    if stage in ("between renames", "between renames, staging lost", "after renames"):
        os.replace(target, backup)
    if stage == "between renames, staging lost":
        for f in staging.iterdir():
            f.unlink()
        staging.rmdir()
    if stage == "after renames":
        os.replace(staging, target)
    return target, old, new


@pytest.mark.parametrize(
    "stage,outcome,kept",
    [
        ("before first rename", "finished", "new"),
        ("between renames", "finished", "new"),
        ("between renames, staging lost", "rolled back", "old"),
        ("after renames", "finished", "new"),
    ],
)
def test_recover_swap_at_every_kill_point(tmp_path, stage, outcome, kept):
    target, old, new = _swap_state(tmp_path, stage)
    assert recover_swap(target) == outcome
    assert _hashes(target) == {"old": old, "new": new}[kept]
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]  # no journal, backup or staging left
    assert recover_swap(target) is None


def test_half_written_journal_is_discarded(tmp_path):
    target, old, _ = _swap_state(tmp_path, "before first rename")
    journal_path(target).write_text('{"stag')
    assert recover_swap(target) is None
    assert _hashes(target) == old and not journal_path(target).exists()


def test_failure_between_renames_keeps_the_old_checkpoint(tmp_path, monkeypatch, model, other):
    """os.replace dies after the first rename, and on every call after (as if the process had died)."""
    target = tmp_path / "ckpt"
    save_pruned_model(model, target)
    before = _hashes(target)
    real_replace, calls = os.replace, []

    def replace(src, dst):
        calls.append((src, dst))
        if len(calls) > 1:
            raise OSError("killed")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(OSError, match="killed"):
        save_pruned_model(other, target, overwrite=True)
    monkeypatch.undo()
    assert not target.exists() and journal_path(target).exists()  # the state a kill leaves
    torch.testing.assert_close(_logits(load_pruned_model(target)), _logits(model), atol=1e-5, rtol=0)
    assert _hashes(target) == before
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]


KILL_SCRIPT = """
import os, sys
sys.path.insert(0, {tests!r})
from conftest import ckpt_make_pruned, ckpt_tiny_model
from optimum_flap.checkpoint import save_pruned_model
model = ckpt_make_pruned(ckpt_tiny_model("llama", seed=1), {layers!r})
real_replace, calls = os.replace, []
def replace(src, dst):
    calls.append(dst)
    if len(calls) == 2:
        os._exit(9)  # SIGKILL-like: no except, no finally, no cleanup
    real_replace(src, dst)
os.replace = replace
save_pruned_model(model, {target!r}, overwrite=True)
"""


def test_kill_between_renames_is_finished_by_the_next_load(tmp_path, model, other):
    target = tmp_path / "ckpt"
    save_pruned_model(model, target)
    old = _hashes(target)
    script = KILL_SCRIPT.format(tests=str(TESTS), layers=LAYERS, target=str(target))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS.parent), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 9, proc.stderr
    assert not target.exists() and journal_path(target).exists()
    backup = next(tmp_path.glob(".ckpt.replaced-*"))
    assert _hashes(backup) == old  # the old checkpoint is intact, only hidden
    torch.testing.assert_close(_logits(load_pruned_model(target)), _logits(other), atol=1e-5, rtol=0)
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]


def test_replace_directory_into_a_new_target_needs_no_journal(tmp_path):
    _fake_checkpoint(tmp_path / "staged", "new")
    replace_directory(tmp_path / "staged", tmp_path / "ckpt")
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]


# --------------------------------------------------------------------------- loading bad checkpoints


def test_load_missing_directory_names_it(tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # fail at once, no network wait
    with pytest.raises(FileNotFoundError, match=f"No checkpoint directory at {tmp_path / 'absent'}"):
        load_pruned_model(tmp_path / "absent")
    with pytest.raises(FileNotFoundError, match="No checkpoint directory at absent-dir"):
        load_pruned_model("absent-dir")
    with pytest.raises(OSError, match="out/absent is not a local directory and could not be loaded from the Hub"):
        load_pruned_model("out/absent")  # could be a Hub id; offline the Hub refuses it


def test_load_directory_without_config_names_it(tmp_path):
    (tmp_path / "weights").mkdir()
    with pytest.raises(FileNotFoundError, match="holds no config.json"):
        load_pruned_model(tmp_path / "weights")


def test_load_truncated_safetensors_names_the_file(tmp_path, model):
    target = tmp_path / "ckpt"
    save_pruned_model(model, target)
    weights = target / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    with pytest.raises(CheckpointError, match=r"model\.safetensors is not a readable safetensors file .*truncated"):
        load_pruned_model(target)


def _edit_config(target: Path, **changes) -> None:
    config = json.loads((target / "config.json").read_text())
    for key, value in changes.items():
        if key == "layer0_intermediate_size":
            config["per_layer_config"]["0"]["intermediate_size"] = value
        else:
            config[key] = value
    (target / "config.json").write_text(json.dumps(config))


@pytest.mark.parametrize(
    "pruned,changes,message",
    [
        (True, {"layer0_intermediate_size": 41},
         r"mismatched tensor model\.layers\.0\.mlp\.down_proj\.weight: weights \[64, 40\], config implies \[64, 41\]"),
        (False, {"intermediate_size": 80},
         r"mismatched tensor model\.layers\.0\.mlp\.down_proj\.weight: weights \[64, 96\], config implies \[64, 80\]"),
        (False, {"num_hidden_layers": 2}, r"unexpected tensor model\.layers\.2\."),
        (False, {"num_hidden_layers": 4}, r"missing tensor model\.layers\.3\."),
    ],
)
def test_config_not_matching_the_weights_is_a_strict_error(tmp_path, model, pruned, changes, message):
    target = tmp_path / "ckpt"
    save_pruned_model(model if pruned else ckpt_tiny_model("llama"), target)
    _edit_config(target, **changes)
    with pytest.raises(CheckpointError, match=message + r".*Restore the config\.json saved with these weights"):
        load_pruned_model(target)


def test_strict_false_accepts_a_mismatch(tmp_path):
    target = tmp_path / "ckpt"
    save_pruned_model(ckpt_tiny_model("llama"), target)
    _edit_config(target, num_hidden_layers=2)
    assert len(load_pruned_model(target, strict=False).model.layers) == 2


# ------------------------------------------------------------------------------------ GGUF, privacy


def test_gguf_quantization_config_is_not_saved(tmp_path, model):
    model.config.quantization_config = GgufConfig(gguf_file=str(tmp_path / "model.Q4_1.gguf"), dequantize=True)
    save_pruned_model(model, tmp_path / "ckpt")
    config = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    assert "quantization_config" not in config
    reloaded = load_pruned_model(tmp_path / "ckpt")
    assert not getattr(reloaded, "is_quantized", False) and reloaded.dtype == torch.float32


def _text_files(root: Path) -> dict[str, str]:
    return {p.name: p.read_text(encoding="utf-8") for p in root.iterdir() if p.suffix in (".json", ".md", ".py")}


def test_checkpoint_records_names_and_hashes_not_local_paths(tmp_path, model):
    base = tmp_path / "models" / "dense-llama"
    calib = tmp_path / "data" / "calib.txt"
    calib.parent.mkdir(parents=True)
    calib.write_text("calibration text " * 50)
    model.name_or_path = model.config._name_or_path = str(base)
    model.config.pruning_config = FlapConfig(dataset=str(calib), pruning_ratio=0.2).to_dict()
    target = tmp_path / "ckpt"
    save_pruned_model(model, target, ckpt_tiny_tokenizer())
    for name, text in _text_files(target).items():
        assert str(tmp_path) not in text, name
    recipe = json.loads((target / "config.json").read_text())["pruning_config"]
    assert recipe["dataset"] == f"calib.txt@sha256:{hashlib.sha256(calib.read_bytes()).hexdigest()}"
    assert "dense-llama" in (target / "README.md").read_text()
    assert model.config.pruning_config["dataset"] == str(calib)  # the in-memory model is not changed


def test_recipe_reads_back_where_the_calibration_file_does_not_exist(tmp_path, model):
    calib = tmp_path / "calib.txt"
    calib.write_text("calibration text " * 50)
    model.config.pruning_config = FlapConfig(dataset=str(calib)).to_dict()
    save_pruned_model(model, tmp_path / "ckpt")
    calib.unlink()
    assert FlapConfig.from_pretrained(tmp_path / "ckpt").dataset.startswith("calib.txt@sha256:")


@pytest.mark.parametrize(
    "name,expected",
    [("HuggingFaceTB/SmolLM2-135M", "HuggingFaceTB/SmolLM2-135M"), ("/home/me/models/llama-7b/", "llama-7b"),
     ("~/llama", "llama"), (None, None)],
)
def test_publishable_model_name(name, expected):
    assert publishable_model_name(name) == expected


def test_publishable_recipe_keeps_names_and_hides_missing_paths():
    assert publishable_recipe({"dataset": "wikitext2", "seed": 3}) == {"dataset": "wikitext2", "seed": 3}
    assert publishable_recipe({"dataset": "/gone/dir/c4.jsonl"})["dataset"] == "c4.jsonl@sha256:unknown"
    assert publishable_recipe(None) is None
