"""Short end-to-end runs on the real SmolLM2-135M-Instruct (GQA: 9 query heads, 3 key/value heads)."""

from __future__ import annotations

import copy
import os

import pytest
import torch

from optimum_flap import FlapConfig, FlapPruner, load_pruned_model
from optimum_flap.data_files import data_dir
from optimum_flap.evaluation.perplexity import perplexity

pytestmark = pytest.mark.slow

DATA = str(data_dir())
C4 = os.path.join(DATA, "c4", "sample_c4-rp1.jsonl")
WIKI = os.path.join(DATA, "wikitext2", "wiki.test.raw")


@pytest.fixture(scope="module")
def smollm2():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from optimum_flap.utils.gguf import smollm2_checkpoint

    path = smollm2_checkpoint()
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    return model, AutoTokenizer.from_pretrained(path)


def test_flap_prunes_smollm2_to_the_target_and_keeps_it_usable(smollm2, tmp_path):
    dense, tokenizer = smollm2
    dense_ppl = perplexity(dense, tokenizer, WIKI, seq_len=128, max_windows=8, batch_size=8).perplexity
    pruner = FlapPruner(FlapConfig(pruning_ratio=0.2, dataset=C4, num_samples=16, seq_len=128, batch_size=8))
    model = pruner.prune_model(copy.deepcopy(dense), tokenizer)
    report = pruner.report
    # one MLP channel of SmolLM2 costs 3 x 576 parameters, one head group (3 query heads) 5 x 64 x 576 x 2
    unit = 8 * 64 * 576
    removed = report.decoder_parameters_before - report.decoder_parameters_after
    assert abs(removed - 0.2 * report.decoder_parameters_before) <= unit
    assert report.parameters_after < report.parameters_before
    layers = model.config.pruning_layout["layers"]
    assert len(layers) == 30 and all(layer["num_attention_heads"] % 3 == 0 for layer in layers)
    pruned_ppl = perplexity(model, tokenizer, WIKI, seq_len=128, max_windows=8, batch_size=8).perplexity
    assert dense_ppl < pruned_ppl < 2 * dense_ppl
    prompt = tokenizer("The capital of France is", return_tensors="pt")
    with torch.no_grad():
        cached = model.generate(**prompt, max_new_tokens=6, do_sample=False)
        uncached = model.generate(**prompt, max_new_tokens=6, do_sample=False, use_cache=False)
    assert torch.equal(cached, uncached)

    # the checkpoint reloads with plain transformers and computes the same logits

    pruner.save_pretrained(tmp_path / "pruned")
    reloaded = load_pruned_model(tmp_path / "pruned").eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**prompt).logits, model(**prompt).logits, atol=1e-5, rtol=1e-5)
