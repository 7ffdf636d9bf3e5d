"""Calibration data: turn a dataset name, a file, texts or token ids into a `[num_samples, seq_len]` batch.

Two sampling rules, both deterministic for a seed (a private `random.Random`, no global state):

* a *stream* (WikiText-2, `.txt`/`.raw`/`.tokens` files, a list of strings) is tokenized once and
  `num_samples` random windows of `seq_len` tokens are cut from it, as FLAP does for WikiText-2;
* *documents* (C4, `.jsonl`/`.json` records) are drawn at random among those with more than
  `seq_len` tokens and a random window is cut from each, as Wanda/SparseGPT do for C4.

Where the tokenizer starts every text with BOS (Gemma), each window is BOS and `seq_len - 1` text
tokens. Pre-tokenized ids (a 2-D tensor or a list of equal-length id lists) are used verbatim.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Sequence
from typing import Any

import torch

from .bos import added_bos_id, prepend_bos

STREAM_SUFFIXES = (".txt", ".raw", ".tokens")
DOCUMENT_SUFFIXES = (".jsonl", ".json")
LOCAL_ALTERNATIVES = {
    "wikitext2": "../shared/data/wikitext2/wiki.valid.tokens",
    "c4": "../shared/data/c4/sample_c4-rp1.jsonl",
}


class CalibrationDataError(ValueError):
    """The calibration data cannot provide what the config asks for."""


def load_calibration_ids(
    dataset: str | Sequence[str] | Sequence[Sequence[int]] | torch.Tensor,
    tokenizer: Any,
    num_samples: int,
    seq_len: int,
    seed: int,
) -> torch.LongTensor:
    """The calibration batch for `dataset`, shape `[num_samples, seq_len]` (verbatim for token ids)."""
    if isinstance(dataset, torch.Tensor) or (
        not isinstance(dataset, str) and len(dataset) > 0 and not isinstance(dataset[0], str)
    ):
        return _pretokenized(dataset)
    if tokenizer is None:
        raise CalibrationDataError("A tokenizer is needed to calibrate on text; pass one or give token ids.")
    # a tokenizer that starts every text with BOS gets windows that do too (see optimum_flap/bos.py)
    bos = added_bos_id(tokenizer)
    text_len = seq_len - 1 if bos is not None else seq_len
    return prepend_bos(_sample_text(dataset, tokenizer, num_samples, text_len, random.Random(seed)), bos)


def _sample_text(
    dataset: str | Sequence[str], tokenizer: Any, num_samples: int, seq_len: int, rng: random.Random
) -> torch.LongTensor:
    """`num_samples` windows of `seq_len` text tokens from a dataset name, a file or a list of strings."""
    if isinstance(dataset, str):
        if dataset in LOCAL_ALTERNATIVES and not os.path.isfile(dataset):
            return _from_hub(dataset, tokenizer, num_samples, seq_len, rng)
        return _from_file(dataset, tokenizer, num_samples, seq_len, rng)
    return sample_stream(_tokenize_stream("\n\n".join(dataset), tokenizer), num_samples, seq_len, rng)


def sample_stream(ids: torch.LongTensor, num_samples: int, seq_len: int, rng: random.Random) -> torch.LongTensor:
    """`num_samples` random windows of `seq_len` tokens from one long token stream."""
    needed = num_samples * seq_len
    if ids.numel() < max(needed, seq_len + 1):
        raise CalibrationDataError(
            f"The calibration text has {ids.numel()} tokens, fewer than num_samples x seq_len = "
            f"{num_samples} x {seq_len} = {needed}; give more text or lower num_samples/seq_len."
        )
    starts = [rng.randint(0, ids.numel() - seq_len - 1) for _ in range(num_samples)]
    return torch.stack([ids[s : s + seq_len] for s in starts])


def sample_documents(
    documents: list[torch.LongTensor], num_samples: int, seq_len: int, rng: random.Random
) -> torch.LongTensor:
    """`num_samples` random windows, each from a random document longer than `seq_len` tokens."""
    long_enough = [doc for doc in documents if doc.numel() > seq_len]
    available = sum(doc.numel() for doc in long_enough)
    if available < num_samples * seq_len:
        raise CalibrationDataError(
            f"The calibration documents longer than seq_len={seq_len} hold {available} tokens "
            f"({len(long_enough)} of {len(documents)} documents), fewer than num_samples x seq_len = "
            f"{num_samples * seq_len}; give more text or lower num_samples/seq_len."
        )
    windows = []
    for _ in range(num_samples):
        doc = long_enough[rng.randrange(len(long_enough))]
        start = rng.randint(0, doc.numel() - seq_len - 1)
        windows.append(doc[start : start + seq_len])
    return torch.stack(windows)


def _pretokenized(dataset: Sequence[Sequence[int]] | torch.Tensor) -> torch.LongTensor:
    try:
        ids = torch.as_tensor(dataset if isinstance(dataset, torch.Tensor) else [list(row) for row in dataset])
    except (ValueError, TypeError) as err:
        raise CalibrationDataError(
            "Pre-tokenized calibration data must be a 2-D tensor or a list of equal-length token-id lists."
        ) from err
    if ids.ndim != 2 or ids.shape[1] < 2 or ids.dtype.is_floating_point:
        raise CalibrationDataError(
            f"Pre-tokenized calibration data must be integer ids of shape [samples, seq_len >= 2]; "
            f"got shape {tuple(ids.shape)} and dtype {ids.dtype}."
        )
    return ids.long()


def _tokenize_stream(text: str, tokenizer: Any) -> torch.LongTensor:
    return torch.as_tensor(tokenizer(text, add_special_tokens=False)["input_ids"], dtype=torch.long)


def _tokenize_documents(texts: list[str], tokenizer: Any) -> list[torch.LongTensor]:
    encoded = tokenizer(texts, add_special_tokens=False)["input_ids"]
    return [torch.as_tensor(ids, dtype=torch.long) for ids in encoded]


def _from_file(
    path: str, tokenizer: Any, num_samples: int, seq_len: int, rng: random.Random
) -> torch.LongTensor:
    suffix = os.path.splitext(path)[1].lower()
    if suffix in STREAM_SUFFIXES:
        with open(path, encoding="utf-8") as f:
            text = "\n\n".join(line.strip() for line in f if line.strip())
        return sample_stream(_tokenize_stream(text, tokenizer), num_samples, seq_len, rng)
    if suffix in DOCUMENT_SUFFIXES:
        texts = _read_json_texts(path)
        return sample_documents(_tokenize_documents(texts, tokenizer), num_samples, seq_len, rng)
    raise CalibrationDataError(
        f"Unsupported calibration file {path!r}; allowed suffixes: "
        f"{', '.join(STREAM_SUFFIXES + DOCUMENT_SUFFIXES)}."
    )


def _read_json_texts(path: str) -> list[str]:
    with open(path, encoding="utf-8") as f:
        if path.lower().endswith(".jsonl"):
            records = [json.loads(line) for line in f if line.strip()]
        else:
            loaded = json.load(f)
            records = loaded if isinstance(loaded, list) else [loaded]
    if not records or not all(isinstance(r, dict) and isinstance(r.get("text"), str) for r in records):
        raise CalibrationDataError(f"Every record of {path!r} must be an object with a string 'text' field.")
    return [r["text"] for r in records]


def _from_hub(name: str, tokenizer: Any, num_samples: int, seq_len: int, rng: random.Random) -> torch.LongTensor:
    """Download the named dataset with `datasets`; offline this fails with the local-file alternative."""
    import datasets

    try:
        if name == "wikitext2":
            rows = datasets.load_dataset("Salesforce/wikitext", "wikitext-2-raw-v1", split="train")["text"]
        else:
            rows = datasets.load_dataset(
                "allenai/c4", data_files={"train": "en/c4-train.00000-of-01024.json.gz"}, split="train"
            )["text"]
    except Exception as err:  # datasets raises many connection/offline error types
        raise CalibrationDataError(
            f"Could not load dataset {name!r} from the Hugging Face Hub ({type(err).__name__}: {err}). "
            f"Offline, pass a local file instead, e.g. dataset={LOCAL_ALTERNATIVES[name]!r}."
        ) from err
    if name == "wikitext2":
        return sample_stream(_tokenize_stream(" ".join(rows), tokenizer), num_samples, seq_len, rng)
    documents = _tokenize_documents(list(rows[:20000]), tokenizer)
    return sample_documents(documents, num_samples, seq_len, rng)
