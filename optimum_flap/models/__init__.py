"""Model classes for pruned checkpoints whose layers have different sizes.

Per stock family (every spec in `optimum_flap.architectures.ARCHITECTURES`) there is a config class
(which keeps the family's stock model_type) and a causal-LM class. Their files (`configuration_flap_*.py`,
`modeling_flap_*.py` and the shared `flap_common.py`) import only torch and transformers and are
copied next to the weights on save, so plain transformers can load a checkpoint with
`trust_remote_code=True`.
Which stock classes go with which flap classes is part of each family's spec
(`optimum_flap.architectures`). `register_auto_classes()` (called by `import optimum_flap`) makes
`AutoModelForCausalLM` know them, so no flag is needed once the package is imported.
"""

from __future__ import annotations

from transformers import AutoModelForCausalLM

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


def register_auto_classes() -> None:
    """Let `AutoModelForCausalLM` choose our class for a pruned checkpoint (idempotent).

    A pruned checkpoint keeps its family's stock model_type, so without the flag AutoConfig reads it
    with the stock config class. transformers' model mappings may hold several classes for one config
    class and choose among them by the checkpoint's `architectures`: each stock config class is mapped
    to (the stock causal-LM class, ours), so stock checkpoints still get the stock class and pruned ones
    (`"architectures": ["Flap<Family>ForCausalLM"]`) get ours.
    It reads nothing from the architecture specs: it runs from an import hook right after
    transformers loads, possibly while `optimum_flap.architectures` is itself being imported.
    """
    mapping = AutoModelForCausalLM._model_mapping
    for config_class, model_class in FLAP_CLASSES:
        stock_config_class = model_class.__bases__[0].config_class
        current = mapping[stock_config_class]
        choices = tuple(current) if isinstance(current, (list, tuple)) else (current,)
        if model_class not in choices:
            AutoModelForCausalLM.register(stock_config_class, (*choices, model_class), exist_ok=True)
        # saving one of these (save_pretrained, push_to_hub) copies its code next to the weights
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
    "register_auto_classes",
]
