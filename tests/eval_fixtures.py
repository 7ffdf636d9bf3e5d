"""Tiny, download-free model and tokenizer for exercising the evaluation code.

Tests must run offline and in seconds, so they cannot fetch a real checkpoint. A
character-level tokenizer covers any English text with a ~100-token vocabulary, and a two-layer
Llama over it runs the whole evaluation pipeline (lm-eval included) on CPU.
"""

from __future__ import annotations

import string

import torch
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

SPECIAL_TOKENS = ("<unk>", "<s>", "</s>", "<pad>")


def char_tokenizer() -> PreTrainedTokenizerFast:
    """A character-level fast tokenizer: one token per printable ASCII character, ``<unk>`` otherwise.

    No BOS is added, so ``len(tokenizer(text).input_ids) == len(text)``; that makes token counts in
    tests easy to reason about.
    """
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

    chars = sorted(set(string.printable))
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    for ch in chars:
        vocab.setdefault(ch, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    tok.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        model_max_length=4096,
    )


def tiny_llama(vocab_size: int, seed: int = 0, max_positions: int = 4096, **overrides: object) -> LlamaForCausalLM:
    """A randomly initialised two-layer Llama (hidden 32) in float32 and eval mode."""
    torch.manual_seed(seed)
    cfg = dict(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=max_positions,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=3,
        tie_word_embeddings=False,
    )
    cfg.update(overrides)
    model = LlamaForCausalLM(LlamaConfig(**cfg))
    return model.float().eval()
