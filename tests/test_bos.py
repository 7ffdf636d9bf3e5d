"""Windows start with BOS where the tokenizer starts every text with one (Gemma); otherwise nothing changes."""

from __future__ import annotations

import math

import torch
from conftest import ckpt_tiny_tokenizer
from eval_fixtures import char_tokenizer, tiny_llama
from tokenizers.processors import TemplateProcessing

from optimum_flap.bos import added_bos_id
from optimum_flap.data import load_calibration_ids
from optimum_flap.evaluation import perplexity

TEXTS = [" ".join(f"w{(7 * i + j) % 100}" for j in range(40)) for i in range(6)]


def bos_tokenizer():
    """The tiny word-level tokenizer, adding `<s>` (id 1) in front of every text, as Gemma's does."""
    tokenizer = ckpt_tiny_tokenizer()
    tokenizer.backend_tokenizer.post_processor = TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    return tokenizer


def test_added_bos_is_detected_from_what_the_tokenizer_does():
    assert added_bos_id(bos_tokenizer()) == 1
    assert added_bos_id(ckpt_tiny_tokenizer()) is None  # has a bos_token but does not add it
    assert added_bos_id(char_tokenizer()) is None


def test_calibration_windows_start_with_bos_then_text():
    tokenizer = bos_tokenizer()
    ids = load_calibration_ids(TEXTS, tokenizer, num_samples=5, seq_len=9, seed=3)
    stream = tokenizer("\n\n".join(TEXTS), add_special_tokens=False)["input_ids"]
    assert ids.shape == (5, 9) and (ids[:, 0] == 1).all()
    text = [row[1:].tolist() for row in ids]
    assert all(1 not in row for row in text)
    # each window's text is a contiguous piece of the stream, 8 tokens long
    assert all(any(stream[s : s + 8] == row for s in range(len(stream) - 7)) for row in text)


def test_calibration_without_bos_is_unchanged():
    tokenizer = ckpt_tiny_tokenizer()
    ids = load_calibration_ids(TEXTS, tokenizer, num_samples=5, seq_len=9, seed=3)
    assert ids.shape == (5, 9) and not (ids[:, 0] == 1).all()


def test_perplexity_windows_are_bos_then_seq_len_minus_one_tokens():
    tokenizer = bos_tokenizer()
    model = tiny_llama(128, seed=2)
    result = perplexity(model, tokenizer, TEXTS, seq_len=10, progress=False)
    stream = tokenizer("\n\n".join(TEXTS), add_special_tokens=False)["input_ids"]
    assert result.bos_per_window and result.total_tokens == len(stream)
    assert result.num_windows == len(stream) // 9
    losses = []
    for w in range(result.num_windows):
        window = torch.tensor([[1, *stream[w * 9 : (w + 1) * 9]]])
        with torch.no_grad():
            logits = model(window).logits[0, :-1].double()
        losses.append(float(torch.nn.functional.cross_entropy(logits, window[0, 1:]).item()))
    assert math.isclose(result.perplexity, math.exp(sum(losses) / len(losses)), rel_tol=1e-6)


def test_perplexity_without_bos_cuts_the_stream_as_before():
    tokenizer = ckpt_tiny_tokenizer()
    model = tiny_llama(128, seed=2)
    result = perplexity(model, tokenizer, TEXTS, seq_len=10, progress=False)
    stream = tokenizer("\n\n".join(TEXTS))["input_ids"]
    assert not result.bos_per_window and result.num_windows == len(stream) // 10


def test_add_bos_token_switches_the_windows():
    tokenizer = ckpt_tiny_tokenizer()
    tokenizer.add_bos_token = True
    assert added_bos_id(tokenizer) == 1
    assert (load_calibration_ids(TEXTS, tokenizer, num_samples=3, seq_len=6, seed=0)[:, 0] == 1).all()
