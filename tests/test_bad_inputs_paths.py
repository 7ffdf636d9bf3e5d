"""Inputs that once worked on one path and failed on another, and errors that came late or unclear.

Each case asserts the exception type (or, for the command line, exit status 2 and one line on stderr),
that the message names the bad value and what is allowed, and for faults that no file was lost.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import ckpt_tiny_model, ckpt_tiny_tokenizer

from optimum_flap import FlapConfig, FlapPruner, load_pruned_model
from optimum_flap.data import CalibrationDataError
from optimum_flap.privacy import file_sha256

CALIBRATION = torch.randint(3, 128, (4, 16), generator=torch.Generator().manual_seed(0)).tolist()


def _hashes(root: Path) -> dict[str, str]:
    """Relative path -> SHA-256 of every file under `root`."""
    return {str(p.relative_to(root)): file_sha256(p) for p in sorted(root.rglob("*")) if p.is_file()}


def _recipe(**changes) -> FlapConfig:
    fields = dict(method="flap", pruning_ratio=0.3, dataset=CALIBRATION, num_samples=4, seq_len=16, batch_size=2)
    return FlapConfig(**{**fields, **changes})


@pytest.fixture(scope="module")
def dense(tmp_path_factory) -> Path:
    """A tiny Llama checkpoint with its tokenizer."""
    path = tmp_path_factory.mktemp("dense") / "model"
    ckpt_tiny_model("llama", num_layers=3).save_pretrained(path)
    ckpt_tiny_tokenizer().save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def no_tokenizer(tmp_path_factory) -> Path:
    """The same tiny Llama saved without any tokenizer file."""
    path = tmp_path_factory.mktemp("bare") / "model"
    ckpt_tiny_model("llama", num_layers=3).save_pretrained(path)
    return path


# -- a checkpoint without a tokenizer -----------------------------------------------------------------

@pytest.mark.parametrize("streamed", [False, True], ids=["in-memory", "streamed"])
def test_checkpoint_without_tokenizer_prunes_on_token_ids(no_tokenizer, tmp_path, streamed):
    kwargs = {"offload_folder": tmp_path / "offload"} if streamed else {}
    pruner = FlapPruner.from_pretrained(no_tokenizer, config=_recipe(), **kwargs)
    assert pruner.tokenizer is None
    pruner.prune(tmp_path / "out")
    reloaded = load_pruned_model(tmp_path / "out")
    assert reloaded.config.pruning_layout == pruner.model.config.pruning_layout
    assert not (tmp_path / "out" / "tokenizer.json").exists()


def test_checkpoint_without_tokenizer_and_text_data_is_refused_before_loading(no_tokenizer, monkeypatch):
    import transformers

    def never(*args, **kwargs):
        raise AssertionError("the model was loaded before the tokenizer was checked")

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", never)
    with pytest.raises(CalibrationDataError) as error:
        FlapPruner.from_pretrained(no_tokenizer, config=_recipe(dataset="wikitext2"))
    message = str(error.value)
    assert str(no_tokenizer) in message and "has no tokenizer" in message
    assert "dataset='wikitext2' is text" in message and "pass token ids" in message
