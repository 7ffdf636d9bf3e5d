"""Inputs that used to give a wrong result that looked like success (exit 0), lose an input, or publish raw
user text: each is now either right or refused, with the exception type, a message naming the bad value
and what is allowed, and (for faults) the SHA-256 of every input file unchanged."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest
import torch
from conftest import ckpt_make_pruned, ckpt_tiny_model, ckpt_tiny_tokenizer
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM

from optimum_flap import FlapConfig, FlapPruner
from optimum_flap.checkpoint import load_pruned_model, save_pruned_model
from optimum_flap.checkpoint.finite import NonFiniteError
from optimum_flap.checkpoint.target import OutputDirectoryError, check_output_file
from optimum_flap.commands.cli import main
from optimum_flap.data import CalibrationDataError
from optimum_flap.privacy import file_sha256
from optimum_flap.streaming import StreamedCheckpoint

IDS = torch.tensor([[1, 5, 9, 33, 4, 77, 12, 100]])
LAYERS = [(1, 40), (2, 96), (1, 7)]


def _hashes(root: Path) -> dict[str, str]:
    """Relative path -> SHA-256 of every file under `root`."""
    return {str(p.relative_to(root)): file_sha256(p) for p in sorted(root.rglob("*")) if p.is_file()}


def _words(n: int, seed: int) -> str:
    rng = random.Random(seed)
    return "\n".join(" ".join(f"w{rng.randrange(120)}" for _ in range(20)) for _ in range(n // 20)) + "\n"


def _checkpoint(directory: Path, seed: int = 0, **overrides) -> Path:
    """A tiny dense Llama (256 positions) with its tokenizer, saved with transformers."""
    model = ckpt_tiny_model("llama", seed=seed, **overrides)
    model.save_pretrained(directory)
    ckpt_tiny_tokenizer().save_pretrained(directory)
    return directory


def _logits(model) -> torch.Tensor:
    with torch.no_grad():
        return model(IDS).logits


def _cli(argv: list[str], capsys) -> tuple[int, str]:
    status = main([str(a) for a in argv])
    return status, capsys.readouterr().err


def _recipe(**overrides) -> FlapConfig:
    ids = torch.randint(4, 128, (8, 16), generator=torch.Generator().manual_seed(0))
    return FlapConfig(**{"method": "flap", "pruning_ratio": 0.3, "dataset": ids, "batch_size": 4, **overrides})


@pytest.fixture
def dense(tmp_path) -> Path:
    return _checkpoint(tmp_path / "dense")


@pytest.fixture
def calib(tmp_path) -> Path:
    path = tmp_path / "calib.txt"
    path.write_text(_words(2000, seed=1))
    return path


# ------------------------------------------------------------------------------ caches keyed by content


def test_gguf_cache_is_keyed_by_content_not_name_and_size(tmp_path, monkeypatch):
    """Two different files with the same name and size get two conversions; the same bytes reuse one."""
    from optimum_flap.utils import gguf

    converted = []

    def fake_convert(path, target, dtype="float32"):
        converted.append((Path(path).read_bytes(), target))
        Path(target).mkdir(parents=True)
        (Path(target) / "config.json").write_text("{}")
        return target

    monkeypatch.setattr(gguf, "gguf_to_checkpoint", fake_convert)
    first, second = tmp_path / "run0" / "model.gguf", tmp_path / "run1" / "model.gguf"
    for path, payload in ((first, b"GGUF" + b"a" * 60), (second, b"GGUF" + b"b" * 60)):
        path.parent.mkdir()
        path.write_bytes(payload)
    targets = [gguf.gguf_checkpoint(str(p), cache_dir=str(tmp_path / "cache")) for p in (first, second)]
    assert targets[0] != targets[1] and len(converted) == 2
    second.write_bytes(first.read_bytes())  # same content again: the first conversion is reused
    assert gguf.gguf_checkpoint(str(second), cache_dir=str(tmp_path / "cache")) == targets[0]
    assert len(converted) == 2


def test_teacher_logits_cache_of_another_teacher_is_refused(tmp_path):
    from optimum_flap.recovery import TeacherLogitsCache, teacher_identity

    ids = torch.randint(0, 128, (4, 8), generator=torch.Generator().manual_seed(0))
    teacher, other = ckpt_tiny_model("llama", seed=0), ckpt_tiny_model("llama", seed=1)  # same vocabulary
    TeacherLogitsCache.ensure(tmp_path / "cache", ids, 4, 128, lambda: teacher, teacher=teacher_identity(teacher))
    with pytest.raises(ValueError, match=r"teacher: cached '[0-9a-f]{64}', now '[0-9a-f]{64}'") as err:
        TeacherLogitsCache.ensure(tmp_path / "cache", ids, 4, 128, lambda: other, teacher=teacher_identity(other))
    assert "use another directory or delete it" in str(err.value)
    # a checkpoint directory is named by its files' contents
    first, second = _checkpoint(tmp_path / "a", seed=0), _checkpoint(tmp_path / "b", seed=1)
    assert teacher_identity(first) != teacher_identity(second)
    assert teacher_identity(first) == teacher_identity(_checkpoint(tmp_path / "c", seed=0))


# ------------------------------------------------------------------------------ streamed runs sharing a folder


def test_streamed_runs_sharing_an_offload_folder_keep_their_own_blocks(tmp_path):
    """Two runs pruning different models into one offload folder each save exactly their in-memory prune."""
    paths = [_checkpoint(tmp_path / f"model{seed}", seed=seed) for seed in (0, 1)]
    offload = tmp_path / "offload"
    pruners = [FlapPruner.from_pretrained(p, config=_recipe(), offload_folder=offload) for p in paths]
    for pruner in pruners:  # both prune before either saves: the second run's blocks must not replace the first's
        pruner.prune()
    for index, pruner in enumerate(pruners):
        pruner.save_pretrained(tmp_path / f"streamed{index}")
        expected = FlapPruner(_recipe()).prune_model(AutoModelForCausalLM.from_pretrained(paths[index]))
        saved = load_file(tmp_path / f"streamed{index}" / "model.safetensors")
        for name, tensor in expected.state_dict().items():
            if name in saved:
                assert torch.equal(saved[name], tensor), (index, name)
    runs = sorted(offload.iterdir())
    assert len(runs) == 2 and all(run.name.startswith("run-") for run in runs)
    for pruner in pruners:
        pruner.streamed.close()
    assert not any(offload.iterdir())  # each run's folder is removed afterwards


# ------------------------------------------------------------------------------ tied embeddings


@pytest.mark.parametrize("streamed", [False, True], ids=["in-memory", "streamed"])
def test_tie_flag_over_a_different_lm_head_saves_what_transformers_loads(tmp_path, streamed):
    """config says tie_word_embeddings=true but the checkpoint stores another lm_head: transformers loads it
    untied, so pruning and saving keep it untied and the reload is the pruned model."""
    source = _checkpoint(tmp_path / "dense")
    config = json.loads((source / "config.json").read_text())
    (source / "config.json").write_text(json.dumps({**config, "tie_word_embeddings": True}))
    stored = load_file(source / "model.safetensors")
    assert not torch.equal(stored["lm_head.weight"], stored["model.embed_tokens.weight"])
    if streamed:
        pruner = FlapPruner.from_pretrained(source, config=_recipe(), offload_folder=tmp_path / "offload")
        pruner.prune()
    else:
        pruner = FlapPruner(_recipe())
        pruner.prune_model(AutoModelForCausalLM.from_pretrained(source), ckpt_tiny_tokenizer())
    pruner.save_pretrained(tmp_path / "out")
    assert json.loads((tmp_path / "out" / "config.json").read_text())["tie_word_embeddings"] is False
    reloaded = load_pruned_model(tmp_path / "out")
    assert torch.equal(reloaded.lm_head.weight, stored["lm_head.weight"])
    expected = FlapPruner(_recipe()).prune_model(AutoModelForCausalLM.from_pretrained(source))
    torch.testing.assert_close(_logits(reloaded), _logits(expected), rtol=0, atol=1e-5)


# ------------------------------------------------------------------------------ non-finite results


def _nan_model(pruned: bool = True):
    model = ckpt_tiny_model("llama")
    model = ckpt_make_pruned(model, LAYERS) if pruned else model
    with torch.no_grad():
        model.model.layers[1].mlp.down_proj.weight[0, 3] = float("nan")
    return model


def test_saving_non_finite_weights_is_refused_and_writes_nothing(tmp_path):
    with pytest.raises(NonFiniteError, match=r"model\.layers\.1\.mlp\.down_proj\.weight .*1 NaN and 0 inf") as err:
        save_pruned_model(_nan_model(), tmp_path / "out")
    assert "only finite values are allowed" in str(err.value)
    assert not (tmp_path / "out").exists() and list(tmp_path.iterdir()) == []


def test_gguf_export_of_non_finite_weights_is_refused(tmp_path):
    from test_export_gguf import byte_level_tokenizer, with_vocab

    from optimum_flap.export import to_gguf

    tokenizer = byte_level_tokenizer()
    with pytest.raises(NonFiniteError, match=r"Cannot export GGUF: tensor blk\.1\.ffn_down\.weight .*1 NaN"):
        to_gguf(with_vocab(_nan_model(), tokenizer), tmp_path / "m.gguf", outtype="f32", tokenizer=tokenizer)
    assert list(tmp_path.iterdir()) == []


def test_eval_of_a_nan_model_fails_instead_of_printing_nan(tmp_path, calib, capsys):
    from optimum_flap.evaluation.perplexity import perplexity

    _nan_model(pruned=False).save_pretrained(tmp_path / "nan")  # transformers writes it; ours would refuse
    ckpt_tiny_tokenizer().save_pretrained(tmp_path / "nan")
    status, err = _cli(["eval", "--model", tmp_path / "nan", "--ppl-data", calib, "--seq-len", "16"], capsys)
    assert status == 2 and "down_proj.weight" in err and "only finite values are allowed" in err
    model = ckpt_make_pruned(ckpt_tiny_model("llama"), LAYERS)
    with torch.no_grad():
        model.model.norm.weight.fill_(float("inf"))  # finite-looking checks aside, the logits are NaN
    with pytest.raises(NonFiniteError, match="mean next-token loss .* is nan"):
        perplexity(model, ckpt_tiny_tokenizer(), [calib.read_text()], seq_len=16, max_windows=2, progress=False)


def _recover_argv(pruned: Path, out: Path, calib: Path, *extra) -> list:
    return ["recover", "--model", pruned, "--dataset", calib, "--seq-len", "16", "--steps", "3",
            "--batch-size", "2", "--eval-steps", "0", "--cpu", "--output", out, *extra]


def test_recover_with_a_non_finite_loss_fails_and_saves_nothing(tmp_path, calib, capsys):
    pruned = tmp_path / "pruned"
    save_pruned_model(ckpt_make_pruned(ckpt_tiny_model("llama"), LAYERS), pruned, tokenizer=ckpt_tiny_tokenizer())
    before = _hashes(pruned)
    status, err = _cli(_recover_argv(pruned, tmp_path / "out", calib, "--lr", "1e12", "--finetuning", "full"), capsys)
    assert status == 2 and ("became nan" in err or "NaN" in err), err
    assert not (tmp_path / "out").exists() and _hashes(pruned) == before


def test_recover_of_nan_weights_fails_before_training(tmp_path, calib, capsys):
    _nan_model(pruned=False).save_pretrained(tmp_path / "nan")
    ckpt_tiny_tokenizer().save_pretrained(tmp_path / "nan")
    status, err = _cli(_recover_argv(tmp_path / "nan", tmp_path / "out", calib), capsys)
    assert status == 2 and "Cannot recover the model: tensor model.layers.1.mlp.down_proj.weight" in err
    assert not (tmp_path / "out").exists()


def test_teacher_logits_cache_holding_a_nan_is_refused(tmp_path):
    from optimum_flap.recovery import TeacherLogitsCache, teacher_identity

    ids = torch.randint(0, 128, (4, 8), generator=torch.Generator().manual_seed(0))
    teacher = ckpt_tiny_model("llama")
    identity = teacher_identity(teacher)
    TeacherLogitsCache.ensure(tmp_path / "cache", ids, 4, 128, lambda: teacher, teacher=identity)
    shard = tmp_path / "cache" / "shard-00000.safetensors"
    tensors = load_file(shard)
    tensors["values"][2, 3, 1] = float("nan")
    save_file(tensors, shard)
    with pytest.raises(NonFiniteError, match=r"values of .*shard-00000\.safetensors .*1 NaN") as err:
        TeacherLogitsCache.ensure(tmp_path / "cache", ids, 4, 128, lambda: teacher, teacher=identity)
    assert "delete it to recompute" in str(err.value)


# ------------------------------------------------------------------------------ what ran is what is recorded


def test_token_ids_record_the_shape_that_ran_not_the_ignored_config(tmp_path):
    ids = torch.randint(4, 128, (2, 40), generator=torch.Generator().manual_seed(0))
    pruner = FlapPruner(_recipe(dataset=ids, num_samples=64, seq_len=200))
    pruner.prune_model(ckpt_tiny_model("llama"))
    pruner.save_pretrained(tmp_path / "out")
    recipe = json.loads((tmp_path / "out" / "config.json").read_text())["pruning_config"]
    assert (recipe["num_samples"], recipe["seq_len"]) == (2, 40)
    card = (tmp_path / "out" / "README.md").read_text()
    assert '"num_samples": 2' in card and '"seq_len": 40' in card and "200" not in card


# ------------------------------------------------------------------------------ positions beyond the model's


def test_calibration_longer_than_the_positions_is_refused(calib):
    """The same check as eval's: text calibration with seq_len 300, and ids 300 wide, on 256 positions."""
    for dataset, seq_len in ((str(calib), 300), (torch.randint(4, 128, (2, 300)), 16)):
        pruner = FlapPruner(_recipe(dataset=dataset, seq_len=seq_len, num_samples=2))
        with pytest.raises(CalibrationDataError, match=r"calibration seq_len=300 exceeds the model's "
                                                       r"max_position_embeddings=256.*Use calibration seq_len <= 256"):
            pruner.prune_model(ckpt_tiny_model("llama"), ckpt_tiny_tokenizer())


