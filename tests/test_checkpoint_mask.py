"""Masked (dense-shaped) models: saved in the stock format with their sparsity, reloaded by plain transformers."""

from __future__ import annotations

import json

import torch
from conftest import ckpt_tiny_model
from huggingface_hub import ModelCard
from tiny_models import calibration_ids
from transformers import AutoModelForCausalLM, LlamaForCausalLM

from optimum_flap import FlapConfig, FlapPruner
from optimum_flap.architectures import LLAMA
from optimum_flap.checkpoint import STOCK_FORMAT, plan_checkpoint, pruning_stats, save_pruned_model
from optimum_flap.plan import MaskLayerPlan
from optimum_flap.surgery import apply_mask_layer_plan, record_sparsity

IDS = torch.tensor([[1, 5, 9, 33, 4, 77, 12, 100], [1, 64, 3, 3, 90, 21, 8, 50]])
PATHS = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj",
         "mlp.up_proj", "mlp.down_proj"]


def _masked_llama(sparsity: float = 0.5):
    """A tiny llama with the smallest-magnitude `sparsity` of each projection's weights set to zero."""
    model = ckpt_tiny_model("llama")
    for layer in model.model.layers:
        masks = {}
        for path in PATHS:
            weight = layer.get_submodule(path).weight.detach()
            threshold = weight.abs().flatten().kthvalue(int(sparsity * weight.numel())).values
            masks[path] = weight.abs() > threshold
        apply_mask_layer_plan(layer, MaskLayerPlan(masks))
    model.config.pruning_config = {"method": "wanda", "pruning_ratio": sparsity}
    record_sparsity(model, LLAMA)
    return model


def test_masked_llama_saves_stock_and_reloads_with_plain_transformers(tmp_path):
    model = _masked_llama()
    with torch.no_grad():
        expected = model(IDS).logits
    plan = save_pruned_model(model, tmp_path / "ckpt")
    assert plan.checkpoint_format == STOCK_FORMAT
    assert not list((tmp_path / "ckpt").glob("*.py"))
    config = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    assert config["model_type"] == "llama" and "auto_map" not in config
    assert config["pruning_config"] == {"method": "wanda", "pruning_ratio": 0.5}
    assert len(config["pruning_sparsity"]) == 3 and set(config["pruning_sparsity"][0]) == set(PATHS)
    assert all(abs(v - 0.5) < 1e-3 for layer in config["pruning_sparsity"] for v in layer.values())
    assert config["intermediate_size"] == 96 and config["num_attention_heads"] == 4  # dense shapes

    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "ckpt", trust_remote_code=False)
    assert type(reloaded) is LlamaForCausalLM
    with torch.no_grad():
        torch.testing.assert_close(reloaded(IDS).logits, expected, atol=0, rtol=0)
    for ours, theirs in zip(model.model.layers, reloaded.model.layers):
        for path in PATHS:
            a, b = ours.get_submodule(path).weight, theirs.get_submodule(path).weight
            assert torch.equal(a == 0, b == 0) and torch.equal(a, b)

    card = ModelCard.load(tmp_path / "ckpt" / "README.md")
    assert "Per-layer sparsity" in card.text and "Per-layer sizes" not in card.text
    assert "| 0 | " + " | ".join(f"{config['pruning_sparsity'][0][p]:.4f}" for p in PATHS) + " |" in card.text
    stats = pruning_stats(model, plan)
    assert abs(stats["achieved_ratio"] - 0.5) < 1e-3
    assert f"{stats['achieved_ratio']:.4f}" in card.text


def test_mask_only_structured_run_saves_dense_shaped(tmp_path):
    """FlapPruner(physical=False): the zeroed model saves as it is, with the ratio the report gave."""
    model = ckpt_tiny_model("llama")
    pruner = FlapPruner(FlapConfig(pruning_ratio=0.3, dataset=calibration_ids(), batch_size=4))
    pruner.prune_model(model, physical=False)
    plan = plan_checkpoint(model)
    assert [la.intermediate_size for la in plan.layout.layers] == [96] * 3  # the modules', not the plan's
    assert pruning_stats(model, plan)["achieved_ratio"] == pruner.report.achieved_ratio
    save_pruned_model(model, tmp_path / "ckpt")
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "ckpt")
    with torch.no_grad():
        torch.testing.assert_close(reloaded(IDS).logits, model(IDS).logits, atol=1e-6, rtol=0)
    down = reloaded.model.layers[0].mlp.down_proj.weight
    assert down.shape[1] == 96 and int((down == 0).all(dim=0).sum()) > 0  # removed channels are zero columns
