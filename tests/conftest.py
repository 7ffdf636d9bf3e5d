"""Shared test helpers.

`ckpt_*` helpers belong to the checkpoint tests: tiny random models of every supported family,
pruned by slicing their Linear layers (a stand-in for the pruning engine, with the same in-memory
contract), and a tiny local tokenizer (no downloads).
"""

from __future__ import annotations

import torch
from torch import nn

# The test models are tiny: one intra-op thread is several times faster than threads competing
# for a loaded 2-core CI machine (checked: 80 s -> 8 s for tests/test_checkpoint_pruner.py).
torch.set_num_threads(1)

CKPT_VOCAB = 128
CKPT_HIDDEN = 64
CKPT_HEAD_DIM = 16


def ckpt_tiny_model(family: str = "llama", *, kv_heads: int = 2, num_layers: int = 3, dtype=torch.float32,
                    seed: int = 0, tie_word_embeddings: bool = False, attention_bias: bool = False):
    """A tiny randomly initialised stock model: hidden 64, 4 heads of 16, MLP 96, vocab 128."""
    from tiny_models import STOCK_CLASSES

    config_class, model_class = STOCK_CLASSES[family]
    kwargs = dict(
        vocab_size=CKPT_VOCAB,
        hidden_size=CKPT_HIDDEN,
        intermediate_size=96,
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        num_key_value_heads=kv_heads,
        max_position_embeddings=256,
        initializer_range=0.2,  # larger than usual so logits are far from uniform
        tie_word_embeddings=tie_word_embeddings,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
    )
    if family != "qwen2":
        kwargs["head_dim"] = CKPT_HEAD_DIM
    if family in ("llama", "qwen3"):
        kwargs["attention_bias"] = attention_bias
    torch.manual_seed(seed)
    model = model_class(config_class(**kwargs)).eval()
    with torch.no_grad():  # random biases where the family has them, so slicing them is tested
        for name, param in model.named_parameters():
            if name.endswith(".bias"):
                param.normal_(0, 0.2)
    for param in model.parameters():  # like from_pretrained(dtype=...): buffers (rotary) stay float32
        param.data = param.data.to(dtype)
    return model


def _keep_rows(linear: nn.Linear, rows: torch.Tensor) -> nn.Linear:
    new = nn.Linear(linear.in_features, len(rows), bias=linear.bias is not None,
                    dtype=linear.weight.dtype, device=linear.weight.device)
    new.weight.data = linear.weight.data[rows].clone()
    if linear.bias is not None:
        new.bias.data = linear.bias.data[rows].clone()
    return new


def _keep_cols(linear: nn.Linear, cols: torch.Tensor, add_bias: bool, gen: torch.Generator) -> nn.Linear:
    has_bias = add_bias or linear.bias is not None
    new = nn.Linear(len(cols), linear.out_features, bias=has_bias, dtype=linear.weight.dtype,
                    device=linear.weight.device)
    new.weight.data = linear.weight.data[:, cols].clone()
    if has_bias:
        bias = linear.bias.data.clone() if linear.bias is not None else torch.zeros(linear.out_features)
        # stands in for FLAP's bias compensation
        new.bias.data = (bias.float() + 0.1 * torch.randn(linear.out_features, generator=gen)).to(new.weight.dtype)
    return new


def ckpt_make_pruned(model, layers, *, attention_output_bias: bool = True, mlp_output_bias: bool = True,
                     recipe: dict | None = None, seed: int = 0):
    """Prune `model` in place to the given per-layer sizes, as the pruning engine would.

    `layers` is one `(kv_groups_kept, channels_kept)` per decoder layer; whole GQA groups are kept
    (the last ones, so slicing is not a no-op) and a random subset of MLP channels. Sets
    `config.pruning_layout` and `config.pruning_config` like the engine. Returns the model.
    """
    gen = torch.Generator().manual_seed(seed)
    config = model.config
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    n_kv = config.num_key_value_heads
    group = config.num_attention_heads // n_kv
    layout_layers = []
    for layer, (kv_keep, inter_keep) in zip(model.model.layers, layers, strict=True):
        attn, mlp = layer.self_attn, layer.mlp
        groups = list(range(n_kv - kv_keep, n_kv))
        kv_rows = torch.cat([torch.arange(g * head_dim, (g + 1) * head_dim) for g in groups])
        q_rows = torch.cat([torch.arange(g * group * head_dim, (g + 1) * group * head_dim) for g in groups])
        attn.q_proj = _keep_rows(attn.q_proj, q_rows)
        attn.k_proj = _keep_rows(attn.k_proj, kv_rows)
        attn.v_proj = _keep_rows(attn.v_proj, kv_rows)
        attn.o_proj = _keep_cols(attn.o_proj, q_rows, attention_output_bias, gen)
        channels = torch.randperm(mlp.gate_proj.out_features, generator=gen)[:inter_keep].sort().values
        mlp.gate_proj = _keep_rows(mlp.gate_proj, channels)
        mlp.up_proj = _keep_rows(mlp.up_proj, channels)
        mlp.down_proj = _keep_cols(mlp.down_proj, channels, mlp_output_bias, gen)
        mlp.intermediate_size = inter_keep
        layout_layers.append({
            "num_attention_heads": kv_keep * group,
            "num_key_value_heads": kv_keep,
            "intermediate_size": inter_keep,
            "kept_head_groups": groups,
        })
    config.pruning_layout = {
        "layers": layout_layers,
        "attention_output_bias": all(la.self_attn.o_proj.bias is not None for la in model.model.layers),
        "mlp_output_bias": all(la.mlp.down_proj.bias is not None for la in model.model.layers),
    }
    config.pruning_config = recipe or {"method": "flap", "pruning_ratio": 0.3, "structure": "AL-AM",
                                       "metric": "wifv"}
    return model


def ckpt_tiny_tokenizer():
    """A word-level fast tokenizer over the tiny vocabulary (built locally, no downloads)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<s>", "</s>", "<unk>"]
    vocab = {tok: i for i, tok in enumerate(specials)}
    for i in range(CKPT_VOCAB - len(specials)):
        vocab[f"w{i}"] = len(vocab)
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", bos_token="<s>",
                                   eos_token="</s>", unk_token="<unk>")


def narrow_mlp(mlp: nn.Module, keep: torch.Tensor, down_bias: torch.Tensor) -> None:
    """Keep the MLP channels `keep` by replacing gate/up/down (as physical surgery does); down gets `down_bias`.

    A stand-in for the engine, for tests of code that must carry pruned shapes (streaming, offloading).
    """
    for name in ("gate_proj", "up_proj"):
        old = getattr(mlp, name)
        new = nn.Linear(old.in_features, len(keep), bias=False)
        new.weight.data = old.weight.data[keep].clone()
        setattr(mlp, name, new)
    down = nn.Linear(len(keep), mlp.down_proj.out_features, bias=True)
    down.weight.data = mlp.down_proj.weight.data[:, keep].clone()
    down.bias.data = down_bias.to(down.weight.dtype)  # stands in for bias compensation
    mlp.down_proj = down
