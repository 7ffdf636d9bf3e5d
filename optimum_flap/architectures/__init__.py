"""The decoder families optimum-flap prunes, one `DecoderArchitecture` spec each (see `spec.py`).

Most families share one module layout in transformers (`model.layers[i].self_attn.{q,k,v,o}_proj`,
`.mlp.{gate,up,down}_proj`; Phi-3 fuses q/k/v and gate/up); what differs is which biases exist, what
the stock config can express, whether heads may be removed and which classes load a pruned
checkpoint. Those differences are data in the specs, so the engine, the surgery and the checkpoint
writer never branch on the model type.
"""

from __future__ import annotations

from torch import nn

from .gemma import GEMMA2, GEMMA3
from .granite import GRANITE
from .llama import LLAMA
from .mistral import MISTRAL
from .olmo2 import OLMO2
from .phi3 import PHI3
from .qwen2 import QWEN2
from .qwen3 import QWEN3
from .smollm3 import SMOLLM3
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
ARCHITECTURES: dict[str, DecoderArchitecture] = {
    spec.model_type: spec for spec in (LLAMA, MISTRAL, QWEN2, QWEN3, GEMMA2, GEMMA3, PHI3, GRANITE, SMOLLM3, OLMO2)
}

#: families optimum-flap knows but refuses, with the reason given to the user
REFUSED: dict[str, str] = {
    "mixtral": "it is a mixture-of-experts model (each expert's MLP would need its own channel budget)",
    "qwen2_moe": "it is a mixture-of-experts model (each expert's MLP would need its own channel budget)",
    "qwen3_moe": "it is a mixture-of-experts model (each expert's MLP would need its own channel budget)",
    "gemma3": "it is the multimodal Gemma 3; load its text model with Gemma3ForCausalLM (model_type 'gemma3_text')",
}


class UnsupportedArchitectureError(ValueError):
    """Raised for a model whose decoder layout optimum-flap does not know or does not prune."""


def get_architecture(model_or_config: nn.Module | object) -> DecoderArchitecture:
    """The spec for a model (or its config); a clear error naming the supported families otherwise."""
    config = getattr(model_or_config, "config", model_or_config)
    model_type = getattr(config, "model_type", None)  # pruned checkpoints keep the stock model_type
    if model_type not in ARCHITECTURES:
        reason = REFUSED.get(model_type) or ("it is a mixture-of-experts model" if _is_moe(config) else None)
        because = f" because {reason}" if reason else ""
        raise UnsupportedArchitectureError(
            f"optimum-flap cannot prune model_type={model_type!r}{because}; supported architectures: "
            f"{', '.join(sorted(ARCHITECTURES))}."
        )
    return ARCHITECTURES[model_type]


def _is_moe(config: object) -> bool:
    """Whether a config describes routed experts (the usual config keys of transformers' MoE families)."""
    return any(getattr(config, key, None) for key in ("num_local_experts", "num_experts", "n_routed_experts"))


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
    "GEMMA2",
    "GEMMA3",
    "GRANITE",
    "OLMO2",
    "SMOLLM3",
    "REFUSED",
    "ModelClasses",
    "UnsupportedArchitectureError",
    "attention_geometry",
    "get_architecture",
]
