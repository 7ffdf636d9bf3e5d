"""Inputs that once worked on one path and failed on another, and errors that came late or unclear.

Each case asserts the exception type (or, for the command line, exit status 2 and one line on stderr),
that the message names the bad value and what is allowed, and for faults that no file was lost.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
import torch
from conftest import ckpt_tiny_model, ckpt_tiny_tokenizer

from optimum_flap import FlapConfig, FlapPruner, load_pruned_model
from optimum_flap.checkpoint import CheckpointError
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


# -- bad weight files and configs that lie, refused before any weight is read -------------------------

PATHS = ["in-memory", "streamed"]


def _open(path: Path, tmp_path: Path, how: str) -> FlapPruner:
    kwargs = {"offload_folder": tmp_path / "offload"} if how == "streamed" else {}
    return FlapPruner.from_pretrained(path, config=_recipe(), **kwargs)


@pytest.fixture(scope="module")
def sharded(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("sharded") / "model"
    ckpt_tiny_model("llama", num_layers=3).save_pretrained(path, max_shard_size="40KB")
    ckpt_tiny_tokenizer().save_pretrained(path)
    return path


def _copy(source: Path, tmp_path: Path) -> Path:
    import shutil

    return Path(shutil.copytree(source, tmp_path / "copy"))


def _truncate(file: Path) -> None:
    file.write_bytes(file.read_bytes()[:5000])


def _empty(file: Path) -> None:
    file.write_bytes(b"")


def _garble_header(file: Path) -> None:
    data = file.read_bytes()
    file.write_bytes(data[:8] + b"{garbage" + data[16:])


@pytest.mark.parametrize("how", PATHS)
@pytest.mark.parametrize("fault", [_truncate, _empty, _garble_header], ids=["truncated", "empty", "bad-header"])
def test_unreadable_shard_is_refused_naming_the_file(dense, tmp_path, how, fault):
    model = _copy(dense, tmp_path)
    fault(model / "model.safetensors")
    with pytest.raises(CheckpointError, match="is not a readable safetensors file") as error:
        _open(model, tmp_path, how)
    assert str(model / "model.safetensors") in str(error.value) and "restore this file" in str(error.value)


@pytest.mark.parametrize("how", PATHS)
def test_index_naming_a_tensor_its_shard_lacks_is_refused(sharded, tmp_path, how):
    model = _copy(sharded, tmp_path)
    index_file = model / "model.safetensors.index.json"
    index = json.loads(index_file.read_text())
    files = sorted(set(index["weight_map"].values()))
    name = "model.layers.1.mlp.up_proj.weight"
    index["weight_map"][name] = next(f for f in files if f != index["weight_map"][name])
    index_file.write_text(json.dumps(index))
    with pytest.raises(CheckpointError, match=f"maps tensor '{name}' to {index['weight_map'][name]}, which does "
                                              "not hold it"):
        _open(model, tmp_path, how)
    index["weight_map"]["model.layers.1.mlp.up_proj.weight"] = "model-00099-of-00099.safetensors"
    index_file.write_text(json.dumps(index))
    with pytest.raises(CheckpointError, match="names the shard model-00099-of-00099.safetensors, which is not in"):
        _open(model, tmp_path, how)


def _edit_config(model: Path, **changes) -> None:
    config = json.loads((model / "config.json").read_text())
    config.update(changes)
    (model / "config.json").write_text(json.dumps(config))


@pytest.mark.parametrize("how", PATHS)
@pytest.mark.parametrize("changes, message", [
    ({"num_hidden_layers": 4}, "missing tensor model.layers.3.self_attn.q_proj.weight"),
    ({"num_hidden_layers": 2}, r"unexpected tensor model.layers.2.\S+ \(the weights hold layer 2; config.json has "
                               r"num_hidden_layers=2\)"),
    ({"intermediate_size": 80}, r"mismatched tensor model.layers.0.mlp.gate_proj.weight: weights \[96, 64\], "
                                r"config implies \[80, 64\]"),
    ({"num_key_value_heads": 1}, r"mismatched tensor model.layers.0.self_attn.k_proj.weight: weights \[32, 64\]"),
], ids=["4-of-3-layers", "2-of-3-layers", "intermediate-size", "kv-heads"])
def test_config_that_lies_about_the_weights_is_refused_naming_the_tensor(dense, tmp_path, how, changes, message):
    model = _copy(dense, tmp_path)
    _edit_config(model, **changes)
    before = _hashes(model)
    with pytest.raises(CheckpointError, match=message) as error:
        _open(model, tmp_path, how)
    assert f"{model}: config.json does not match the weights" in str(error.value)
    assert "Restore the config.json saved with these weights" in str(error.value)
    assert _hashes(model) == before and not (tmp_path / "offload").exists()


def test_cli_prune_of_a_lying_config_is_one_line_and_exit_2(dense, tmp_path, capsys):
    from optimum_flap.commands.cli import main

    model = _copy(dense, tmp_path)
    _edit_config(model, num_hidden_layers=2)
    text = tmp_path / "calibration.txt"
    text.write_text(" ".join(f"w{i % 100}" for i in range(200)))
    code = main(["prune", "--model", str(model), "--dataset", str(text), "--num-samples", "2", "--seq-len", "8",
                 "--output", str(tmp_path / "out")])
    err = [line for line in capsys.readouterr().err.splitlines() if not line.startswith("[optimum-flap]")]
    assert code == 2 and len(err) == 1 and err[0].startswith("optimum-flap: error: ")
    assert "unexpected tensor model.layers.2." in err[0]
    assert not (tmp_path / "out").exists()


# -- out of disk space: nothing half-written, the earlier checkpoint kept --------------------------------

def _disk_full(tensors, filename, metadata=None):
    """A safetensors `save_file` that writes part of the file, then fails as a full disk does."""
    import errno

    Path(filename).write_bytes(b"\0" * 100)
    raise OSError(errno.ENOSPC, "No space left on device", str(filename))


@pytest.mark.parametrize("how", PATHS)
def test_disk_full_during_save_keeps_the_earlier_checkpoint(dense, tmp_path, how, monkeypatch):
    import transformers.modeling_utils

    import optimum_flap.streaming.checkpoint_writer as writer

    pruner = _open(dense, tmp_path, how)
    pruner.prune(tmp_path / "out")
    before = _hashes(tmp_path / "out")
    monkeypatch.setattr(transformers.modeling_utils, "safe_save_file", _disk_full)  # in-memory save
    monkeypatch.setattr(writer, "_write_planned", lambda tensors, directory, *rest: _disk_full(
        {}, directory / "model-00001.safetensors.partial"))  # streamed save, shard by shard
    with pytest.raises(OSError, match=r"No space left on device while writing the checkpoint for .*out; nothing "
                                      r"was written to .*out and the partial files were removed") as error:
        pruner.save_pretrained(tmp_path / "out", overwrite=True)
    assert error.value.errno == 28
    assert _hashes(tmp_path / "out") == before  # the earlier checkpoint, byte for byte
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".out")) == []  # no staging left


def test_disk_full_during_offload_leaves_no_partial_block(dense, tmp_path, monkeypatch):
    import optimum_flap.streaming.checkpoint_reader as reader

    pruner = _open(dense, tmp_path, "streamed")
    real = reader.save_file
    writes = []

    def save_file(tensors, filename, metadata=None):  # the second block finds the disk full
        writes.append(filename)
        if len(writes) == 2:
            return _disk_full(tensors, filename, metadata)
        return real(tensors, filename, metadata=metadata)

    monkeypatch.setattr(reader, "save_file", save_file)
    with pytest.raises(OSError, match=r"No space left on device while writing pruned block 1 \([\d,]+ bytes\) to "
                                      r"the offload folder .*offload; the partial file was removed"):
        pruner.prune(tmp_path / "out")
    # the run's own subfolder of the offload folder keeps the finished block, not the partial one
    assert [p.name for p in sorted((tmp_path / "offload").rglob("*.safetensors"))] == [Path(writes[0]).name]
    assert not (tmp_path / "out").exists()


# -- outputs checked before the work ----------------------------------------------------------------------

def test_output_under_a_file_or_read_only_is_refused_before_pruning(dense, tmp_path, monkeypatch):
    from optimum_flap.checkpoint.target import OutputDirectoryError

    (tmp_path / "file").write_text("x")
    pruner = _open(dense, tmp_path, "in-memory")
    with pytest.raises(OutputDirectoryError, match=r"Cannot create .*file/out: .*file is a file, not a directory"):
        pruner.prune(tmp_path / "file" / "out")
    assert pruner.report is None  # refused before calibrating
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode: False if Path(path) == tmp_path / "ro" else
                        real_access(path, mode))  # root ignores chmod: the check asks os.access
    (tmp_path / "ro").mkdir()
    with pytest.raises(OutputDirectoryError, match=r"Cannot write to .*ro/out: .*ro is read-only for this user"):
        pruner.prune(tmp_path / "ro" / "out")
    assert pruner.report is None


# -- the command line: one line, exit 2, before the work --------------------------------------------------

def _one_line_error(capsys) -> str:
    """The command's one error line: the last of stderr (after progress bars), and no traceback."""
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("optimum-flap: error: ")]
    assert "Traceback" not in err and len(errors) == 1 and err.rstrip().endswith(errors[0]), err[-2000:]
    return errors[0]


