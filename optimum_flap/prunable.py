"""Which models the pruner accepts: refuse, before any work, the kinds it would prune wrongly or fail on deep inside.

A PEFT wrapper hides the decoder layers and its adapters would be cut apart from their base weights; a
quantized model has no float weights to score or slice; a mask-only pruned model holds its removed units
as zeros in dense shapes, so its recorded layout and sparsity no longer describe the result of a second
run. Each refusal says what to do instead.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from .architectures import DecoderArchitecture, get_architecture
from .layout import SPARSITY_KEY


class UnprunableModelError(ValueError):
    """The model is of a kind the pruner cannot prune correctly (wrapped, quantized or mask-pruned)."""


def _is_peft(model: nn.Module) -> bool:
    """A PEFT model, or a model into which PEFT injected adapter layers."""
    return hasattr(model, "peft_config") or any(
        type(module).__module__.startswith("peft.") for module in model.modules()
    )


def _quantization(model: nn.Module) -> str | None:
    """The quantization method of a quantized model (GGUF loads dequantized floats and counts as not quantized)."""
    config = getattr(getattr(model, "config", None), "quantization_config", None)
    if config is not None:
        method = config.get("quant_method") if isinstance(config, dict) else getattr(config, "quant_method", None)
        method = getattr(method, "value", method)
        if method != "gguf":
            return str(method)
    if getattr(model, "is_quantized", False) or getattr(model, "hf_quantizer", None) is not None:
        return "transformers quantizer"
    return None


def check_prunable(model: Any) -> DecoderArchitecture:
    """The model's architecture spec; raises `UnprunableModelError` (`TypeError` for a non-module, or
    `UnsupportedArchitectureError`) naming the problem and the remedy.

    Every decoder projection must be a float `nn.Linear`, which also catches torch's own quantized
    modules (`torch.ao.quantization.quantize_dynamic`).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a transformers causal LM (a torch nn.Module), got {type(model).__name__}; "
                        "load one with AutoModelForCausalLM.from_pretrained, or use FlapPruner.from_pretrained.")
    if _is_peft(model):
        raise UnprunableModelError(
            f"{type(model).__name__} carries PEFT adapters: pruning would cut the base weights apart from their "
            "adapters. Merge them first (model = model.merge_and_unload()) and prune the merged model, or prune "
            "the base model and train new adapters on it."
        )
    method = _quantization(model)
    if method is not None:
        raise UnprunableModelError(
            f"The model is quantized (quant_method={method!r}): its weights cannot be scored or sliced. Load it "
            "in floating point (from_pretrained without quantization_config, dtype=torch.bfloat16), prune, then "
            "quantize the pruned model."
        )
    if getattr(model.config, SPARSITY_KEY, None) is not None:
        raise UnprunableModelError(
            f"The model was already pruned without removing weights (config.{SPARSITY_KEY} is set: a mask-only "
            "run, physical=False, or a mask method): its removed units are zeros in dense shapes. Prune the "
            "original dense model again, with physical=True for a model that is actually smaller."
        )
    arch = get_architecture(model)
    for index, layer in enumerate(arch.decoder_layers(model)):
        for path in arch.projection_paths():
            module = layer.get_submodule(path)
            if not isinstance(module, nn.Linear) or not module.weight.is_floating_point():
                raise UnprunableModelError(
                    f"{arch.layers_path}.{index}.{path} is a {type(module).__module__}.{type(module).__name__}, "
                    "not a floating-point torch.nn.Linear: the model is quantized. Load it in floating point "
                    "(dtype=torch.bfloat16, no quantization), prune, then quantize the pruned model."
                )
    return arch
