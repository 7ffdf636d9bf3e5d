"""Zero-shot tasks: each of the seven loads from the local files and scores through lm-eval.

Besides "it runs", the tests check that the local task definitions render the same prompts,
choices and targets as lm-eval's published ones (applied to the equivalent Hub-format document),
and use an all-uniform model, whose answers are known in advance, to check the scoring end to end.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

lm_eval = pytest.importorskip("lm_eval")

from eval_fixtures import char_tokenizer, tiny_llama  # noqa: E402

from optimum_flap.data_files import data_dir  # noqa: E402
from optimum_flap.evaluation import zero_shot  # noqa: E402
from optimum_flap.evaluation.tasks import STANDARD_TASKS, canonical_name, render_tasks  # noqa: E402
from optimum_flap.evaluation.tasks.utils import restore_ctx_b_capitalization  # noqa: E402
from optimum_flap.evaluation.zero_shot import load_tasks  # noqa: E402

DATA = data_dir()
ZS = DATA / "zeroshot"
UPSTREAM = Path(lm_eval.__file__).parent / "tasks"
needs_data = pytest.mark.skipif(not ZS.is_dir(), reason="shared zero-shot data not present")

#: documents in each full local test set (= lm-eval's split sizes)
SIZES = {"boolq": 3270, "piqa": 1838, "hellaswag": 10042, "winogrande": 1267,
         "arc_easy": 2376, "arc_challenge": 1172, "openbookqa": 500}
WITH_ACC_NORM = {"piqa", "hellaswag", "arc_easy", "arc_challenge", "openbookqa"}
LIMIT = 4


@pytest.fixture(scope="module")
def tok():
    return char_tokenizer()


@pytest.fixture(scope="module")
def model(tok):
    return tiny_llama(len(tok))


@pytest.fixture(scope="module")
def uniform(tok):
    """All-zero LM head: every token has log-probability -log V, so a continuation's log-likelihood
    is -len(continuation) * log V and the shortest choice always wins (first one on ties)."""
    m = tiny_llama(len(tok))
    torch.nn.init.zeros_(m.lm_head.weight)
    return m


@pytest.fixture(scope="module")
def tasks():
    if not ZS.is_dir():
        pytest.skip("shared zero-shot data not present")
    return load_tasks(data_dir=DATA)


def first_rows(path: Path, n: int) -> list[dict]:
    with path.open(encoding="utf-8") as fh:
        return [json.loads(line) for _, line in zip(range(n), fh, strict=False)]


@needs_data
@pytest.mark.parametrize("task", list(STANDARD_TASKS))
def test_each_task_loads_locally_and_scores(task, model, tok):
    res = zero_shot(model, tok, tasks=[task], data_dir=DATA, limit=LIMIT, batch_size=4)
    row = res.tasks[task]
    assert row["num_docs"] == LIMIT
    assert row["total_docs"] == SIZES[task]
    assert 0.0 <= row["acc"] <= 1.0
    assert "acc_stderr" in row
    if task in WITH_ACC_NORM:
        assert 0.0 <= row["acc_norm"] <= 1.0
    else:
        assert "acc_norm" not in row
    assert res.average == pytest.approx(row["acc"])


@needs_data
def test_all_seven_tasks_full_sizes(tasks):
    assert {name: len(t.eval_docs) for name, t in tasks.items()} == SIZES


@needs_data
def test_uniform_model_boolq_and_winogrande(uniform, tok):
    """BoolQ: " no" is shorter than " yes", so acc = share of false answers. WinoGrande scores only
    the shared continuation (partial scoring), so both options tie and option 1 wins: acc = share of
    answer "1". Both are computed from the files, independently of lm-eval."""
    n = 8
    res = zero_shot(uniform, tok, tasks=["boolq", "winogrande"], data_dir=DATA, limit=n, batch_size=8)
    boolq = first_rows(ZS / "boolq" / "dev.jsonl", n)
    wino = first_rows(ZS / "winogrande" / "dev.jsonl", n)
    assert res.tasks["boolq"]["acc"] == pytest.approx(sum(not d["answer"] for d in boolq) / n)
    assert res.tasks["winogrande"]["acc"] == pytest.approx(sum(d["answer"] == "1" for d in wino) / n)


def test_correct_by_construction_gives_acc_one(tmp_path, uniform, tok):
    """ARC-format file where the gold choice is always the shortest one: the uniform model must score
    acc 1.0; with the gold choice the longest, acc 0.0."""
    docs = [
        {"query": "Question: Which is shortest?", "choices": ["a", "bbbb", "ccccc", "dddddd"], "gold": 0},
        {"query": "Question: Pick one.", "choices": ["bbbb", "a", "ccccc", "dddddd"], "gold": 1},
        {"query": "Question: And now?", "choices": ["ccccc", "bbbb", "a", "dddddd"], "gold": 2},
        {"query": "Question: Last one.", "choices": ["dddddd", "bbbb", "ccccc", "a"], "gold": 3},
    ]
    for task, gold_is_shortest in (("arc_easy", True), ("arc_challenge", False)):
        path = tmp_path / "zeroshot" / task / f"{task}.llmfoundry.jsonl"
        path.parent.mkdir(parents=True)
        with path.open("w") as fh:
            for d in docs:
                if not gold_is_shortest:  # move "dddddd" (longest) to the gold position
                    ch = [c for c in d["choices"] if c != "dddddd"]
                    ch.insert(d["gold"], "dddddd")
                    d = {**d, "choices": ch}
                fh.write(json.dumps(d) + "\n")
    res = zero_shot(uniform, tok, tasks=["arc_easy", "arc_challenge"], data_dir=tmp_path, batch_size=4)
    assert res.tasks["arc_easy"]["acc"] == 1.0
    assert res.tasks["arc_challenge"]["acc"] == 0.0
    assert res.tasks["arc_easy"]["num_docs"] == 4
    assert res.average == pytest.approx(0.5)


# ------------------------------------------------------------- parity with lm-eval's published tasks


def upstream(path: str) -> dict:
    from lm_eval.tasks._yaml_loader import load_yaml

    return load_yaml(UPSTREAM / path)


def render(template: str, doc: dict) -> str:
    from lm_eval.utils import apply_template

    return apply_template(template, doc)


def metrics(cfg: dict) -> set[str]:
    return {m["metric"] for m in cfg["metric_list"]}


@needs_data
def test_boolq_matches_lm_eval(tasks):
    cfg, task = upstream("super_glue/boolq/default.yaml"), tasks["boolq"]
    for doc in list(task.eval_docs)[:5]:
        hub_doc = {"passage": doc["passage"], "question": doc["question"], "label": int(doc["answer"])}
        assert task.doc_to_text(doc) == render(cfg["doc_to_text"], hub_doc)
        assert task.doc_to_choice(doc) == cfg["doc_to_choice"]
        assert task.doc_to_target(doc) == hub_doc["label"]
    assert set(task._metric_fn_list) == metrics(cfg)


@needs_data
def test_piqa_matches_lm_eval(tasks):
    cfg, task = upstream("piqa/piqa.yaml"), tasks["piqa"]
    labels = [int(x) for x in (ZS / "piqa" / "valid-labels.lst").read_text().split()][:5]
    raw = first_rows(ZS / "piqa" / "valid.jsonl", 5)
    for doc, hub_doc, label in zip(list(task.eval_docs)[:5], raw, labels, strict=True):
        assert task.doc_to_text(doc) == render(cfg["doc_to_text"], hub_doc)
        assert task.doc_to_choice(doc) == [hub_doc["sol1"], hub_doc["sol2"]]
        assert task.doc_to_target(doc) == label
    assert set(task._metric_fn_list) == metrics(cfg)


@needs_data
@pytest.mark.parametrize("name,yaml_path", [("arc_easy", "arc/arc_easy.yaml"), ("arc_challenge", "arc/arc_easy.yaml")])
def test_arc_matches_lm_eval(tasks, name, yaml_path):
    cfg, task = upstream(yaml_path), tasks[name]
    for doc in list(task.eval_docs)[:5]:
        hub_doc = {"question": doc["query"].removeprefix("Question: ")}
        assert task.doc_to_text(doc) == render(cfg["doc_to_text"], hub_doc)
        assert task.doc_to_choice(doc) == doc["choices"]
        assert task.doc_to_target(doc) == doc["gold"]
    assert set(task._metric_fn_list) == metrics(cfg)


@needs_data
def test_openbookqa_matches_lm_eval(tasks):
    cfg, task = upstream("openbookqa/openbookqa.yaml"), tasks["openbookqa"]
    doc = task.eval_docs[0]
    assert cfg["doc_to_text"] == "question_stem"  # the plain stem, no "Question:"/"Answer:"
    assert task.doc_to_text(doc) == doc["query"]
    assert set(task._metric_fn_list) == metrics(cfg)


@needs_data
def test_winogrande_matches_lm_eval(tasks):
    cfg, task = upstream("winogrande/default.yaml"), tasks["winogrande"]
    for doc in list(task.eval_docs)[:5]:
        assert task.doc_to_text(doc) == cfg["doc_to_text"](doc)
        assert task.doc_to_choice(doc) == cfg["doc_to_choice"](doc)
        assert task.doc_to_target(doc) == cfg["doc_to_target"](doc)
    assert set(task._metric_fn_list) == metrics(cfg)


@needs_data
def test_hellaswag_matches_lm_eval_on_reconstructed_doc(tasks):
    """The first validation item in Hub format is known; lm-eval's own process_docs on it must give
    the query, choices and gold our task derives from the llama.cpp copy."""
    import datasets

    cfg, task = upstream("hellaswag/hellaswag.yaml"), tasks["hellaswag"]
    ours = task.eval_docs[0]
    hub = datasets.Dataset.from_list([{
        "activity_label": "Roof shingle removal",
        "ctx_a": "A man is sitting on a roof.",
        "ctx_b": "he",
        "endings": ours["endings"],
        "label": str(ours["label"]),
    }])
    theirs = cfg["process_docs"](hub)[0]
    assert task.doc_to_text(ours) == render(cfg["doc_to_text"], theirs)
    assert task.doc_to_choice(ours) == theirs["choices"]
    assert task.doc_to_target(ours) == theirs["gold"]
    assert set(task._metric_fn_list) == metrics(cfg)


def test_capitalization_heuristic():
    assert restore_ctx_b_capitalization("Clean and jerk: A lady walks. She bends. the lady") == (
        "Clean and jerk: A lady walks. She bends. The lady"
    )
    wikihow = "Health: How to rest. Sleep from 9 p.m. to 7 a.m. every day."
    assert restore_ctx_b_capitalization(wikihow) == wikihow


def test_task_names_and_rendering(tmp_path):
    assert canonical_name("flap_piqa") == canonical_name("PIQA") == "piqa"
    assert canonical_name("arc-e") == "arc_easy"
    with pytest.raises(KeyError):
        canonical_name("mmlu")
    out = render_tasks(tmp_path / "data", tmp_path / "tasks")
    text = (out / "piqa.yaml").read_text()
    assert "${" not in text and str((tmp_path / "data").resolve()) in text
    assert len(list(out.glob("*.yaml"))) == 7


def test_missing_data_is_a_clear_error(tmp_path, model, tok):
    with pytest.raises(FileNotFoundError, match="boolq/dev.jsonl"):
        zero_shot(model, tok, tasks=["boolq"], data_dir=tmp_path)


@pytest.mark.slow
def test_smollm2_piqa_above_chance():
    """Dense SmolLM2-135M on 30 PIQA items (22/30 = 0.733 measured): a real model beats 2-way chance."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from optimum_flap.utils.gguf import smollm2_checkpoint

    path = smollm2_checkpoint()
    m = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    t = AutoTokenizer.from_pretrained(path)
    res = zero_shot(m, t, tasks=["piqa"], data_dir=DATA, limit=30, batch_size=8)
    assert res.tasks["piqa"]["num_docs"] == 30
    assert res.tasks["piqa"]["acc"] > 0.6
