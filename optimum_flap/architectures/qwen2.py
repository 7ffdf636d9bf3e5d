"""Qwen2: q/k/v always carry a bias (no config flag); o_proj and the MLP never do in the stock model."""

from transformers import Qwen2Config, Qwen2ForCausalLM

from ..models.configuration_flap_qwen2 import FlapQwen2Config
from ..models.modeling_flap_qwen2 import FlapQwen2ForCausalLM
from .spec import KEY, QUERY, VALUE, DecoderArchitecture, ModelClasses

QWEN2 = DecoderArchitecture(
    model_type="qwen2",
    fixed_bias_roles=frozenset({QUERY, KEY, VALUE}),
    classes=ModelClasses(Qwen2Config, Qwen2ForCausalLM, FlapQwen2Config, FlapQwen2ForCausalLM),
)