def test_benchmark_prompt_beyond_the_positions_is_refused(dense, capsys):
    from optimum_flap.evaluation.speed import speed

    with pytest.raises(CalibrationDataError, match=r"prompt_len \+ new_tokens=5032 exceeds the model's "
                                                   r"max_position_embeddings=256"):
        speed(ckpt_tiny_model("llama"), prompt_len=5000, new_tokens=32, repeats=1, warmup=0)
    status, err = _cli(["benchmark", "--model", dense, "--pruned", dense, "--prompt-len", "5000", "--repeats", "1"],
                       capsys)
    assert status == 2 and "exceeds the model's max_position_embeddings=256" in err


# ------------------------------------------------------------------------------ outputs that are inputs


def test_export_gguf_never_replaces_an_input_file(dense, capsys):
    before = _hashes(dense)
    status, err = _cli(["export-gguf", "--model", dense, "--output", dense / "model.safetensors", "--overwrite"],
                       capsys)
    assert status == 2 and "is inside the --model directory" in err and "Choose a GGUF output outside" in err
    assert _hashes(dense) == before


def test_output_file_rule_replaces_only_an_earlier_file_of_its_kind(tmp_path):
    other = tmp_path / "notes.txt"
    other.write_text("keep me")
    with pytest.raises(OutputDirectoryError, match=r"notes\.txt: it is not a GGUF file .* overwrite replaces only"):
        check_output_file(other, True, b"GGUF", "GGUF")
    with pytest.raises(OutputDirectoryError, match=r"exists; pass overwrite=True \(--overwrite\)"):
        check_output_file(other, False, b"GGUF", "GGUF")
    with pytest.raises(OutputDirectoryError, match=r"is a directory; give a file path"):
        check_output_file(tmp_path, True, b"GGUF", "GGUF")
    assert other.read_text() == "keep me"
    earlier = tmp_path / "old.gguf"
    earlier.write_bytes(b"GGUF\x03\x00")
    assert check_output_file(earlier, True, b"GGUF", "GGUF") == earlier
    # a new file inside the model directory replaces nothing (llama.cpp's converter writes there too)
    new = tmp_path / "model.gguf"
    assert check_output_file(new, False, b"GGUF", "GGUF", {"--model": tmp_path}) == new


