"""Thin adapters that tell the engine where things are in each supported decoder family.

Llama, Mistral, Qwen2 and Qwen3 share one module layout in transformers (`model.layers[i].self_attn
.{q,k,v,o}_proj`, `.mlp.{gate,up,down}_proj`); what differs is which biases exist and what the stock
config can express. Those differences live here as data, so the engine and the surgery never branch
on the model type.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn


@dataclass(frozen=True)
class DecoderArchitecture:
    """Where the prunable pieces of one decoder family live and what its stock config allows."""

    model_type: str
    #: stock config flag that adds a bias to q/k/v *and* o_proj, if the family has one
    attention_bias_flag: str | None
    #: stock config flag that adds a bias to gate/up *and* down_proj, if the family has one
    mlp_bias_flag: str | None
    layers_path: str = "model.layers"
    attention_name: str = "self_attn"
    mlp_name: str = "mlp"
    query: str = "q_proj"
    key: str = "k_proj"
    value: str = "v_proj"
    attention_output: str = "o_proj"
    gate: str = "gate_proj"
    up: str = "up_proj"
    mlp_output: str = "down_proj"

    def decoder_layers(self, model: nn.Module) -> nn.ModuleList:
        return model.get_submodule(self.layers_path)

    def attention(self, layer: nn.Module) -> nn.Module:
        return getattr(layer, self.attention_name)

    def mlp(self, layer: nn.Module) -> nn.Module:
        return getattr(layer, self.mlp_name)

    def attention_output_path(self) -> str:
        """Module path, relative to a decoder layer, whose input holds the per-head channels."""
        return f"{self.attention_name}.{self.attention_output}"

    def mlp_output_path(self) -> str:
        """Module path, relative to a decoder layer, whose input holds the MLP channels."""
        return f"{self.mlp_name}.{self.mlp_output}"


ARCHITECTURES: dict[str, DecoderArchitecture] = {
    "llama": DecoderArchitecture("llama", "attention_bias", "mlp_bias"),
    "mistral": DecoderArchitecture("mistral", None, None),
    "qwen2": DecoderArchitecture("qwen2", None, None),
    "qwen3": DecoderArchitecture("qwen3", "attention_bias", None),
}


class UnsupportedArchitectureError(ValueError):
    """Raised for a model whose decoder layout optimum-flap does not know."""


def get_architecture(model_or_config: nn.Module | object) -> DecoderArchitecture:
    """The adapter for a model (or its config); a clear error naming the supported families otherwise."""
    config = getattr(model_or_config, "config", model_or_config)
    model_type = getattr(config, "model_type", None)
    # a pruned checkpoint reloaded through our own classes reports e.g. "flap_llama"
    base_type = getattr(config, "base_model_type", None) or model_type
    if base_type not in ARCHITECTURES:
        raise UnsupportedArchitectureError(
            f"optimum-flap cannot prune model_type={model_type!r}; supported architectures: "
            f"{', '.join(sorted(ARCHITECTURES))}."
        )
    return ARCHITECTURES[base_type]
