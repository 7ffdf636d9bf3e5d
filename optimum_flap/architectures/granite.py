"""Granite: the Llama layout scaled by four multipliers, all kept as they are.

`embedding_multiplier` (embeddings), `residual_multiplier` (each block's branch before it joins the
residual stream), `attention_multiplier` (the attention scale, in place of 1/sqrt(head_dim)) and
`logits_scaling` (the LM head's output) do not depend on the head or channel counts, so the pruned
model keeps the dense config's values. `attention_bias` adds biases to q/k/v/o, `mlp_bias` to
gate/up/down.
"""

from transformers import GraniteConfig, GraniteForCausalLM

from ..models.configuration_flap_granite import FlapGraniteConfig
from ..models.modeling_flap_granite import FlapGraniteForCausalLM
from .spec import DecoderArchitecture, ModelClasses

GRANITE = DecoderArchitecture(
    model_type="granite",
    attention_bias_flag="attention_bias",
    mlp_bias_flag="mlp_bias",
    classes=ModelClasses(GraniteConfig, GraniteForCausalLM, FlapGraniteConfig, FlapGraniteForCausalLM),
)
