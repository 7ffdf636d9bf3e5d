"""Qwen3: `attention_bias` adds biases to q/k/v/o; q_norm / k_norm normalise each head over head_dim.

The norms have `head_dim` weights shared by every head, so removing heads leaves them whole.
"""

from transformers import Qwen3Config, Qwen3ForCausalLM

from ..models.configuration_flap_qwen3 import FlapQwen3Config
from ..models.modeling_flap_qwen3 import FlapQwen3ForCausalLM
from .spec import DecoderArchitecture, ModelClasses

QWEN3 = DecoderArchitecture(
    model_type="qwen3",
    attention_bias_flag="attention_bias",
    per_head_norms=(),
    shared_head_norms=("q_norm", "k_norm"),
    classes=ModelClasses(Qwen3Config, Qwen3ForCausalLM, FlapQwen3Config, FlapQwen3ForCausalLM),
)
