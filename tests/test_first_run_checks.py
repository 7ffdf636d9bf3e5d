"""Checks that fail at once instead of after minutes: output directories, model references, --version."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ckpt_make_pruned, ckpt_tiny_model, ckpt_tiny_tokenizer

from optimum_flap import FlapConfig, FlapPruner
from optimum_flap.checkpoint import build_model_card, check_output_dir, plan_checkpoint
from optimum_flap.utils.model_ref import ModelNotFoundError, resolve_model_reference

REPO = Path(__file__).resolve().parent.parent


def test_output_dir_rule(tmp_path):
    assert check_output_dir(tmp_path / "new") == (tmp_path / "new").absolute()
    (tmp_path / "empty").mkdir()
    check_output_dir(tmp_path / "empty")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(FileExistsError, match="full is not empty.*overwrite"):
        check_output_dir(tmp_path / "full")
    with pytest.raises(FileExistsError, match="'x', which is not part of a checkpoint"):
        check_output_dir(tmp_path / "full", overwrite=True)  # overwrite replaces a checkpoint, nothing else
    with pytest.raises(FileExistsError, match="not a directory"):
        check_output_dir(tmp_path / "full" / "x", overwrite=True)
    (tmp_path / "ckpt").mkdir()
    for name in ("config.json", "model.safetensors", "README.md"):
        (tmp_path / "ckpt" / name).write_text("{}")
    with pytest.raises(FileExistsError, match="ckpt is not empty"):
        check_output_dir(tmp_path / "ckpt")
    assert check_output_dir(tmp_path / "ckpt", overwrite=True) == (tmp_path / "ckpt").absolute()


def test_prune_checks_the_save_directory_before_pruning(tmp_path):
    full = tmp_path / "full"
    full.mkdir()
    (full / "keep.txt").write_text("x")
    pruner = FlapPruner(FlapConfig(pruning_ratio=0.2, dataset=[[1, 2, 3, 4]] * 4, num_samples=4, seq_len=4))
    pruner.model, pruner.tokenizer = ckpt_tiny_model("llama"), ckpt_tiny_tokenizer()
    with pytest.raises(FileExistsError, match="not empty"):
        pruner.prune(save_directory=full)
    assert pruner.report is None  # nothing was pruned
    pruner.prune(save_directory=tmp_path / "saved")
    assert (tmp_path / "saved" / "config.json").is_file() and pruner.report.achieved_ratio > 0.1


def test_model_reference_rule(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "model").mkdir()
    with pytest.raises(ModelNotFoundError, match="out/model has no config.json"):
        resolve_model_reference("out/model")
    (tmp_path / "out" / "model" / "config.json").write_text("{}")
    assert resolve_model_reference("out/model") == "out/model"
    for typo in ("out/typo", "./typo", "../typo", "a/b/c", str(tmp_path / "typo")):
        with pytest.raises(ModelNotFoundError, match="typo|a/b/c"):
            resolve_model_reference(typo)
    assert resolve_model_reference("HuggingFaceTB/SmolLM2-135M") == "HuggingFaceTB/SmolLM2-135M"
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    with pytest.raises(ModelNotFoundError, match="not in the Hub cache"):
        resolve_model_reference("no-such-org/no-such-model")


def _cli(*args: str, extra_path: Path | None = None) -> tuple[subprocess.CompletedProcess, float]:
    paths = [str(extra_path) if extra_path else None, str(REPO), os.environ.get("PYTHONPATH")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, paths))}
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "optimum_flap.commands.cli", *args], capture_output=True,
                          text=True, stdin=subprocess.DEVNULL, timeout=120, env=env, cwd=REPO)
    return done, time.perf_counter() - start


def test_missing_local_model_fails_at_once_naming_it(tmp_path):
    """The path is checked before anything heavy is imported: with torch made unimportable it still fails cleanly."""
    missing = tmp_path / "typo"
    blocked = tmp_path / "blocked"
    (blocked / "torch").mkdir(parents=True)
    (blocked / "torch" / "__init__.py").write_text("raise ImportError('torch imported before the path check')\n")
    done, _ = _cli("eval", "--model", str(missing), "--max-windows", "1", extra_path=blocked)
    assert done.returncode == 2 and f"model directory not found: {missing}" in done.stderr, done.stderr


@pytest.mark.parametrize("method, used", [("flap", "true"), ("wanda-sp", "false")])
def test_card_shows_the_bias_compensation_that_was_used(method, used):
    model = ckpt_make_pruned(ckpt_tiny_model("llama"), [(2, 50), (1, 96), (2, 30)],
                             recipe=FlapConfig(method=method, pruning_ratio=0.3).to_dict())
    card = str(build_model_card(model, plan=plan_checkpoint(model)))
    assert f'"bias_compensation": {used}' in card and '"bias_compensation": null' not in card


LOAD_TOKENIZER = """
import sys
from transformers import AutoTokenizer
kwargs = {"trust_remote_code": True} if sys.argv[2] == "flag" else {}
print(len(AutoTokenizer.from_pretrained(sys.argv[1], **kwargs)))
"""


def _saved_checkpoint(tmp_path: Path, checkpoint_format: str) -> Path:
    from optimum_flap.checkpoint import save_pruned_model

    sizes = [(2, 48)] * 3 if checkpoint_format == "stock" else [(2, 50), (1, 96), (2, 30)]
    model = ckpt_make_pruned(ckpt_tiny_model("llama"), sizes)
    path = tmp_path / checkpoint_format
    save_pruned_model(model, path, tokenizer=ckpt_tiny_tokenizer(), checkpoint_format=checkpoint_format)
    return path


def _load_tokenizer_plain(path: Path, flag: bool) -> subprocess.CompletedProcess:
    """Plain transformers in a fresh process (optimum-flap not imported), no terminal to answer a prompt."""
    return subprocess.run([sys.executable, "-c", LOAD_TOKENIZER, str(path), "flag" if flag else "none"],
                          capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=120, cwd=path.parent)


@pytest.mark.parametrize("checkpoint_format, flag", [("stock", False), ("stock", True),
                                                     ("flap-remote-code", False), ("flap-remote-code", True)])
def test_tokenizer_loads_with_plain_transformers_without_a_question(tmp_path, checkpoint_format, flag):
    """AutoTokenizer reads config.json first: the stock model_type lets it do so without asking about remote code."""
    done = _load_tokenizer_plain(_saved_checkpoint(tmp_path, checkpoint_format), flag)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "128" and "[y/N]" not in done.stdout + done.stderr

