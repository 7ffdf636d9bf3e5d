"""Bad calibration and evaluation inputs: each is refused early with the file, line, value and remedy named."""

from __future__ import annotations

import json
import os
import re

import pytest
import torch
import yaml
from eval_fixtures import char_tokenizer, tiny_llama

from optimum_flap import CalibrationDataError
from optimum_flap.data import DataFileError, check_token_ids, load_calibration_ids
from optimum_flap.evaluation import perplexity
from optimum_flap.evaluation.tasks import TASKS_DIR, _TaskLoader, render_tasks

TEXT = "the quick brown fox jumps over the lazy dog. " * 20


@pytest.fixture(scope="module")
def tok():
    return char_tokenizer()


@pytest.fixture(scope="module")
def model(tok):
    return tiny_llama(len(tok), seed=1, max_positions=64)


class _NeverCalled:
    """A tokenizer that fails the test if perplexity tokenizes before refusing its settings."""

    def __call__(self, *args, **kwargs):
        raise AssertionError("the text was tokenized before the settings were checked")


# ------------------------------------------------------------------------------------ calibration


def test_undecodable_calibration_file_names_file_and_line(tmp_path, tok):
    path = tmp_path / "calib.txt"
    path.write_bytes(b"first line\nsecond line\nthird \xff\xfe line\n")
    with pytest.raises(DataFileError, match=r"calib\.txt', line 3: byte 0xff is not valid UTF-8; re-encode"):
        load_calibration_ids(str(path), tok, 1, 4, seed=0)


def test_malformed_jsonl_names_the_line_counting_blank_lines(tmp_path, tok):
    path = tmp_path / "docs.jsonl"
    path.write_text(json.dumps({"text": TEXT}) + "\n\n" + '{"text": "unterminated\n')
    with pytest.raises(DataFileError, match=r"docs\.jsonl', line 3: not valid JSON .*one JSON object per line"):
        load_calibration_ids(str(path), tok, 1, 4, seed=0)


def test_jsonl_record_without_text_names_file_line_and_field(tmp_path, tok):
    path = tmp_path / "docs.jsonl"
    path.write_text(json.dumps({"text": TEXT}) + "\n" + json.dumps({"content": TEXT}) + "\n")
    with pytest.raises(DataFileError, match=r"docs\.jsonl', line 2: .*'text' field; found the fields \['content'\]"):
        load_calibration_ids(str(path), tok, 1, 4, seed=0)


def test_json_array_record_without_text_names_the_record(tmp_path, tok):
    path = tmp_path / "docs.json"
    path.write_text(json.dumps([{"text": TEXT}, {"text": TEXT}, {"text": 3}], indent=2))
    with pytest.raises(DataFileError, match=r"docs\.json', record 3: .*string 'text' field; found 'text' of type int"):
        load_calibration_ids(str(path), tok, 1, 4, seed=0)


def test_malformed_json_names_the_parser_line(tmp_path, tok):
    path = tmp_path / "docs.json"
    path.write_text('[\n  {"text": "a"},\n  {"text": }\n]\n')
    with pytest.raises(DataFileError, match=r"docs\.json', line 3: not valid JSON"):
        load_calibration_ids(str(path), tok, 1, 4, seed=0)


@pytest.mark.parametrize("bad_id,position", [(128, [1, 2]), (-1, [0, 3])])
def test_token_ids_outside_the_vocabulary_are_refused(bad_id, position):
    ids = torch.arange(8).view(2, 4)
    ids[tuple(position)] = bad_id
    with pytest.raises(CalibrationDataError, match=re.escape(
        f"token id {bad_id} at position {position} is outside the model's vocabulary [0, 128)"
    )):
        load_calibration_ids(ids, None, 2, 4, seed=0, vocab_size=128)
    with pytest.raises(CalibrationDataError, match="tokenize the calibration text with this model's tokenizer"):
        check_token_ids(ids, 128)
    ids[tuple(position)] = 127
    assert torch.equal(load_calibration_ids(ids, None, 2, 4, seed=0, vocab_size=128), ids)


def test_recorded_dataset_is_not_read_as_a_file(tok):
    recorded = "calib.txt@sha256:" + "ab" * 32
    with pytest.raises(CalibrationDataError, match=r"records a local calibration file .* pass the path of that file"):
        load_calibration_ids(recorded, tok, 1, 4, seed=0)


# ------------------------------------------------------------------------------------- perplexity


def test_whitespace_only_text_is_refused(tmp_path, model, tok):
    path = tmp_path / "blank.txt"
    path.write_text("  \n\n\t \n")
    with pytest.raises(ValueError, match=r"blank\.txt' holds no text \(empty or whitespace only\)"):
        perplexity(model, tok, str(path), seq_len=8, progress=False)


