"""The tokenizer and chat template as GGUF metadata, so the file runs without any other file.

Two tokenizer kinds are written, read from the fast tokenizer's `tokenizer.json`:

- **byte-level BPE** (SmolLM2, Llama 3, Qwen2): llama.cpp's `gpt2` model, with the merges and the name
  of the pre-tokenizer (the regex that splits text before BPE). llama.cpp knows pre-tokenizers by name,
  so the split rule found in `tokenizer.json` is mapped to the name whose regex is the same.
- **SentencePiece BPE** (Llama 2, Mistral; `byte_fallback`, `▁` for spaces): llama.cpp's `llama` model.
  It merges the adjacent pair whose result has the highest score, so a merge of rank `r` gives its
  result the score `-r`: the same order BPE applies the merges in.

Special token ids, `add_bos`/`add_eos` and the chat template come from gguf's own `SpecialVocab`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import gguf

from .tensors import GGUFExportError

#: HF `Split` regexes of the byte-level tokenizers llama.cpp knows, and llama.cpp's pre-tokenizer names
LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
                r"\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
               r"\s*[\r\n]+|\s+(?!\S)|\s+")
SPLIT_PRE_TOKENIZERS = {LLAMA3_SPLIT: "llama-bpe", QWEN2_SPLIT: "qwen2"}


def _steps(pre_tokenizer: dict[str, Any] | None) -> list[dict[str, Any]]:
    if pre_tokenizer is None:
        return []
    return pre_tokenizer["pretokenizers"] if pre_tokenizer["type"] == "Sequence" else [pre_tokenizer]


def byte_level_pre_name(pre_tokenizer: dict[str, Any] | None) -> str:
    """llama.cpp's name for a byte-level BPE pre-tokenizer; an error for one llama.cpp would split differently."""
    steps = _steps(pre_tokenizer)
    kinds = [step["type"] for step in steps]
    if kinds == ["ByteLevel"] and steps[0].get("use_regex", True):
        return "gpt-2"
    if kinds == ["Digits", "ByteLevel"] and steps[0].get("individual_digits") and steps[1].get("use_regex", True):
        return "smollm"
    if kinds == ["Split", "ByteLevel"] and not steps[1].get("use_regex", True):
        pattern = steps[0].get("pattern", {}).get("Regex")
        if pattern in SPLIT_PRE_TOKENIZERS:
            return SPLIT_PRE_TOKENIZERS[pattern]
    raise GGUFExportError(f"pre-tokenizer {json.dumps(pre_tokenizer)[:300]} has no llama.cpp equivalent; supported: "
                          "GPT-2 byte-level, SmolLM (single digits), Llama 3 and Qwen2 split rules")


def _vocabulary(spec: dict[str, Any], vocab_size: int) -> list[str]:
    """Token strings by id, including added tokens; ids the tokenizer never produces get placeholders."""
    tokens: list[str | None] = [None] * vocab_size
    entries = list(spec["model"]["vocab"].items()) + [(t["content"], t["id"]) for t in spec["added_tokens"]]
    for text, token_id in entries:
        if token_id >= vocab_size:
            raise GGUFExportError(f"tokenizer id {token_id} ({text!r}) is outside the model's vocabulary of "
                                  f"{vocab_size}")
        tokens[token_id] = text
    return [f"[PAD{i}]" if text is None else text for i, text in enumerate(tokens)]


