"""Architecture specs as data, fused projections, and the surgery that applies typed plans."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from tiny_models import tiny_model
from transformers import LlamaConfig, LlamaForCausalLM, MixtralConfig, Phi3Config, Phi3ForCausalLM

from optimum_flap.accounting import decoder_linear_parameters, layer_cost
from optimum_flap.architectures import (
    ARCHITECTURES,
    LLAMA,
    PHI3,
    QWEN2,
    QWEN3,
    UnsupportedArchitectureError,
    get_architecture,
)
from optimum_flap.plan import MaskLayerPlan, StructuredLayerPlan
from optimum_flap.surgery import apply_mask_layer_plan, apply_structured_layer_plan

SIZES = dict(hidden_size=32, intermediate_size=24, num_attention_heads=4, num_key_value_heads=2, num_hidden_layers=1,
             vocab_size=64, max_position_embeddings=64, pad_token_id=0)


def test_specs_are_frozen_data_keyed_by_model_type():
    assert sorted(ARCHITECTURES) == ["gemma2", "gemma3_text", "granite", "llama", "mistral", "olmo2", "phi3", "qwen2",
                                     "qwen3", "smollm3"]
    assert all(spec.model_type == name and spec.classes is not None for name, spec in ARCHITECTURES.items())
    with pytest.raises(dataclasses.FrozenInstanceError):
        LLAMA.query = "qkv"
    # Qwen3's q_norm / k_norm are shared by all heads: nothing travels with a head
    assert QWEN3.per_head_norms == () and QWEN3.shared_head_norms == ("q_norm", "k_norm")
    assert QWEN2.config_has_bias(QWEN2.classes.stock_config_class(), "query")
    assert not QWEN2.bias_expressible("attention_output") and LLAMA.bias_expressible("mlp_output")
    with pytest.raises(UnsupportedArchitectureError, match="mixtral"):
        get_architecture(MixtralConfig(**SIZES))


def test_fused_roles_and_paths():
    assert PHI3.fused_roles("key") == ("query", "key", "value")
    assert PHI3.fused_roles("gate") == ("gate", "up")
    assert PHI3.projection_paths() == {
        "self_attn.qkv_proj": ("query", "key", "value"), "self_attn.o_proj": ("attention_output",),
        "mlp.gate_up_proj": ("gate", "up"), "mlp.down_proj": ("mlp_output",),
    }
    assert LLAMA.fused_roles("key") == ("key",) and len(LLAMA.projection_paths()) == 7


def _phi3_and_unfused_twin():
    """A random Phi-3 layer and a Llama layer holding the same tensors, unfused."""
    torch.manual_seed(0)
    phi = Phi3ForCausalLM(Phi3Config(**SIZES)).eval()
    llama = LlamaForCausalLM(LlamaConfig(**SIZES)).eval()
    fused, twin = phi.model.layers[0], llama.model.layers[0]
    q, k, v = fused.self_attn.qkv_proj.weight.split([4 * 8, 2 * 8, 2 * 8])
    gate, up = fused.mlp.gate_up_proj.weight.split([24, 24])
    with torch.no_grad():
        for linear, weight in [(twin.self_attn.q_proj, q), (twin.self_attn.k_proj, k), (twin.self_attn.v_proj, v),
                               (twin.self_attn.o_proj, fused.self_attn.o_proj.weight), (twin.mlp.gate_proj, gate),
                               (twin.mlp.up_proj, up), (twin.mlp.down_proj, fused.mlp.down_proj.weight)]:
            linear.weight.copy_(weight)
    return phi, llama


def _plan(compensate: bool) -> StructuredLayerPlan:
    gen = torch.Generator().manual_seed(3)
    return StructuredLayerPlan(
        kept_groups=torch.tensor([1]),
        kept_channels=torch.tensor([0, 3, 4, 10, 17, 23]),
        attention_input_mean=torch.randn(32, generator=gen) if compensate else None,
        mlp_input_mean=torch.randn(24, generator=gen) if compensate else None,
    )


@pytest.mark.parametrize("physical", [True, False])
def test_cutting_a_fused_model_equals_cutting_its_unfused_twin(physical):
    phi, llama = _phi3_and_unfused_twin()
    fused, twin = phi.model.layers[0], llama.model.layers[0]
    assert layer_cost(fused, PHI3, 2, 8, True) == layer_cost(twin, LLAMA, 2, 8, True)
    apply_structured_layer_plan(fused, PHI3, _plan(True), physical=physical)
    apply_structured_layer_plan(twin, LLAMA, _plan(True), physical=physical)
    a, t = fused.self_attn, twin.self_attn
    torch.testing.assert_close(a.qkv_proj.weight, torch.cat([t.q_proj.weight, t.k_proj.weight, t.v_proj.weight]),
                               atol=0, rtol=0)
    torch.testing.assert_close(fused.mlp.gate_up_proj.weight,
                               torch.cat([twin.mlp.gate_proj.weight, twin.mlp.up_proj.weight]), atol=0, rtol=0)
    for name in ("o_proj",):
        torch.testing.assert_close(getattr(a, name).weight, getattr(t, name).weight, atol=0, rtol=0)
        torch.testing.assert_close(getattr(a, name).bias, getattr(t, name).bias, atol=0, rtol=0)
    torch.testing.assert_close(fused.mlp.down_proj.bias, twin.mlp.down_proj.bias, atol=0, rtol=0)
    assert decoder_linear_parameters(phi, PHI3) == decoder_linear_parameters(llama, LLAMA)
    if physical:  # one group of 2 query heads (16 rows) and its k/v heads (8 + 8 rows); 6 channels twice
        assert a.qkv_proj.out_features == 32 and fused.mlp.gate_up_proj.out_features == 12


def test_fused_mask_only_cut_keeps_the_function_of_the_physical_cut():
    """On the fused Phi-3 itself, the masked layer computes what the unfused physical cut computes."""
    phi, llama = _phi3_and_unfused_twin()
    apply_structured_layer_plan(phi.model.layers[0], PHI3, _plan(True), physical=False)
    apply_structured_layer_plan(llama.model.layers[0], LLAMA, _plan(True), physical=True)
    hidden = torch.randn(2, 5, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(phi.model.layers[0].mlp(hidden), llama.model.layers[0].mlp(hidden),
                                   atol=1e-6, rtol=1e-5)


def test_structured_plan_rejects_bad_indices():
    model = tiny_model("llama-gqa")
    layer = model.model.layers[0]
    with pytest.raises(ValueError, match=r"kept_groups must hold distinct indices in \[0, 4\)"):
        apply_structured_layer_plan(layer, LLAMA, StructuredLayerPlan(torch.tensor([0, 4]), torch.arange(8)))
    with pytest.raises(ValueError, match="kept_channels must be a non-empty"):
        apply_structured_layer_plan(layer, LLAMA, StructuredLayerPlan(torch.tensor([0]), torch.tensor([], dtype=int)))
    assert layer.self_attn.q_proj.out_features == 64  # nothing was touched


def test_mask_plan_zeroes_in_place_and_writes_new_weights():
    model = tiny_model("qwen2")
    layer = model.model.layers[0]
    q = layer.self_attn.q_proj
    q_id = id(q)
    gen = torch.Generator().manual_seed(0)
    mask = torch.rand(q.weight.shape, generator=gen) > 0.5
    new_down = torch.randn(layer.mlp.down_proj.weight.shape, generator=gen)
    down_mask = torch.rand(new_down.shape, generator=gen) > 0.25
    before = q.weight.detach().clone()
    apply_mask_layer_plan(layer, MaskLayerPlan(masks={"self_attn.q_proj": mask, "mlp.down_proj": down_mask},
                                               weights={"mlp.down_proj": new_down}))
    assert id(layer.self_attn.q_proj) == q_id and q.weight.shape == before.shape
    torch.testing.assert_close(q.weight, before * mask, atol=0, rtol=0)
    torch.testing.assert_close(layer.mlp.down_proj.weight, new_down * down_mask, atol=0, rtol=0)
    with pytest.raises(ValueError, match=r"self_attn.k_proj: mask shape \(3, 3\)"):
        apply_mask_layer_plan(layer, MaskLayerPlan(masks={"self_attn.k_proj": torch.ones(3, 3, dtype=torch.bool)}))
    with pytest.raises(ValueError, match="must be a bool tensor"):
        float_mask = torch.ones_like(layer.self_attn.k_proj.weight)
        apply_mask_layer_plan(layer, MaskLayerPlan(masks={"self_attn.k_proj": float_mask}))
