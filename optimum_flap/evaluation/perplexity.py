"""Token-level perplexity with the protocol of the FLAP / Wanda / SparseGPT papers.

The protocol matters more than the code: published pruning numbers are only comparable when the
text is joined the same way, tokenized once, cut into the same non-overlapping windows and averaged
the same way. So the protocol is spelled out here and returned with every number:

1. the test rows are joined with ``"\\n\\n"`` (as ``"\\n\\n".join(testdata["text"])`` in the papers);
2. the joined text is tokenized once, with the tokenizer's default special tokens;
3. it is cut into ``len(tokens) // seq_len`` non-overlapping windows of ``seq_len`` tokens (the
   tail is dropped), optionally only the first ``max_windows``; where the tokenizer starts every text
   with BOS (Gemma), the text is tokenized without it and each window is BOS followed by
   ``seq_len - 1`` text tokens (``optimum_flap/bos.py``), since such models expect it;
4. each window's loss is the mean next-token NLL over its ``seq_len - 1`` predicted tokens (what
   Hugging Face computes with ``labels=input_ids``);
5. ``perplexity = exp(mean over windows of the window loss)``, which equals ``exp`` of the mean NLL
   over all predicted tokens because every window predicts the same number of tokens.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from ..bos import added_bos_id, prepend_bos
from ..data import check_positions, check_token_ids, read_json_texts, read_text_file
from ..data_files import DATA_DIR_ENV, WIKITEXT2_TEST, data_dir

#: Hub dataset and config used when the local WikiText-2 file is not available
WIKITEXT2_HUB = ("Salesforce/wikitext", "wikitext-2-raw-v1")
#: the dataset names that mean WikiText-2's test split
WIKITEXT2_NAMES = frozenset({"wikitext2", "wikitext-2", "wikitext"})


@dataclass(frozen=True)
class PerplexityResult:
    """A perplexity value together with the protocol that produced it."""

    perplexity: float
    #: tokens per window
    seq_len: int
    #: windows scored
    num_windows: int
    #: tokens fed to the model (``num_windows * seq_len``)
    num_tokens: int
    #: what was scored: ``"wikitext2"`` (with the file or Hub id it came from), a path or ``"texts"``
    dataset: str
    #: tokens predicted, i.e. that contribute an NLL (``num_windows * (seq_len - 1)``)
    num_predicted_tokens: int = 0
    #: mean NLL per predicted token, in nats (``log(perplexity)``)
    mean_nll: float = float("nan")
    #: length of the whole tokenized text, before cutting into windows
    total_tokens: int = 0
    #: whether each window starts with the BOS token the tokenizer adds (then ``seq_len - 1`` text tokens)
    bos_per_window: bool = False

    def to_dict(self) -> dict[str, Any]:
        """Plain dict, for JSON reports."""
        return asdict(self)


def wikitext2_rows(source: str | os.PathLike[str] | None = None) -> tuple[list[str], str]:
    """Return the rows of the WikiText-2 raw test split and a description of where they came from.

    Local first, because the evaluation has to run offline: ``source`` if given, else
    ``$OPTIMUM_FLAP_DATA_DIR/wikitext2/wiki.test.raw`` (default ``../shared/data``). Only when that
    file is missing is the Hub dataset ``Salesforce/wikitext`` (``wikitext-2-raw-v1``, test) tried.
    """
    path = Path(source) if source is not None else data_dir() / WIKITEXT2_TEST
    if path.is_file():
        return read_text_rows(path), f"wikitext2:{path}"
    try:
        import datasets

        ds = datasets.load_dataset(*WIKITEXT2_HUB, split="test")
    except Exception as exc:  # offline, no cache, hub error: all end the same way for the user
        raise FileNotFoundError(
            f"WikiText-2 test text not found locally at {path} and the Hub dataset "
            f"{WIKITEXT2_HUB[0]!r} ({WIKITEXT2_HUB[1]}) could not be loaded ({exc.__class__.__name__}: "
            f"{exc}). Point ${DATA_DIR_ENV} at a directory containing {WIKITEXT2_TEST}, or pass "
            f"dataset='/path/to/wiki.test.raw'."
        ) from exc
    return list(ds["text"]), f"wikitext2:hub:{WIKITEXT2_HUB[0]}/{WIKITEXT2_HUB[1]}"


def read_text_rows(path: str | os.PathLike[str]) -> list[str]:
    """Read a text file into rows exactly as the Hub's ``wikitext`` builder does.

    That builder yields every line *with* its ``"\\n"`` and turns blank lines into ``""``; the papers
    then join those rows with ``"\\n\\n"``. Reading the file with universal newlines makes a CRLF
    copy give the same rows as the LF original: a stray ``"\\r"`` per line would otherwise be scored
    as text (on SmolLM2-135M it moves WikiText-2 perplexity from 35.1 to 37.7).
    ``.jsonl`` files contribute their ``"text"`` field instead.
    """
    path = Path(path)
    if path.suffix == ".jsonl":
        return read_json_texts(path)
    text = read_text_file(path)  # "\r\n" and "\r" arrive as "\n"; bad bytes name the file and line
    pieces = text.split("\n")
    lines = [piece + "\n" for piece in pieces[:-1]] + ([pieces[-1]] if pieces[-1] else [])
    return [line if line.strip() else "" for line in lines]


def join_rows(rows: Sequence[str]) -> str:
    """Join rows with a blank line, as the papers do with ``"\\n\\n".join(testdata["text"])``."""
    return "\n\n".join(rows)


def _model_device(model: nn.Module) -> torch.device:
    try:
        return next(model.parameters()).device
    except StopIteration:  # parameterless test doubles
        return torch.device("cpu")


def check_text_file(name: str | os.PathLike[str]) -> Path:
    """The file a perplexity dataset names (`FileNotFoundError` naming it); call early to fail before the work."""
    path = Path(name).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"perplexity dataset {os.fspath(name)!r} is neither 'wikitext2' nor an existing file")
    return path


def _resolve_dataset(
    dataset: str | os.PathLike[str] | Sequence[str],
) -> tuple[str, str]:
    """Turn the ``dataset`` argument into (joined text, description)."""
    if isinstance(dataset, (str, os.PathLike)):
        name = os.fspath(dataset)
        if name.lower() in WIKITEXT2_NAMES:
            rows, desc = wikitext2_rows()
            return join_rows(rows), desc
        path = check_text_file(name)
        return join_rows(read_text_rows(path)), str(path)
    rows = list(dataset)
    if not all(isinstance(r, str) for r in rows):
        raise TypeError("dataset must be 'wikitext2', a path, or a sequence of strings")
    return join_rows(rows), "texts"


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_settings(model: nn.Module, seq_len: int, max_windows: int | None, batch_size: int) -> None:
    """Refuse settings that would give no number, a meaningless one, or exhaust memory, before any work."""
    if not _is_count(seq_len) or seq_len < 2:
        raise ValueError(
            f"seq_len={seq_len!r} is invalid; it must be an int >= 2 (one token of context, one to predict)."
        )
    check_positions(getattr(model, "config", None), seq_len, "seq_len")
    if max_windows is not None and (not _is_count(max_windows) or max_windows < 1):
        raise ValueError(f"max_windows={max_windows!r} is invalid; it must be None (all windows) or an int >= 1.")
    if not _is_count(batch_size) or batch_size < 1:
        raise ValueError(f"batch_size={batch_size!r} is invalid; it must be an int >= 1 (windows per forward pass).")


@torch.inference_mode()
def window_nlls(model: nn.Module, windows: torch.Tensor, batch_size: int = 1) -> torch.Tensor:
    """Mean next-token NLL of each row of ``windows`` (shape ``[n, seq_len]``), as float64.

    The loss is taken in float32 whatever the model dtype, so half-precision models are not
    penalised by a half-precision log-softmax.
    """
    device = _model_device(model)
    out = []
    for start in range(0, windows.shape[0], batch_size):
        batch = windows[start : start + batch_size].to(device)
        logits = model(input_ids=batch, use_cache=False).logits
        shift_logits = logits[:, :-1, :].float()
        labels = batch[:, 1:]
        nll = nn.functional.cross_entropy(
            shift_logits.reshape(-1, shift_logits.shape[-1]), labels.reshape(-1), reduction="none"
        )
        out.append(nll.view(batch.shape[0], -1).mean(dim=1).double().cpu())
        del logits, shift_logits, nll
    return torch.cat(out) if out else torch.empty(0, dtype=torch.float64)


def perplexity(
    model: nn.Module,
    tokenizer: Any,
    dataset: str | os.PathLike[str] | Sequence[str] = "wikitext2",
    seq_len: int = 2048,
    max_windows: int | None = None,
    batch_size: int = 1,
    progress: bool = True,
) -> PerplexityResult:
    """Perplexity of ``model`` on ``dataset`` with the FLAP protocol (see the module docstring).

    Args:
        model: a causal LM returning ``.logits``; it is put in eval mode and not otherwise changed.
        tokenizer: its tokenizer; called once on the whole joined text.
        dataset: ``"wikitext2"`` (local shared file, else the Hub), a path to a text / ``.jsonl`` file,
            or a sequence of strings (rows to join).
        seq_len: window length in tokens (the papers use the model's context, often 2048 or 4096).
        max_windows: score only the first ``max_windows`` windows (quick checks); ``None`` = all.
        batch_size: windows per forward pass; changes speed and memory, not the value.
        progress: show a tqdm bar.

    Returns:
        A :class:`PerplexityResult` holding the value and the protocol.
    """
    _check_settings(model, seq_len, max_windows, batch_size)
    text, desc = _resolve_dataset(dataset)
    if not text.strip():
        raise ValueError(f"perplexity dataset {desc!r} holds no text (empty or whitespace only); give a text to score.")
    bos = added_bos_id(tokenizer)  # step 3: BOS then seq_len - 1 text tokens per window
    special = {} if bos is None else {"add_special_tokens": False}
    ids = tokenizer(text, return_tensors="pt", **special).input_ids.view(-1)
    vocab_size = getattr(getattr(model, "config", None), "vocab_size", None)
    if _is_count(vocab_size):
        check_token_ids(ids, vocab_size, purpose="evaluation")
    width = seq_len - 1 if bos is not None else seq_len
    total = int(ids.numel())
    num_windows = total // width
    if max_windows is not None:
        num_windows = min(num_windows, max_windows)
    if num_windows < 1:
        raise ValueError(f"the text has {total} tokens, fewer than one window of seq_len={seq_len}")
    windows = prepend_bos(ids[: num_windows * width].view(num_windows, width), bos)

    was_training = model.training
    model.eval()
    try:
        nlls = []
        bar = tqdm(total=num_windows, desc=f"perplexity ({seq_len} tok)", disable=not progress, unit="win")
        for start in range(0, num_windows, batch_size):
            chunk = windows[start : start + batch_size]
            nlls.append(window_nlls(model, chunk, batch_size=batch_size))
            bar.update(chunk.shape[0])
        bar.close()
    finally:
        model.train(was_training)
    mean_nll = float(torch.cat(nlls).mean())
    if not math.isfinite(mean_nll):  # NaN/inf logits: a number printed as "nan" would look like a result
        from ..checkpoint.finite import NonFiniteError

        raise NonFiniteError(
            f"The model's mean next-token loss on {desc} is {mean_nll}: its logits are not finite, so there is "
            "no perplexity. Allowed: a model with finite weights and activations; check its weights "
            "(a NaN from training or float16 overflow) and evaluate in float32."
        )
    return PerplexityResult(
        perplexity=math.exp(mean_nll),
        seq_len=seq_len,
        num_windows=num_windows,
        num_tokens=num_windows * seq_len,
        dataset=desc,
        num_predicted_tokens=num_windows * (seq_len - 1),
        mean_nll=mean_nll,
        total_tokens=total,
        bos_per_window=bos is not None,
    )