def _token_types(spec: dict[str, Any], tokens: list[str], byte_tokens: bool) -> list[int]:
    types = [gguf.TokenType.NORMAL] * len(tokens)
    known = set(spec["model"]["vocab"].values()) | {t["id"] for t in spec["added_tokens"]}
    for added in spec["added_tokens"]:
        types[added["id"]] = gguf.TokenType.CONTROL if added["special"] else gguf.TokenType.USER_DEFINED
    for token_id, text in enumerate(tokens):
        if token_id not in known:
            types[token_id] = gguf.TokenType.UNUSED
        elif byte_tokens and len(text) == 6 and text.startswith("<0x") and text.endswith(">"):
            types[token_id] = gguf.TokenType.BYTE  # byte fallback pieces, even when listed as added tokens
    unk = spec["model"].get("unk_token")
    if unk is not None and unk in spec["model"]["vocab"]:
        types[spec["model"]["vocab"][unk]] = gguf.TokenType.UNKNOWN
    return [int(t) for t in types]


def _merge_pairs(spec: dict[str, Any]) -> list[tuple[str, str]]:
    return [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in spec["model"]["merges"]]


def _sentencepiece_scores(spec: dict[str, Any], tokens: list[str]) -> list[float]:
    """Score `-rank` for each merge result, so llama.cpp applies the merges in BPE's order."""
    scores = [0.0] * len(tokens)
    vocab = spec["model"]["vocab"]
    for rank, (left, right) in enumerate(_merge_pairs(spec)):
        merged = vocab.get(left + right)
        if merged is not None and scores[merged] == 0.0:
            scores[merged] = -float(rank + 1)
    return scores


def _adds_space_prefix(spec: dict[str, Any]) -> bool:
    """SentencePiece tokenizers put `▁` before the text through the normalizer or a Metaspace step."""
    normalizer = spec.get("normalizer") or {}
    steps = normalizer.get("normalizers", [normalizer])
    if any(step.get("type") == "Prepend" and step.get("prepend") == "\u2581" for step in steps):
        return True
    return any(step["type"] == "Metaspace" and step.get("prepend_scheme", "always") != "never"
               for step in _steps(spec.get("pre_tokenizer")))


def add_tokenizer(writer: gguf.GGUFWriter, tokenizer: Any, tokenizer_dir: Path, vocab_size: int) -> str:
    """Write the vocabulary, merges or scores, special tokens and chat template; returns the tokenizer kind.

    `tokenizer_dir` holds `tokenizer.save_pretrained` output. Whether BOS/EOS are added is measured on the
    tokenizer itself: its config files do not always say it.
    """
    path = tokenizer_dir / "tokenizer.json"
    if not path.is_file():
        raise GGUFExportError("the GGUF file needs the fast tokenizer's tokenizer.json; this tokenizer has none")
    spec = json.loads(path.read_text(encoding="utf-8"))
    model = spec["model"]
    if model["type"] != "BPE":
        raise GGUFExportError(f"tokenizer model {model['type']!r} is not supported; supported: byte-level BPE and "
                              "SentencePiece BPE")
    tokens = _vocabulary(spec, vocab_size)
    sentencepiece = bool(model.get("byte_fallback"))
    writer.add_tokenizer_model("llama" if sentencepiece else "gpt2")
    if sentencepiece:
        writer.add_tokenizer_pre("default")
        writer.add_token_list(tokens)
        writer.add_token_scores(_sentencepiece_scores(spec, tokens))
        writer.add_token_types(_token_types(spec, tokens, byte_tokens=True))
        writer.add_add_space_prefix(_adds_space_prefix(spec))
    else:
        writer.add_tokenizer_pre(byte_level_pre_name(spec.get("pre_tokenizer")))
        writer.add_token_list(tokens)
        writer.add_token_types(_token_types(spec, tokens, byte_tokens=False))
    special = gguf.SpecialVocab(tokenizer_dir, load_merges=not sentencepiece, n_vocab=vocab_size)
    ids = tokenizer("a")["input_ids"]
    special.add_special_token["bos"] = tokenizer.bos_token_id is not None and ids[0] == tokenizer.bos_token_id
    special.add_special_token["eos"] = tokenizer.eos_token_id is not None and ids[-1] == tokenizer.eos_token_id
    special.add_to_gguf(writer, quiet=True)
    return "llama" if sentencepiece else "gpt2"
