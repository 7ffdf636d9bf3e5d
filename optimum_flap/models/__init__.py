"""Model classes for pruned checkpoints whose layers have different sizes.

Per stock family (`llama`, `mistral`, `qwen2`, `qwen3`) there is a config class with model_type
`flap_<family>` and a causal-LM class. Their files (`configuration_flap_*.py`, `modeling_flap_*.py`
and the shared `flap_common.py`) import only torch and transformers and are copied next to the
weights on save, so plain transformers can load a checkpoint with `trust_remote_code=True`.
`register_auto_classes()` (called by `import optimum_flap`) makes the Auto classes know them, so no
flag is needed once the package is imported.
"""

from __future__ import annotations

from dataclasses import dataclass

from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    PreTrainedConfig,
    PreTrainedModel,
    Qwen2Config,
    Qwen2ForCausalLM,
    Qwen3Config,
    Qwen3ForCausalLM,
)

from .configuration_flap_llama import FlapLlamaConfig
from .configuration_flap_mistral import FlapMistralConfig
from .configuration_flap_qwen2 import FlapQwen2Config
from .configuration_flap_qwen3 import FlapQwen3Config
from .modeling_flap_llama import FlapLlamaForCausalLM, FlapLlamaModel
from .modeling_flap_mistral import FlapMistralForCausalLM, FlapMistralModel
from .modeling_flap_qwen2 import FlapQwen2ForCausalLM, FlapQwen2Model
from .modeling_flap_qwen3 import FlapQwen3ForCausalLM, FlapQwen3Model


@dataclass(frozen=True)
class ModelFamily:
    """The stock classes of one decoder family and the optimum-flap classes for its pruned form."""

    base_model_type: str
    stock_config_class: type[PreTrainedConfig]
    stock_model_class: type[PreTrainedModel]
    flap_config_class: type[PreTrainedConfig]
    flap_model_class: type[PreTrainedModel]

    @property
    def flap_model_type(self) -> str:
        return self.flap_config_class.model_type


FAMILIES: dict[str, ModelFamily] = {
    "llama": ModelFamily("llama", LlamaConfig, LlamaForCausalLM, FlapLlamaConfig, FlapLlamaForCausalLM),
    "mistral": ModelFamily(
        "mistral", MistralConfig, MistralForCausalLM, FlapMistralConfig, FlapMistralForCausalLM
    ),
    "qwen2": ModelFamily("qwen2", Qwen2Config, Qwen2ForCausalLM, FlapQwen2Config, FlapQwen2ForCausalLM),
    "qwen3": ModelFamily("qwen3", Qwen3Config, Qwen3ForCausalLM, FlapQwen3Config, FlapQwen3ForCausalLM),
}


def get_family(base_model_type: str) -> ModelFamily:
    """The family for a stock model_type (`"llama"`) or its pruned form (`"flap_llama"`)."""
    name = base_model_type.removeprefix("flap_")
    if name not in FAMILIES:
        raise ValueError(
            f"optimum-flap has no pruned-checkpoint classes for model_type={base_model_type!r}; "
            f"supported: {', '.join(sorted(FAMILIES))}."
        )
    return FAMILIES[name]


def register_auto_classes() -> None:
    """Register the `flap_*` classes with AutoConfig and AutoModelForCausalLM (idempotent)."""
    for family in FAMILIES.values():
        AutoConfig.register(family.flap_model_type, family.flap_config_class, exist_ok=True)
        AutoModelForCausalLM.register(family.flap_config_class, family.flap_model_class, exist_ok=True)
        # saving one of these (save_pretrained, push_to_hub) copies its code next to the weights
        family.flap_config_class.register_for_auto_class("AutoConfig")
        family.flap_model_class.register_for_auto_class("AutoModelForCausalLM")


__all__ = [
    "FAMILIES",
    "FlapLlamaConfig",
    "FlapLlamaForCausalLM",
    "FlapLlamaModel",
    "FlapMistralConfig",
    "FlapMistralForCausalLM",
    "FlapMistralModel",
    "FlapQwen2Config",
    "FlapQwen2ForCausalLM",
    "FlapQwen2Model",
    "FlapQwen3Config",
    "FlapQwen3ForCausalLM",
    "FlapQwen3Model",
    "ModelFamily",
    "get_family",
    "register_auto_classes",
]
