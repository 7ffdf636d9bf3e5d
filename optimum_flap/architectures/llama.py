"""Llama: `attention_bias` adds biases to q/k/v/o, `mlp_bias` to gate/up/down."""

from transformers import LlamaConfig, LlamaForCausalLM

from ..models.configuration_flap_llama import FlapLlamaConfig
from ..models.modeling_flap_llama import FlapLlamaForCausalLM
from .spec import DecoderArchitecture, ModelClasses

LLAMA = DecoderArchitecture(
    model_type="llama",
    attention_bias_flag="attention_bias",
    mlp_bias_flag="mlp_bias",
    classes=ModelClasses(LlamaConfig, LlamaForCausalLM, FlapLlamaConfig, FlapLlamaForCausalLM),
)