@pytest.mark.parametrize("where", ["same", "inside", "containing"])
def test_prune_output_overlapping_the_model_is_refused_even_with_overwrite(tmp_path, dense, calib, capsys, where):
    output = {"same": dense, "inside": dense / "pruned", "containing": tmp_path}[where]
    before = _hashes(dense)
    status, err = _cli(["prune", "--model", dense, "--dataset", calib, "--num-samples", "4", "--seq-len", "16",
                        "--output", output, "--overwrite"], capsys)
    relation = {"same": "is", "inside": "is inside", "containing": "contains"}[where]
    assert status == 2 and f"it {relation} the --model directory" in err and "Choose a --output outside" in err
    assert _hashes(dense) == before


def test_offload_folder_in_the_model_directory_is_refused(dense, calib, capsys):
    before = _hashes(dense)
    for folder in (dense, dense / "offload"):
        status, err = _cli(["prune", "--model", dense, "--dataset", calib, "--num-samples", "4", "--seq-len", "16",
                            "--offload-folder", folder, "--output", dense.parent / "out"], capsys)
        assert status == 2 and "Refusing --offload-folder" in err and "the --model directory" in err
        with pytest.raises(OutputDirectoryError, match="Refusing offload_folder"):
            StreamedCheckpoint(dense, offload_folder=folder)
    assert _hashes(dense) == before and not (dense.parent / "out").exists()


