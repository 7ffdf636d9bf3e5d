"""Tiny random decoder models of every supported family, built locally (no downloads)."""

from __future__ import annotations

import torch
from transformers import (
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
    Qwen3Config,
    Qwen3ForCausalLM,
)

VOCAB = 128
COMMON = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=3,
              max_position_embeddings=128, head_dim=8)

#: the stock config and model classes of each supported family
STOCK_CLASSES = {
    "llama": (LlamaConfig, LlamaForCausalLM),
    "mistral": (MistralConfig, MistralForCausalLM),
    "qwen2": (Qwen2Config, Qwen2ForCausalLM),
    "qwen3": (Qwen3Config, Qwen3ForCausalLM),
}

FAMILIES = {
    # name: (stock family, attention geometry)
    "llama-mha": ("llama", dict(num_attention_heads=8, num_key_value_heads=8)),
    "llama-gqa": ("llama", dict(num_attention_heads=8, num_key_value_heads=4)),
    "mistral": ("mistral", dict(num_attention_heads=8, num_key_value_heads=2)),
    "qwen2": ("qwen2", dict(num_attention_heads=8, num_key_value_heads=4)),
    "qwen3": ("qwen3", dict(num_attention_heads=8, num_key_value_heads=4)),
}


def tiny_model(family: str, seed: int = 0, **overrides) -> torch.nn.Module:
    """A small random model of `family` in eval mode; weights depend only on `seed`."""
    stock, geometry = FAMILIES[family]
    config_cls, model_cls = STOCK_CLASSES[stock]
    config = config_cls(**{**COMMON, **geometry, **overrides})
    torch.manual_seed(seed)
    model = model_cls(config).eval()
    with torch.no_grad():  # non-trivial biases and norms so that slicing mistakes show up
        for name, param in model.named_parameters():
            if name.endswith("bias") or "norm" in name:
                param.add_(0.1 * torch.randn_like(param))
    return model


def calibration_ids(num_samples: int = 16, seq_len: int = 16, seed: int = 1) -> list[list[int]]:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, VOCAB, (num_samples, seq_len), generator=generator).tolist()
