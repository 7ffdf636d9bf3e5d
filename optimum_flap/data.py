"""Calibration data: turn a dataset name, a file, texts or token ids into a `[num_samples, seq_len]` batch.

Two sampling rules, both deterministic for a seed (a private `random.Random`, no global state):

* a *stream* (WikiText-2, `.txt`/`.raw`/`.tokens` files, a list of strings) is tokenized once and
  `num_samples` random windows of `seq_len` tokens are cut from it, as FLAP does for WikiText-2;
* *documents* (C4, `.jsonl`/`.json` records) are drawn at random among those with more than
  `seq_len` tokens and a random window is cut from each, as Wanda/SparseGPT do for C4.

Where the tokenizer starts every text with BOS (Gemma), each window is BOS and `seq_len - 1` text
tokens. Pre-tokenized ids (a 2-D tensor or a list of equal-length id lists) are used verbatim. The names
``"wikitext2"`` and ``"c4"`` mean the shared local files when they exist and the Hub otherwise (the
rule is in `optimum_flap.data_files`).
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from .bos import added_bos_id, prepend_bos
from .data_files import NAMED_CALIBRATION_FILES, data_dir
from .privacy import is_recorded_dataset

STREAM_SUFFIXES = (".txt", ".raw", ".tokens")
DOCUMENT_SUFFIXES = (".jsonl", ".json")


class CalibrationDataError(ValueError):
    """The calibration data cannot provide what the config asks for."""


class DataFileError(CalibrationDataError):
    """A calibration or evaluation file cannot be read: the message names the file, the line and the fix."""


def read_text_file(path: str | os.PathLike[str]) -> str:
    """The UTF-8 text of `path` with universal newlines (`"\\r\\n"` and `"\\r"` become `"\\n"`).

    An undecodable byte is reported with the file and its 1-based line number, not as Python's
    byte offset deep inside a codec traceback.
    """
    raw = Path(path).read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw.count(b"\n", 0, err.start) + 1
        raise DataFileError(
            f"{os.fspath(path)!r}, line {line}: byte {raw[err.start]:#04x} is not valid UTF-8; "
            "re-encode the file as UTF-8 (e.g. `iconv -f latin1 -t utf-8`)."
        ) from None
    return text.replace("\r\n", "\n").replace("\r", "\n")


def read_json_texts(path: str | os.PathLike[str], field: str = "text") -> list[str]:
    """The string `field` of every record of a `.jsonl` (one object per line) or `.json` file.

    Malformed JSON, a record that is not an object, or a missing or non-string `field` is an error
    naming the file, the field and where: the 1-based line (`.jsonl`, and JSON syntax errors) or the
    1-based record number (a record of a `.json` array).
    """
    name = os.fspath(path)
    text = read_text_file(path)
    records: list[tuple[str, Any]] = []
    if name.lower().endswith(".jsonl"):
        for lineno, line in enumerate(text.split("\n"), start=1):
            if not line.strip():
                continue
            try:
                records.append((f"line {lineno}", json.loads(line)))
            except json.JSONDecodeError as err:
                raise DataFileError(
                    f"{name!r}, line {lineno}: not valid JSON ({err.msg}); a .jsonl file holds one JSON object "
                    f"per line, e.g. {{\"{field}\": \"...\"}}."
                ) from None
    else:
        try:
            loaded = json.loads(text)
        except json.JSONDecodeError as err:
            raise DataFileError(f"{name!r}, line {err.lineno}: not valid JSON ({err.msg}).") from None
        items = loaded if isinstance(loaded, list) else [loaded]
        records = [(f"record {index}", item) for index, item in enumerate(items, start=1)]
    if not records:
        raise DataFileError(f"{name!r} holds no records; every record must be an object with a string {field!r} field.")
    for where, record in records:
        if not isinstance(record, dict) or not isinstance(record.get(field), str):
            if not isinstance(record, dict):
                found = f"a JSON {type(record).__name__}"
            elif field in record:
                found = f"{field!r} of type {type(record[field]).__name__}"
            else:
                found = f"the fields {sorted(record)}"
            raise DataFileError(
                f"{name!r}, {where}: every record must be an object with a string {field!r} field; "
                f"found {found}."
            )
    return [record[field] for _, record in records]


def check_token_ids(ids: torch.Tensor, vocab_size: int, purpose: str = "calibration") -> None:
    """Raise `CalibrationDataError` if a token id is negative or not below `vocab_size`.

    Pre-tokenized ids are used verbatim, so an id from another tokenizer would only surface as an
    index error deep inside the embedding; call this where the model's vocabulary size is known
    (before the first forward pass). `purpose` names the data in the message.
    """
    bad = (ids < 0) | (ids >= vocab_size)
    if bool(bad.any()):
        position = tuple(int(i) for i in bad.nonzero()[0])
        raise CalibrationDataError(
            f"{purpose.capitalize()} token id {int(ids[position])} at position {list(position)} is outside the "
            f"model's vocabulary [0, {vocab_size}) ({int(bad.sum())} such ids); tokenize the {purpose} text with "
            "this model's tokenizer."
        )


def check_positions(config: Any, length: int, what: str = "seq_len") -> None:
    """Raise `CalibrationDataError` when `length` tokens do not fit the model's `max_position_embeddings`.

    Positions beyond it were never trained (and rotary tables or learned position embeddings may not
    cover them), so calibrating, evaluating or timing on longer sequences gives numbers of another
    model. Every length a run feeds the model (calibration, training, perplexity windows, benchmark
    prompts) is checked here; `what` names it in the message. A config without the field passes.
    """
    limit = getattr(config, "max_position_embeddings", None)
    if isinstance(limit, int) and not isinstance(limit, bool) and length > limit:
        raise CalibrationDataError(
            f"{what}={length} exceeds the model's max_position_embeddings={limit}; positions beyond it were "
            f"never trained. Use {what} <= {limit}."
        )


def load_calibration_ids(
    dataset: str | Sequence[str] | Sequence[Sequence[int]] | torch.Tensor,
    tokenizer: Any,
    num_samples: int,
    seq_len: int,
    seed: int,
    vocab_size: int | None = None,
) -> torch.LongTensor:
    """The calibration batch for `dataset`, shape `[num_samples, seq_len]` (verbatim for token ids).

    With `vocab_size` (the model's `config.vocab_size`) every id is checked by `check_token_ids`.
    """
    ids = _calibration_ids(dataset, tokenizer, num_samples, seq_len, seed)
    if vocab_size is not None:
        check_token_ids(ids, vocab_size)
    return ids


def is_token_ids(dataset: Any) -> bool:
    """True for calibration data given as token ids (a tensor or rows of ints): no tokenizer is needed."""
    return isinstance(dataset, torch.Tensor) or (
        not isinstance(dataset, str) and len(dataset) > 0 and not isinstance(dataset[0], str)
    )


def _calibration_ids(
    dataset: str | Sequence[str] | Sequence[Sequence[int]] | torch.Tensor,
    tokenizer: Any,
    num_samples: int,
    seq_len: int,
    seed: int,
) -> torch.LongTensor:
    if is_token_ids(dataset):
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
        if is_recorded_dataset(dataset) and not os.path.isfile(dataset):
            raise CalibrationDataError(
                f"dataset={dataset!r} is how a checkpoint records a local calibration file (its name and "
                "SHA-256), not a file to read; pass the path of that file (check its hash with sha256sum)."
            )
        if dataset in NAMED_CALIBRATION_FILES and not os.path.isfile(dataset):
            local = data_dir() / NAMED_CALIBRATION_FILES[dataset]
            if not local.is_file():
                return _from_hub(dataset, tokenizer, num_samples, seq_len, rng)
            dataset = str(local)
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
        text = "\n\n".join(line.strip() for line in read_text_file(path).split("\n") if line.strip())
        return sample_stream(_tokenize_stream(text, tokenizer), num_samples, seq_len, rng)
    if suffix in DOCUMENT_SUFFIXES:
        texts = read_json_texts(path)
        return sample_documents(_tokenize_documents(texts, tokenizer), num_samples, seq_len, rng)
    raise CalibrationDataError(
        f"Unsupported calibration file {path!r}; allowed suffixes: "
        f"{', '.join(STREAM_SUFFIXES + DOCUMENT_SUFFIXES)}."
    )


def _from_hub(name: str, tokenizer: Any, num_samples: int, seq_len: int, rng: random.Random) -> torch.LongTensor:
    """Download the named dataset with `datasets` (no local copy); offline this fails naming the local file."""
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
            f"Offline, put {NAMED_CALIBRATION_FILES[name]} under the data root {data_dir()} "
            "(or set OPTIMUM_FLAP_DATA_DIR), or pass a local file."
        ) from err
    if name == "wikitext2":
        return sample_stream(_tokenize_stream(" ".join(rows), tokenizer), num_samples, seq_len, rng)
    documents = _tokenize_documents(list(rows[:20000]), tokenizer)
    return sample_documents(documents, num_samples, seq_len, rng)
