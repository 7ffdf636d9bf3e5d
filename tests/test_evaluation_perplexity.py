"""Perplexity: checked against a hand computation, not against its own output."""

from __future__ import annotations

import math

import pytest
import torch
from eval_fixtures import char_tokenizer, tiny_llama

from optimum_flap.data_files import data_dir
from optimum_flap.evaluation import perplexity
from optimum_flap.evaluation.perplexity import join_rows, read_text_rows

SHARED = data_dir()
WIKI = SHARED / "wikitext2" / "wiki.test.raw"

ROWS = [
    " = Valkyria Chronicles = \n",
    "",
    " The game began development in 2010 , carrying over a large portion of the work . \n",
    " It met with positive sales in Japan , and was praised by both Japanese and western critics . \n",
]


@pytest.fixture(scope="module")
def tok():
    return char_tokenizer()


@pytest.fixture(scope="module")
def model(tok):
    return tiny_llama(len(tok), seed=1)


def hand_perplexity(model, ids: list[int], seq_len: int) -> float:
    """exp(mean over windows of the mean next-token NLL), one window at a time, in float64."""
    window_losses = []
    for w in range(len(ids) // seq_len):
        window = ids[w * seq_len : (w + 1) * seq_len]
        with torch.no_grad():
            logits = model(torch.tensor([window])).logits[0].double()
        nll = 0.0
        for t in range(seq_len - 1):
            row = logits[t]
            log_z = row.max() + torch.log(torch.exp(row - row.max()).sum())
            nll += float(log_z - row[window[t + 1]])
        window_losses.append(nll / (seq_len - 1))
    return math.exp(sum(window_losses) / len(window_losses))


def test_matches_hand_computation(model, tok):
    text = "\n\n".join(ROWS)
    # tokenise by hand: the char tokenizer maps each character to its vocabulary id
    vocab = tok.get_vocab()
    ids = [vocab.get(ch, vocab["<unk>"]) for ch in text]
    seq_len = 37
    expected = hand_perplexity(model, ids, seq_len)

    got = perplexity(model, tok, ROWS, seq_len=seq_len, batch_size=3, progress=False)

    assert got.perplexity == pytest.approx(expected, rel=1e-5)
    assert got.seq_len == seq_len
    assert got.num_windows == len(text) // seq_len
    assert got.num_tokens == got.num_windows * seq_len
    assert got.num_predicted_tokens == got.num_windows * (seq_len - 1)
    assert got.total_tokens == len(text)
    assert got.mean_nll == pytest.approx(math.log(expected), rel=1e-6)
    assert got.dataset == "texts"


def test_batch_size_does_not_change_value(model, tok):
    a = perplexity(model, tok, ROWS, seq_len=16, batch_size=1, progress=False)
    b = perplexity(model, tok, ROWS, seq_len=16, batch_size=5, progress=False)
    assert a.perplexity == pytest.approx(b.perplexity, rel=1e-5)


def test_uniform_model_has_vocabulary_size_perplexity(tok):
    """With an all-zero LM head every token has probability 1/V, so the perplexity is exactly V."""
    uniform = tiny_llama(len(tok))
    torch.nn.init.zeros_(uniform.lm_head.weight)
    got = perplexity(uniform, tok, ROWS, seq_len=20, progress=False)
    assert got.perplexity == pytest.approx(len(tok), rel=1e-5)


def test_max_windows(model, tok):
    full = perplexity(model, tok, ROWS, seq_len=16, progress=False)
    first = perplexity(model, tok, ROWS, seq_len=16, max_windows=2, progress=False)
    assert first.num_windows == 2 < full.num_windows
    assert first.num_tokens == 32


def test_too_short_text_is_an_error(model, tok):
    with pytest.raises(ValueError, match="fewer than one window"):
        perplexity(model, tok, ["short"], seq_len=64, progress=False)


def test_rows_like_the_hub_builder(tmp_path):
    """Lines keep their newline, blank lines become "", and CRLF reads like LF."""
    lf = tmp_path / "lf.raw"
    crlf = tmp_path / "crlf.raw"
    lines = [" = A = ", " ", " b c . "]
    lf.write_bytes(("\n".join(lines) + "\n").encode())
    crlf.write_bytes(("\r\n".join(lines) + "\r\n").encode())
    assert read_text_rows(lf) == [" = A = \n", "", " b c . \n"]
    assert read_text_rows(crlf) == read_text_rows(lf)
    assert join_rows(read_text_rows(lf)) == " = A = \n\n\n\n\n b c . \n"


def test_wikitext2_resolves_through_env_var(tmp_path, monkeypatch, model, tok):
    path = tmp_path / "wikitext2" / "wiki.test.raw"
    path.parent.mkdir()
    path.write_text("".join(r if r else " \n" for r in ROWS), encoding="utf-8")
    monkeypatch.setenv("OPTIMUM_FLAP_DATA_DIR", str(tmp_path))
    by_name = perplexity(model, tok, "wikitext2", seq_len=16, progress=False)
    by_path = perplexity(model, tok, path, seq_len=16, progress=False)
    by_rows = perplexity(model, tok, ROWS, seq_len=16, progress=False)
    assert str(path) in by_name.dataset
    assert by_name.perplexity == by_path.perplexity == pytest.approx(by_rows.perplexity, rel=1e-6)


def test_offline_without_local_file_names_the_alternative(tmp_path, monkeypatch, model, tok):
    import datasets

    def offline(*args, **kwargs):
        raise ConnectionError("no internet")

    monkeypatch.setenv("OPTIMUM_FLAP_DATA_DIR", str(tmp_path))
    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(FileNotFoundError, match="wiki.test.raw"):
        perplexity(model, tok, "wikitext2", seq_len=16, progress=False)


@pytest.mark.skipif(not WIKI.is_file(), reason="shared WikiText-2 file not present")
def test_shared_wikitext2_file(model, tok):
    rows = read_text_rows(WIKI)
    assert len(rows) == 2891
    assert all(r.endswith("\n") and "\r" not in r for r in rows)
    got = perplexity(model, tok, WIKI, seq_len=64, max_windows=3, progress=False)
    assert got.num_windows == 3 and math.isfinite(got.perplexity) and got.perplexity > 1


@pytest.mark.slow
def test_smollm2_first_windows():
    """Dense SmolLM2-135M-Instruct (float32 from the Q4_1 GGUF), first 4 windows of 512 tokens."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from optimum_flap.utils.gguf import smollm2_checkpoint

    path = smollm2_checkpoint()
    m = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    t = AutoTokenizer.from_pretrained(path)
    got = perplexity(m, t, WIKI, seq_len=512, max_windows=4, batch_size=2, progress=False)
    assert got.num_windows == 4
    # 29.92 measured (float32 CPU); 20 windows give 35.12, see docs/evaluation.md
    assert got.perplexity == pytest.approx(29.92, rel=0.01)
