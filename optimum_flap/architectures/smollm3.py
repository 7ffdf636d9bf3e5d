"""SmolLM3: the Llama layout with some layers that use no rotary embeddings (NoPE).

Each layer reads whether it applies rotary embeddings from `config.no_rope_layers`, which pruning
leaves unchanged, so NoPE layers stay NoPE. `attention_bias` adds biases to q/k/v/o, `mlp_bias` to
gate/up/down.
"""

from transformers import SmolLM3Config, SmolLM3ForCausalLM

from ..models.configuration_flap_smollm3 import FlapSmolLM3Config
from ..models.modeling_flap_smollm3 import FlapSmolLM3ForCausalLM
from .spec import DecoderArchitecture, ModelClasses

SMOLLM3 = DecoderArchitecture(
    model_type="smollm3",
    attention_bias_flag="attention_bias",
    mlp_bias_flag="mlp_bias",
    classes=ModelClasses(SmolLM3Config, SmolLM3ForCausalLM, FlapSmolLM3Config, FlapSmolLM3ForCausalLM),
)