@pytest.fixture
def never_loads(monkeypatch):
    """Fail the test if a command loads a model: its checks must come first."""
    import optimum_flap.checkpoint
    import optimum_flap.pruner

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the command checked its arguments")

    monkeypatch.setattr(optimum_flap.pruner.FlapPruner, "from_pretrained", refuse)
    monkeypatch.setattr(optimum_flap.checkpoint, "load_pruned_model", refuse)


@pytest.mark.parametrize("flags, message", [
    (lambda t: ["--json", str(t)], r"cannot write .*: it is a directory; give a file path"),
    (lambda t: ["--json", str(t / "ro" / "r.json")], r"cannot write .*r.json: .*ro is read-only for this user"),
    (lambda t: ["--offload-folder", str(t / "out")], r"--offload-folder .*out and --output .*out overlap"),
    (lambda t: ["--offload-folder", str(t / "out" / "blocks")], r"--offload-folder .*blocks and --output .*out "
                                                               "overlap"),
], ids=["json-is-a-directory", "json-read-only", "offload-is-output", "offload-inside-output"])
def test_cli_prune_checks_its_outputs_before_loading(dense, tmp_path, capsys, monkeypatch, never_loads, flags, message):
    from optimum_flap.commands.cli import main

    (tmp_path / "ro").mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode: False if Path(path) == tmp_path / "ro" else
                        real_access(path, mode))  # as root, chmod does not stop writes: the check asks os.access
    code = main(["prune", "--model", str(dense), "--output", str(tmp_path / "out"), *flags(tmp_path)])
    assert code == 2
    assert re.search(message, _one_line_error(capsys))
    assert not (tmp_path / "out").exists()