def test_recover_output_equal_to_the_model_is_refused(tmp_path, calib, capsys):
    pruned = tmp_path / "pruned"
    save_pruned_model(ckpt_make_pruned(ckpt_tiny_model("llama"), LAYERS), pruned, tokenizer=ckpt_tiny_tokenizer())
    before = _hashes(pruned)
    status, err = _cli(_recover_argv(pruned, pruned, calib, "--overwrite"), capsys)
    assert status == 2 and "Refusing --output" in err and "it is the --model directory" in err
    assert _hashes(pruned) == before


def test_library_save_into_the_loaded_directory_is_refused(tmp_path):
    source = tmp_path / "pruned"
    save_pruned_model(ckpt_make_pruned(ckpt_tiny_model("llama"), LAYERS), source)
    before = _hashes(source)
    with pytest.raises(OutputDirectoryError, match="it is the model directory"):
        save_pruned_model(load_pruned_model(source), source, overwrite=True)
    assert _hashes(source) == before


# ------------------------------------------------------------------------------ publishing


def test_model_card_escapes_user_supplied_strings(tmp_path):
    hostile = "org/name\n---\n# Injected <img src=x onerror=alert(1)> [link](javascript:alert(1)) `code`"
    save_pruned_model(ckpt_make_pruned(ckpt_tiny_model("llama"), LAYERS), tmp_path / "out", base_model=hostile)
    card = (tmp_path / "out" / "README.md").read_text()
    lines = card.splitlines()
    assert lines.count("---") == 2 and lines[0] == "---"  # the front matter, and nothing else
    assert not any(line.startswith("# Injected") for line in lines)
    assert "<img" not in card and "&lt;img src=x onerror=alert\\(1\\)&gt;" in card
    assert "[link](javascript" not in card and "\\[link\\]\\(javascript:alert\\(1\\)\\)" in card
    assert "`code`" not in card and "\\`code\\`" in card
    assert "base_model" not in card.split("---")[1]  # not a Hub id: no card metadata
    # a local model directory with such a name: only its (escaped) name is published
    directory = tmp_path / "dense\n---\n## Heading <b>x"
    directory.mkdir()
    save_pruned_model(ckpt_make_pruned(ckpt_tiny_model("llama"), LAYERS), tmp_path / "out2", base_model=str(directory))
    card = (tmp_path / "out2" / "README.md").read_text()
    assert card.splitlines().count("---") == 2 and "<b>" not in card
    assert "version of dense --- ## Heading &lt;b&gt;x" in card
    assert str(tmp_path) not in card


