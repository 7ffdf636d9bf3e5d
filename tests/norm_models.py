"""Tiny pre-norm and post-norm models for `test_post_norm.py`, and the kept units of every pre-norm family.

Post-norm families (Gemma 2, Gemma 3, OLMo-2) are built with post-norm gains that differ by layer by
an order of magnitude, as in real Gemma checkpoints. `python tests/norm_models.py` (from the repository
root, with the code to record first on PYTHONPATH) writes `tests/data/prenorm_kept_units.json`. The
saved file was computed with the main branch's code before post-norm gains existed, so the test proves
that pre-norm families (no norm after their sub-blocks) prune exactly as before.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from transformers import (
    Gemma2Config,
    Gemma2ForCausalLM,
    Gemma3ForCausalLM,
    Gemma3TextConfig,
    GraniteConfig,
    GraniteForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    Olmo2Config,
    Olmo2ForCausalLM,
    Phi3Config,
    Phi3ForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
    Qwen3Config,
    Qwen3ForCausalLM,
    SmolLM3Config,
    SmolLM3ForCausalLM,
)

sys.path.insert(0, str(Path(__file__).parent))
from tiny_models import calibration_ids  # noqa: E402

from optimum_flap import FlapConfig, FlapPruner  # noqa: E402
from optimum_flap.architectures import get_architecture  # noqa: E402

EXPECTATIONS = Path(__file__).parent / "data" / "prenorm_kept_units.json"

SHAPE = dict(vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=3, num_attention_heads=8,
             num_key_value_heads=4, head_dim=8, max_position_embeddings=128, bos_token_id=1,
             eos_token_id=2, pad_token_id=0)

#: every pre-norm family, with its attention geometry and flags that give it biases where it can have them
PRENORM_FAMILIES = {
    "llama-mha": (LlamaConfig, LlamaForCausalLM, dict(num_key_value_heads=8)),
    "llama-gqa": (LlamaConfig, LlamaForCausalLM, dict(attention_bias=True)),
    "mistral": (MistralConfig, MistralForCausalLM, dict(num_key_value_heads=2)),
    "qwen2": (Qwen2Config, Qwen2ForCausalLM, {}),
    "qwen3": (Qwen3Config, Qwen3ForCausalLM, {}),
    "phi3": (Phi3Config, Phi3ForCausalLM, {}),
    "granite": (GraniteConfig, GraniteForCausalLM, dict(residual_multiplier=0.5, mlp_bias=True)),
    "smollm3": (SmolLM3Config, SmolLM3ForCausalLM, dict(no_rope_layers=[1, 0, 1])),
}

#: recipe name -> FlapConfig options; UL-MM removes one head group per layer, AL-MM two in all
RECIPES = {
    "flap-UL-UM": dict(structure="UL-UM"),
    "flap-UL-MM": dict(structure="UL-MM", remove_heads="one per layer"),
    "flap-AL-MM": dict(structure="AL-MM", remove_heads="two"),
    "flap-AL-AM": dict(structure="AL-AM"),
    "flap-AL-AM-ifv": dict(structure="AL-AM", metric="ifv"),
    "flap-AL-AM-wifn": dict(structure="AL-AM", metric="wifn"),
    "wanda-sp-AL-AM": dict(method="wanda-sp"),
    "wanda-sp-UL-UM": dict(method="wanda-sp", structure="UL-UM"),
    "magnitude-sp": dict(method="magnitude-sp"),
    "cfsp": dict(method="cfsp"),
    "cfsp-weight-activation-heads": dict(method="cfsp", cfsp_score="weight-activation", cfsp_prune_attention=True),
}


#: combinations main cannot run: CFSP's weight-activation score reads `up_proj` alone, Phi-3 fuses it with gate
UNSUPPORTED = {"phi3/cfsp-weight-activation-heads"}


def prenorm_model(family: str, seed: int = 0) -> torch.nn.Module:
    config_class, model_class, overrides = PRENORM_FAMILIES[family]
    config = config_class(**{**SHAPE, **overrides})
    torch.manual_seed(seed)
    model = model_class(config).eval()
    with torch.no_grad():  # non-trivial biases and norms, as the other tiny models
        for name, param in model.named_parameters():
            if name.endswith("bias") or "norm" in name:
                param.add_(0.1 * torch.randn_like(param))
    return model


def kept_units(family: str, recipe: str) -> list[dict[str, list[int]]]:
    """Per layer, the head groups and MLP channels the recipe keeps at pruning_ratio 0.3."""
    model = prenorm_model(family)
    options = dict(RECIPES[recipe])
    group = model.config.num_attention_heads // model.config.num_key_value_heads
    if "remove_heads" in options:
        options["remove_heads"] = group * (model.config.num_hidden_layers if options["remove_heads"] == "one per layer"
                                           else 2)
    config = FlapConfig(pruning_ratio=0.3, dataset=calibration_ids(num_samples=8, seq_len=16), batch_size=4,
                        **options)
    _kind, plans, _shape = FlapPruner(config)._plans(model, get_architecture(model), None, True)
    return [{"groups": p.kept_groups.tolist(), "channels": p.kept_channels.tolist()} for p in plans]


#: post-norm families: config and model class, overrides, and the offset of the stored norm weight (Gemma: gain - 1)
POSTNORM_FAMILIES = {
    "gemma2": (Gemma2Config, Gemma2ForCausalLM, dict(sliding_window=4, query_pre_attn_scalar=24), 1.0),
    "gemma3": (Gemma3TextConfig, Gemma3ForCausalLM, dict(sliding_window=4, query_pre_attn_scalar=24), 1.0),
    "olmo2": (Olmo2Config, Olmo2ForCausalLM, {}, 0.0),
}
#: per layer, the scale of the gains of the norm after the MLP and after the attention (10x apart)
MLP_GAINS = (1.0, 0.1, 1.0, 0.1)
ATTENTION_GAINS = (0.1, 1.0, 0.1, 1.0)


def postnorm_model(family: str, seed: int = 0) -> torch.nn.Module:
    """A 4-layer model whose post-norm gains are `MLP_GAINS` / `ATTENTION_GAINS` per layer (times 1 + 20% noise)."""
    config_class, model_class, overrides, offset = POSTNORM_FAMILIES[family]
    layers = len(MLP_GAINS)
    config = config_class(**{**SHAPE, "num_hidden_layers": layers, "num_attention_heads": 4, "num_key_value_heads": 2,
                             "head_dim": 16, **overrides})
    if "sliding_window" in overrides:
        config.layer_types = ["sliding_attention", "full_attention"] * (layers // 2)
    config._attn_implementation = "eager"
    torch.manual_seed(seed)
    model = model_class(config).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("bias") or "norm" in name:
                param.add_(0.1 * torch.randn_like(param))
        for layer, mlp_gain, attention_gain in zip(model.model.layers, MLP_GAINS, ATTENTION_GAINS):
            for norm, gain in ((layer.post_feedforward_layernorm, mlp_gain), (layer.post_attention_layernorm,
                                                                              attention_gain)):
                norm.weight.copy_(gain * (1 + 0.2 * torch.randn_like(norm.weight)) - offset)
    return model


def kl_to_dense(dense: torch.nn.Module, pruned: torch.nn.Module, ids: torch.Tensor) -> float:
    """Mean KL(dense || pruned) of the next-token distributions on `ids`."""
    with torch.no_grad():
        p, q = dense(input_ids=ids).logits, pruned(input_ids=ids).logits
    kl = torch.nn.functional.kl_div(q.log_softmax(-1), p.log_softmax(-1), log_target=True, reduction="none")
    return float(kl.sum(-1).mean())


if __name__ == "__main__":
    table = {f"{family}/{recipe}": kept_units(family, recipe) for family in PRENORM_FAMILIES for recipe in RECIPES
             if f"{family}/{recipe}" not in UNSUPPORTED}
    EXPECTATIONS.write_text(json.dumps(table, separators=(",", ":")) + "\n")
    import optimum_flap

    print(f"computed with {optimum_flap.__file__}; wrote {len(table)} entries to {EXPECTATIONS}")