def test_cli_benchmark_threads_below_one_is_refused(dense, capsys, never_loads):
    from optimum_flap.commands.cli import main

    assert main(["benchmark", "--model", str(dense), "--pruned", str(dense), "--threads", "0"]) == 2
    assert "--threads 0: need an int >= 1" in _one_line_error(capsys)


def test_cli_recover_missing_eval_data_is_refused_before_loading(dense, tmp_path, capsys, never_loads):
    from optimum_flap.commands.cli import main

    code = main(["recover", "--model", str(dense), "--eval-data", str(tmp_path / "held-out.txt"), "--output",
                 str(tmp_path / "out")])
    assert code == 2
    assert f"--eval-data {tmp_path / 'held-out.txt'} is neither 'wikitext2' nor an existing file" in \
        _one_line_error(capsys)


def test_cli_export_gguf_to_a_directory_is_refused_before_encoding(dense, tmp_path, capsys, monkeypatch):
    import optimum_flap.export
    from optimum_flap.commands.cli import main

    monkeypatch.setattr(optimum_flap.export, "to_gguf", lambda *a, **k: pytest.fail("encoded before the check"))
    (tmp_path / "gguf").mkdir()
    code = main(["export-gguf", "--model", str(dense), "--output", str(tmp_path / "gguf"), "--overwrite"])
    assert code == 2
    target = tmp_path / "gguf"
    assert f"GGUF output {target} is a directory; give a file path, e.g. {target / 'model.gguf'}" in \
        _one_line_error(capsys)


def test_cli_eval_of_our_deci_gguf_says_llama_cpp_runs_it(tmp_path, capsys, monkeypatch):
    from conftest import ckpt_make_pruned
    from test_export_gguf import byte_level_tokenizer, with_vocab

    from optimum_flap.commands.cli import main
    from optimum_flap.export import to_gguf

    monkeypatch.setenv("OPTIMUM_FLAP_CACHE", str(tmp_path / "cache"))
    pruned = with_vocab(ckpt_make_pruned(ckpt_tiny_model("llama"), [(2, 40), (1, 70), (2, 96)]), byte_level_tokenizer())
    assert to_gguf(pruned, tmp_path / "pruned.gguf", outtype="f32", tokenizer=byte_level_tokenizer()) == "deci"
    assert main(["eval", "--gguf", str(tmp_path / "pruned.gguf"), "--ppl-data", "none", "--tasks", "piqa"]) == 2
    line = _one_line_error(capsys)
    assert "pruned.gguf is a llama.cpp 'deci' GGUF" in line and "llama.cpp is where it runs" in line
    assert "--model" in line and not (tmp_path / "cache" / "gguf").exists()


# -- tampered per-layer configs, another model's Trainer checkpoints, a truncated teacher cache ----------

@pytest.fixture(scope="module")
def per_layer(dense, tmp_path_factory) -> Path:
    """A FLAP-pruned checkpoint with per-layer sizes (remote-code format)."""
    path = tmp_path_factory.mktemp("per-layer") / "model"
    FlapPruner.from_pretrained(dense, config=_recipe()).prune(path)
    assert "per_layer_config" in json.loads((path / "config.json").read_text())
    return path


