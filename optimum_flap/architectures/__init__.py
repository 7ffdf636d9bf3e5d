"""The decoder families optimum-flap prunes, one `DecoderArchitecture` spec each (see `spec.py`).

Llama, Mistral, Qwen2 and Qwen3 share one module layout in transformers (`model.layers[i].self_attn
.{q,k,v,o}_proj`, `.mlp.{gate,up,down}_proj`); what differs is which biases exist, what the stock
config can express and which classes load a pruned checkpoint. Those differences are data in the
specs, so the engine, the surgery and the checkpoint writer never branch on the model type.
"""

from __future__ import annotations

from torch import nn

from .llama import LLAMA
from .mistral import MISTRAL
from .phi3 import PHI3
from .qwen2 import QWEN2
from .qwen3 import QWEN3
from .spec import (
    ATTENTION_OUTPUT,
    ATTENTION_ROLES,
    GATE,
    KEY,
    MLP_OUTPUT,
    MLP_ROLES,
    OUTPUT_ROLES,
    QUERY,
    ROLES,
    UP,
    VALUE,
    DecoderArchitecture,
    ModelClasses,
    attention_geometry,
)

#: the families the whole pipeline supports (calibration, surgery, checkpoints), by stock model_type
ARCHITECTURES: dict[str, DecoderArchitecture] = {spec.model_type: spec for spec in (LLAMA, MISTRAL, QWEN2, QWEN3)}


class UnsupportedArchitectureError(ValueError):
    """Raised for a model whose decoder layout optimum-flap does not know."""


def get_architecture(model_or_config: nn.Module | object) -> DecoderArchitecture:
    """The spec for a model (or its config); a clear error naming the supported families otherwise."""
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


__all__ = [
    "ARCHITECTURES",
    "ATTENTION_OUTPUT",
    "ATTENTION_ROLES",
    "GATE",
    "KEY",
    "LLAMA",
    "MISTRAL",
    "MLP_OUTPUT",
    "MLP_ROLES",
    "OUTPUT_ROLES",
    "PHI3",
    "QUERY",
    "QWEN2",
    "QWEN3",
    "ROLES",
    "UP",
    "VALUE",
    "DecoderArchitecture",
    "ModelClasses",
    "UnsupportedArchitectureError",
    "attention_geometry",
    "get_architecture",
]
