"""Model classes for pruned checkpoints whose layers have different sizes.

Per stock family (every spec in `optimum_flap.architectures.ARCHITECTURES`) there is a config class
(which keeps the family's stock model_type) and a causal-LM class. Their files (`configuration_flap_*.py`,
`modeling_flap_*.py` and the shared `flap_common.py`) import only torch and transformers and are
copied next to the weights on save, so plain transformers can load a checkpoint with
`trust_remote_code=True` (`optimum_flap.load_pruned_model` picks them by config.json's `architectures`).
Which stock classes go with which flap classes is part of each family's spec
(`optimum_flap.architectures`).
"""

from __future__ import annotations

from .configuration_flap_gemma2 import FlapGemma2Config
from .configuration_flap_gemma3 import FlapGemma3TextConfig
from .configuration_flap_granite import FlapGraniteConfig
from .configuration_flap_llama import FlapLlamaConfig
from .configuration_flap_mistral import FlapMistralConfig
from .configuration_flap_olmo2 import FlapOlmo2Config
from .configuration_flap_phi3 import FlapPhi3Config
from .configuration_flap_qwen2 import FlapQwen2Config
from .configuration_flap_qwen3 import FlapQwen3Config
from .configuration_flap_smollm3 import FlapSmolLM3Config
from .modeling_flap_gemma2 import FlapGemma2ForCausalLM, FlapGemma2Model
from .modeling_flap_gemma3 import FlapGemma3ForCausalLM, FlapGemma3TextModel
from .modeling_flap_granite import FlapGraniteForCausalLM, FlapGraniteModel
from .modeling_flap_llama import FlapLlamaForCausalLM, FlapLlamaModel
from .modeling_flap_mistral import FlapMistralForCausalLM, FlapMistralModel
from .modeling_flap_olmo2 import FlapOlmo2ForCausalLM, FlapOlmo2Model
from .modeling_flap_phi3 import FlapPhi3ForCausalLM, FlapPhi3Model
from .modeling_flap_qwen2 import FlapQwen2ForCausalLM, FlapQwen2Model
from .modeling_flap_qwen3 import FlapQwen3ForCausalLM, FlapQwen3Model
from .modeling_flap_smollm3 import FlapSmolLM3ForCausalLM, FlapSmolLM3Model

#: every pruned-model class pair defined here (the specs in `optimum_flap.architectures` name theirs)
FLAP_CLASSES = (
    (FlapLlamaConfig, FlapLlamaForCausalLM),
    (FlapMistralConfig, FlapMistralForCausalLM),
    (FlapQwen2Config, FlapQwen2ForCausalLM),
    (FlapQwen3Config, FlapQwen3ForCausalLM),
    (FlapGemma2Config, FlapGemma2ForCausalLM),
    (FlapGemma3TextConfig, FlapGemma3ForCausalLM),
    (FlapPhi3Config, FlapPhi3ForCausalLM),
    (FlapGraniteConfig, FlapGraniteForCausalLM),
    (FlapSmolLM3Config, FlapSmolLM3ForCausalLM),
    (FlapOlmo2Config, FlapOlmo2ForCausalLM),
)


def register_for_saving() -> None:
    """Make saving a `Flap*` model (save_pretrained, push_to_hub) copy its code next to the weights and
    write the `auto_map` that `trust_remote_code=True` loads (idempotent).

    The Auto classes themselves are not told about our classes: a pruned checkpoint keeps its stock
    model_type, so a stock config class must stay what reads it without the flag (see flap_common).
    """
    for config_class, model_class in FLAP_CLASSES:
        config_class.register_for_auto_class("AutoConfig")
        model_class.register_for_auto_class("AutoModelForCausalLM")


__all__ = [
    "FLAP_CLASSES",
    "FlapGemma2Config",
    "FlapGemma2ForCausalLM",
    "FlapGemma2Model",
    "FlapGemma3ForCausalLM",
    "FlapGemma3TextConfig",
    "FlapGemma3TextModel",
    "FlapGraniteConfig",
    "FlapGraniteForCausalLM",
    "FlapGraniteModel",
    "FlapLlamaConfig",
    "FlapLlamaForCausalLM",
    "FlapLlamaModel",
    "FlapMistralConfig",
    "FlapMistralForCausalLM",
    "FlapMistralModel",
    "FlapOlmo2Config",
    "FlapOlmo2ForCausalLM",
    "FlapOlmo2Model",
    "FlapPhi3Config",
    "FlapPhi3ForCausalLM",
    "FlapPhi3Model",
    "FlapQwen2Config",
    "FlapQwen2ForCausalLM",
    "FlapQwen2Model",
    "FlapQwen3Config",
    "FlapQwen3ForCausalLM",
    "FlapQwen3Model",
    "FlapSmolLM3Config",
    "FlapSmolLM3ForCausalLM",
    "FlapSmolLM3Model",
    "register_for_saving",
]