@pytest.mark.parametrize("tamper, message", [
    (lambda plc: "garbage", "'str' object has no attribute 'items'"),
    (lambda plc: {**plc, "0": {**plc["0"], "intermediate_size": -3}}, "Layer 0: invalid sizes"),
    (lambda plc: {**plc, "0": {**plc["0"], "intermediate_size": [1]}}, "Field 'intermediate_size' expected int"),
], ids=["not-a-mapping", "negative-size", "not-an-int"])
def test_tampered_per_layer_config_is_a_checkpoint_error_in_eval(per_layer, tmp_path, capsys, tamper, message):
    from optimum_flap.commands.cli import main

    model = _copy(per_layer, tmp_path)
    config = json.loads((model / "config.json").read_text())
    _edit_config(model, per_layer_config=tamper(config["per_layer_config"]))
    with pytest.raises(CheckpointError, match=message) as error:
        load_pruned_model(model)
    assert f"{model / 'config.json'} is not a valid FlapLlamaConfig" in str(error.value)
    assert "restore the config.json saved with these weights" in str(error.value)
    assert main(["eval", "--model", str(model), "--ppl-data", "none", "--tasks", "piqa"]) == 2
    assert "is not a valid FlapLlamaConfig" in _one_line_error(capsys)


def test_resume_from_another_models_checkpoint_is_refused_before_training(dense, per_layer, tmp_path, capsys):
    from optimum_flap.commands.cli import main

    text = tmp_path / "train.txt"
    text.write_text(" ".join(f"w{i % 100}" for i in range(2000)))
    common = ["--dataset", str(text), "--seq-len", "16", "--batch-size", "1", "--eval-steps", "0", "--save-steps",
              "1", "--checkpoint-dir", str(tmp_path / "checkpoints"), "--cpu"]
    assert main(["recover", "--model", str(per_layer), "--steps", "2", *common, "--output", str(tmp_path / "a")]) == 0
    before = _hashes(tmp_path / "checkpoints")
    capsys.readouterr()
    code = main(["recover", "--model", str(dense), "--steps", "2", *common, "--output", str(tmp_path / "b"),
                 "--resume"])
    assert code == 2
    line = _one_line_error(capsys)
    assert "checkpoint-2' was saved while training another model" in line
    assert re.search(r"tensor \S+lora_A.weight is \[\d+, \d+\] there and \[\d+, \d+\] here", line)
    assert _hashes(tmp_path / "checkpoints") == before and not (tmp_path / "b").exists()
    # the model's own checkpoint still resumes (the same recipe: LoRA ranks depend on the training windows)
    assert main(["recover", "--model", str(per_layer), "--steps", "2", *common, "--output", str(tmp_path / "a2"),
                 "--resume"]) == 0


def test_truncated_teacher_cache_is_refused_naming_the_file(tmp_path):
    from optimum_flap.recovery.teacher_cache import METADATA_FILE, TeacherLogitsCache, teacher_identity

    teacher = ckpt_tiny_model("llama", num_layers=1)
    ids = torch.tensor(CALIBRATION)
    identity = teacher_identity(teacher)
    TeacherLogitsCache.ensure(tmp_path / "cache", ids, 8, 128, lambda: teacher, teacher=identity)
    shard = tmp_path / "cache" / "shard-00000.safetensors"
    shard.write_bytes(shard.read_bytes()[:-40])
    with pytest.raises(ValueError, match=f"{shard} is missing, truncated or corrupt .*delete the directory"):
        TeacherLogitsCache.ensure(tmp_path / "cache", ids, 8, 128, lambda: teacher, teacher=identity)
    meta = tmp_path / "cache" / METADATA_FILE
    meta.write_text(meta.read_text()[:30])
    with pytest.raises(ValueError, match=f"{meta} is not valid JSON"):
        TeacherLogitsCache.ensure(tmp_path / "cache", ids, 8, 128, lambda: teacher, teacher=identity)


def test_names_transformers_renames_are_left_to_it_before_loading(tmp_path):
    """A checkpoint whose tensor names share none of the model's is not refused by the in-memory pre-check."""
    from safetensors.torch import load_file, save_file
    from transformers import AutoConfig, AutoModelForCausalLM

    from optimum_flap.checkpoint.integrity import check_checkpoint_fits_config, check_weights_fit_model

    ckpt_tiny_model("llama", num_layers=2).save_pretrained(tmp_path)
    tensors = load_file(tmp_path / "model.safetensors")
    save_file({f"legacy.{name}": tensor for name, tensor in tensors.items()}, tmp_path / "model.safetensors")
    config = AutoConfig.from_pretrained(tmp_path)
    check_checkpoint_fits_config(tmp_path, AutoModelForCausalLM, config)  # transformers' renaming decides
    skeleton = AutoModelForCausalLM.from_config(config)
    with pytest.raises(CheckpointError, match="missing tensor model.embed_tokens.weight"):
        check_weights_fit_model(tmp_path, skeleton)  # the streamed path reads names as they are
