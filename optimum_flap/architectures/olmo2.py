"""OLMo-2: the Llama layout with norms after each block and q/k norms over all heads at once.

`q_norm` normalises the concatenation of every query head (`num_attention_heads * head_dim` weights,
one RMS over all of them), and `k_norm` every key head. Removing a head changes that RMS for the
heads that remain, so no head removal is exact: attention heads are kept and only MLP channels are
pruned (`head_removal_refused`). `attention_bias` adds biases to q/k/v/o; the MLP has none. The norms
after each sub-block (`post_attention_layernorm`, `post_feedforward_layernorm`) multiply by their weight.
"""

from transformers import Olmo2Config, Olmo2ForCausalLM

from ..models.configuration_flap_olmo2 import FlapOlmo2Config
from ..models.modeling_flap_olmo2 import FlapOlmo2ForCausalLM
from .spec import DecoderArchitecture, ModelClasses

OLMO2 = DecoderArchitecture(
    model_type="olmo2",
    attention_bias_flag="attention_bias",
    attention_post_norm="post_attention_layernorm",
    mlp_post_norm="post_feedforward_layernorm",
    head_removal_refused=(
        "its q_norm / k_norm normalise all heads together (one RMS over num_heads * head_dim), so removing a "
        "head would change the normalisation of the heads that remain"
    ),
    classes=ModelClasses(Olmo2Config, Olmo2ForCausalLM, FlapOlmo2Config, FlapOlmo2ForCausalLM),
)
