"""Speed: the report is complete, positive and self-consistent on a tiny model."""

from __future__ import annotations

import json

import pytest
import torch
from eval_fixtures import char_tokenizer, tiny_llama

from optimum_flap.evaluation import SpeedReport, Stat, speed
from optimum_flap.evaluation.speed import parameter_bytes


@pytest.fixture(scope="module")
def tok():
    return char_tokenizer()


@pytest.fixture(scope="module")
def report(tok) -> SpeedReport:
    model = tiny_llama(len(tok))
    return speed(model, tok, batch_sizes=(1, 3), prompt_len=12, new_tokens=4, warmup=1, repeats=3)


def check_stat(s: Stat, n: int) -> None:
    assert s.n == n
    assert 0 < s.min <= s.q1 <= s.median <= s.q3 <= s.max
    assert s.iqr >= 0


def test_fields_populated_and_positive(report):
    assert report.device == "cpu" and report.dtype == "float32"
    assert (report.prompt_len, report.new_tokens, report.warmup, report.repeats) == (12, 4, 1, 3)
    assert [b.batch_size for b in report.batches] == [1, 3]
    for b in report.batches:
        check_stat(b.prefill_ms, 3)
        check_stat(b.decode_tokens_per_s, 3)
        check_stat(b.decode_ms_per_step, 3)
    assert report.peak_memory_bytes > 0
    assert report.peak_memory_delta_bytes >= 0
    assert "RSS" in report.peak_memory_method or "ru_maxrss" in report.peak_memory_method
    assert report.num_parameters > 0
    assert report.parameter_bytes == 4 * report.num_parameters  # float32
    assert report.environment["torch_threads"] >= 1
    assert report.batch(3).batch_size == 3
    json.dumps(report.to_dict())  # serialisable for benchmark files


def test_random_prompt_without_tokenizer(tok):
    model = tiny_llama(len(tok))
    r = speed(model, None, batch_sizes=(2,), prompt_len=5, new_tokens=2, warmup=0, repeats=1)
    assert r.batch(2).decode_tokens_per_s.median > 0


def test_parameter_bytes_counts_tied_weights_once(tok):
    tied = tiny_llama(len(tok), tie_word_embeddings=True)
    untied = tiny_llama(len(tok))
    n_emb = tied.get_input_embeddings().weight.numel()
    assert parameter_bytes(untied)[1] - parameter_bytes(tied)[1] == n_emb
    half = tiny_llama(len(tok)).to(torch.bfloat16)
    assert parameter_bytes(half)[0] == 2 * parameter_bytes(half)[1]


def test_stat_quartiles():
    s = Stat.of([5.0, 1.0, 3.0, 2.0, 4.0])
    assert (s.min, s.q1, s.median, s.q3, s.max, s.n) == (1.0, 2.0, 3.0, 4.0, 5.0, 5)
    single = Stat.of([7.0])
    assert single.q1 == single.median == single.q3 == 7.0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_report(tok):
    model = tiny_llama(len(tok)).cuda()
    r = speed(model, tok, batch_sizes=(1, 4), prompt_len=16, new_tokens=4, warmup=1, repeats=3)
    assert r.device.startswith("cuda")
    assert "cuda.max_memory_allocated" in r.peak_memory_method
    assert r.peak_memory_bytes >= r.parameter_bytes
    assert "gpu" in r.environment