@pytest.mark.parametrize(
    "setting,value,message",
    [
        ("max_windows", 0, r"max_windows=0 is invalid; it must be None \(all windows\) or an int >= 1"),
        ("max_windows", -3, r"max_windows=-3 is invalid"),
        ("batch_size", 0, r"batch_size=0 is invalid; it must be an int >= 1"),
        ("seq_len", 1, r"seq_len=1 is invalid; it must be an int >= 2"),
        ("seq_len", 65, r"seq_len=65 exceeds the model's max_position_embeddings=64.*Use seq_len <= 64"),
        ("seq_len", 100_000, r"seq_len=100000 exceeds the model's max_position_embeddings=64"),
    ],
)
def test_bad_settings_are_refused_before_tokenizing(model, setting, value, message):
    kwargs = {"seq_len": 8, setting: value}
    with pytest.raises(ValueError, match=message):
        perplexity(model, _NeverCalled(), [TEXT], progress=False, **kwargs)


def test_max_position_embeddings_itself_is_allowed(model, tok):
    result = perplexity(model, tok, [TEXT], seq_len=64, max_windows=2, progress=False)
    assert result.seq_len == 64 and result.num_windows == 2 and result.perplexity > 1.0


def test_tokenizer_larger_than_the_model_vocabulary_is_refused(tok):
    small = tiny_llama(40, seed=1, max_positions=64)  # the char tokenizer yields ids up to ~100
    with pytest.raises(CalibrationDataError, match=r"Evaluation token id \d+ at position \[\d+\] is outside "
                       r"the model's vocabulary \[0, 40\).*tokenize the evaluation text with this model's tokenizer"):
        perplexity(small, tok, [TEXT], seq_len=8, progress=False)


def test_evaluation_jsonl_without_text_names_line_and_field(tmp_path, model, tok):
    path = tmp_path / "eval.jsonl"
    path.write_text(json.dumps({"text": TEXT}) + "\n" + json.dumps({"body": "x"}) + "\n")
    with pytest.raises(DataFileError, match=r"eval\.jsonl', line 2: .*'text' field; found the fields \['body'\]"):
        perplexity(model, tok, str(path), seq_len=8, progress=False)


def test_undecodable_evaluation_file_names_the_line(tmp_path, model, tok):
    path = tmp_path / "eval.raw"
    path.write_bytes(TEXT.encode() + b"\n\n\xc3(\n")
    with pytest.raises(DataFileError, match=r"eval\.raw', line 3: byte 0xc3 is not valid UTF-8"):
        perplexity(model, tok, str(path), seq_len=8, progress=False)


# ------------------------------------------------------------------------------------ task YAML

PAYLOAD = 'x"\ntask: injected\ncustom_dataset: !function os.system\n#\'${OPTIMUM_FLAP_ZEROSHOT_DIR}'


def _functions(node) -> set[str]:
    """Every `!function` reference in a loaded task."""
    if isinstance(node, dict):
        return set().union(*(_functions(v) for v in node.values())) if node else set()
    if isinstance(node, list):
        return set().union(*(_functions(v) for v in node)) if node else set()
    return {str(node)} if type(node).__name__ == "_FunctionRef" else set()


def test_crafted_data_directory_cannot_inject_yaml(tmp_path):
    crafted = tmp_path / PAYLOAD
    crafted.mkdir()
    out = render_tasks(crafted, tmp_path / "rendered")
    for template in sorted(TASKS_DIR.glob("*.yaml")):
        expected = yaml.load(template.read_text(encoding="utf-8"), Loader=_TaskLoader)  # noqa: S506
        rendered = yaml.load((out / template.name).read_text(encoding="utf-8"), Loader=_TaskLoader)  # noqa: S506
        assert list(rendered) == list(expected), template.name  # no key added or lost
        assert rendered["task"] == expected["task"]
        assert _functions(rendered) == _functions(expected)  # no `!function os.system`
        files = rendered["dataset_kwargs"]["data_files"]
        for split, value in files.items():
            suffix = expected["dataset_kwargs"]["data_files"][split].split("}", 1)[1]
            assert value == os.fspath(crafted.resolve()) + suffix  # the directory name arrives verbatim


def test_lm_eval_reads_the_documents_from_a_crafted_directory(tmp_path):
    pytest.importorskip("lm_eval")
    from optimum_flap.data_files import data_dir
    from optimum_flap.evaluation.zero_shot import load_tasks

    crafted = tmp_path / PAYLOAD
    (crafted / "boolq").mkdir(parents=True)
    rows = (data_dir() / "zeroshot" / "boolq" / "dev.jsonl").read_text(encoding="utf-8").splitlines()[:3]
    (crafted / "boolq" / "dev.jsonl").write_text("\n".join(rows) + "\n", encoding="utf-8")
    task = load_tasks(["boolq"], data_dir=crafted)["boolq"]
    assert task.config.task == "flap_boolq"
    assert [doc["question"] for doc in task.eval_docs] == [json.loads(row)["question"] for row in rows]