def test_recover_records_dataset_and_teacher_without_local_paths(tmp_path, calib):
    from optimum_flap.recovery import RecoveryConfig, recover

    teacher = _checkpoint(tmp_path / "teacher-dir")
    student = ckpt_make_pruned(ckpt_tiny_model("llama"), LAYERS)
    config = RecoveryConfig(objective="distillation", teacher=str(teacher), dataset=str(calib), seq_len=16,
                            max_steps=1, batch_size=2, training_args={"use_cpu": True})
    recover(student, ckpt_tiny_tokenizer(), config, save_directory=tmp_path / "out")
    text = (tmp_path / "out" / "config.json").read_text()
    record = json.loads(text)["recovery"]
    assert record["dataset"] == f"calib.txt@sha256:{file_sha256(calib)}"
    assert record["teacher"] == "teacher-dir" and (record["num_samples"], record["seq_len"]) == (2, 16)
    assert str(tmp_path) not in text
    assert math.isfinite(json.loads(text)["recovery"]["learning_rate"])


def test_zero_shot_of_a_nan_model_is_refused():
    from optimum_flap.data_files import data_dir
    from optimum_flap.evaluation.zero_shot import zero_shot

    pytest.importorskip("lm_eval")
    if not (data_dir() / "zeroshot").is_dir():
        pytest.skip("shared zero-shot data not present")
    with pytest.raises(NonFiniteError, match=r"Cannot evaluate zero-shot accuracy: tensor model\.layers\.1\."):
        zero_shot(_nan_model(pruned=False), ckpt_tiny_tokenizer(), tasks=["boolq"], limit=2)


