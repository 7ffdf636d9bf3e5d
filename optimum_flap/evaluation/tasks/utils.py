"""Document hooks for the local copies of lm-eval's zero-shot tasks.

Each function reproduces what the published lm-eval task does with its Hub dataset, adapted to the
field names of the local files in ``../shared/data/zeroshot`` (see SOURCES.md there). They are
referenced from the task YAML files next to this module by their importable name
(``!function optimum_flap.evaluation.tasks.utils.<name>``), so the YAML also works when rendered
into another directory.
"""

from __future__ import annotations

import re
from typing import Any

import datasets

# --------------------------------------------------------------------------------------- BoolQ


def boolq_process_docs(dataset: datasets.Dataset) -> datasets.Dataset:
    """Add lm-eval's integer ``label`` (0 = "no", 1 = "yes") from the original boolean ``answer``."""
    return dataset.map(lambda doc: {"label": int(bool(doc["answer"]))})


# ---------------------------------------------------------------------------------------- PIQA


def load_piqa(
    data_files: dict[str, str] | None = None, labels_file: str | None = None, **_: Any
) -> datasets.DatasetDict:
    """Load PIQA's original ``valid.jsonl`` and attach the labels kept in a separate ``.lst`` file.

    lm-eval's PIQA copy carries ``label`` inline; the original release keeps it in
    ``valid-labels.lst``, one label per line in document order. Called by lm-eval as the task's
    ``custom_dataset`` with the task's ``dataset_kwargs`` (and its metadata, ignored here).
    """
    if not data_files or labels_file is None:
        raise ValueError("load_piqa needs data_files={'validation': ...} and labels_file=...")
    dsd = datasets.load_dataset("json", data_files=data_files)
    with open(labels_file, encoding="utf-8") as fh:
        labels = [int(line) for line in fh if line.strip()]
    out = {}
    for split, ds in dsd.items():
        if len(ds) != len(labels):
            raise ValueError(f"PIQA {split}: {len(ds)} documents but {len(labels)} labels in {labels_file}")
        out[split] = ds.add_column("label", labels)
    return datasets.DatasetDict(out)


# ----------------------------------------------------------------------------------- HellaSwag


def hellaswag_preprocess(text: str) -> str:
    """lm-eval's HellaSwag clean-up: drop WikiHow ``[header]``-style artifacts and double spaces."""
    text = text.strip()
    text = text.replace(" [title]", ". ")
    text = re.sub("\\[.*?\\]", "", text)
    text = text.replace("  ", " ")
    return text


_SENTENCE_BREAK = re.compile(r"(?<=[.!?]) ")


def restore_ctx_b_capitalization(query: str) -> str:
    """Approximate lm-eval's ``ctx_a + " " + ctx_b.capitalize()`` on a query without the ctx split.

    The llama.cpp copy joined ``ctx_a`` and ``ctx_b`` without capitalizing ``ctx_b``. In
    ActivityNet items ``ctx_b`` is the unfinished last sentence, so its start is the text after the
    last sentence break; it is re-capitalized with ``str.capitalize`` as lm-eval does. WikiHow
    items (body starting with "How to") have an empty ``ctx_b`` in HellaSwag and are left alone,
    which avoids touching abbreviations such as "p.m. to".
    """
    label, sep, body = query.partition(": ")
    if not sep or body.startswith("How to"):
        return query
    parts = _SENTENCE_BREAK.split(body)
    last = parts[-1]
    if len(parts) < 2 or not last[:1].islower():
        return query
    parts[-1] = last.capitalize()
    return label + sep + " ".join(parts)


def hellaswag_process_docs(dataset: datasets.Dataset) -> datasets.Dataset:
    """Build lm-eval's ``{query, choices, gold}`` docs from the derived ``{query, label, endings}``."""

    def _process(doc: dict[str, Any]) -> dict[str, Any]:
        return {
            "query": hellaswag_preprocess(restore_ctx_b_capitalization(doc["query"])),
            "choices": [hellaswag_preprocess(e) for e in doc["endings"]],
            "gold": int(doc["label"]),
        }

    return dataset.map(_process)


# ---------------------------------------------------------------------------------- WinoGrande


def winogrande_doc_to_text(doc: dict[str, Any]) -> int:
    """Index of the correct context: lm-eval scores WinoGrande with one context per option."""
    return {"1": 0, "2": 1}[str(doc["answer"])]


def winogrande_doc_to_target(doc: dict[str, Any]) -> str:
    """The shared continuation: the sentence after the blank."""
    idx = doc["sentence"].index("_") + 1
    return doc["sentence"][idx:].strip()


def winogrande_doc_to_choice(doc: dict[str, Any]) -> list[str]:
    """The two contexts: the sentence up to the blank, filled with each option."""
    idx = doc["sentence"].index("_")
    return [doc["sentence"][:idx] + opt for opt in (doc["option1"], doc["option2"])]
