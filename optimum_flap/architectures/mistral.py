"""Mistral: the Llama layout with no biases at all."""

from transformers import MistralConfig, MistralForCausalLM

from ..models.configuration_flap_mistral import FlapMistralConfig
from ..models.modeling_flap_mistral import FlapMistralForCausalLM
from .spec import DecoderArchitecture, ModelClasses

MISTRAL = DecoderArchitecture(
    model_type="mistral",
    classes=ModelClasses(MistralConfig, MistralForCausalLM, FlapMistralConfig, FlapMistralForCausalLM),
)