def test_json_report_inside_the_model_directory_is_refused(dense, calib, capsys):
    before = _hashes(dense)
    status, err = _cli(["eval", "--model", dense, "--ppl-data", calib, "--seq-len", "16",
                        "--json", dense / "config.json"], capsys)
    assert status == 2 and "Refusing --json" in err and "is inside the --model directory" in err
    assert _hashes(dense) == before


def test_recover_checks_its_save_directory_before_training(tmp_path, calib):
    from optimum_flap.recovery import RecoveryConfig, recover

    source = tmp_path / "pruned"
    save_pruned_model(ckpt_make_pruned(ckpt_tiny_model("llama"), LAYERS), source, tokenizer=ckpt_tiny_tokenizer())
    before = _hashes(source)
    config = RecoveryConfig(dataset=str(calib), seq_len=16, max_steps=1, batch_size=2,
                            training_args={"use_cpu": True})
    for merge in (True, False):  # the adapter-only save follows the same rule
        with pytest.raises(OutputDirectoryError, match="it is the model directory"):
            recover(load_pruned_model(source), ckpt_tiny_tokenizer(), config, save_directory=source,
                    overwrite=True, merge=merge)
    assert _hashes(source) == before


def test_teacher_with_fewer_positions_than_the_training_windows_is_refused(tmp_path, calib):
    from optimum_flap.recovery import RecoveryConfig, recover

    teacher = _checkpoint(tmp_path / "teacher")
    config = json.loads((teacher / "config.json").read_text())
    (teacher / "config.json").write_text(json.dumps({**config, "max_position_embeddings": 8}))
    recipe = RecoveryConfig(objective="distillation", teacher=str(teacher), dataset=str(calib), seq_len=16,
                            max_steps=1, batch_size=2, training_args={"use_cpu": True})
    with pytest.raises(CalibrationDataError, match=r"training seq_len \(the teacher's\)=16 exceeds the model's "
                                                   r"max_position_embeddings=8"):
        recover(ckpt_make_pruned(ckpt_tiny_model("llama"), LAYERS), ckpt_tiny_tokenizer(), recipe)


def test_training_windows_longer_than_the_positions_are_refused(calib):
    from optimum_flap.recovery import RecoveryConfig, recover

    recipe = RecoveryConfig(dataset=str(calib), seq_len=300, max_steps=1, batch_size=2, training_args={"use_cpu": True})
    with pytest.raises(CalibrationDataError, match=r"training seq_len=300 exceeds the model's "
                                                   r"max_position_embeddings=256.*Use training seq_len <= 256"):
        recover(ckpt_make_pruned(ckpt_tiny_model("llama"), LAYERS), ckpt_tiny_tokenizer(), recipe)


def test_gguf_export_writes_a_different_lm_head_despite_the_tie_flag(tmp_path):
    import gguf
    from test_export_gguf import byte_level_tokenizer, with_vocab

    from optimum_flap.export import to_gguf

    tokenizer = byte_level_tokenizer()
    model = with_vocab(ckpt_tiny_model("llama"), tokenizer)
    model.config.tie_word_embeddings = True  # as transformers leaves it over a checkpoint storing another lm_head
    assert not torch.equal(model.lm_head.weight, model.model.embed_tokens.weight)
    to_gguf(model, tmp_path / "m.gguf", outtype="f32", tokenizer=tokenizer)
    reader = gguf.GGUFReader(tmp_path / "m.gguf")
    written = next(t for t in reader.tensors if t.name == "output.weight")
    assert torch.equal(torch.from_numpy(written.data.copy()).reshape(model.lm_head.weight.shape), model.lm_head.weight)
