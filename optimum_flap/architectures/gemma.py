"""Gemma 2 and Gemma 3 (text): the Llama module layout with Gemma's own forward around it.

What sets Gemma apart lives outside the projections that pruning cuts, so it is kept as it is:
embeddings scaled by sqrt(hidden_size) and tied to the LM head, query scaling by
`query_pre_attn_scalar`, attention-logit and final-logit soft-capping (Gemma 2), pre- and post-
feed-forward norms, a GELU-tanh gated MLP, and sliding and global attention layers in one model.
`attention_bias` adds biases to q/k/v/o. Gemma 3's `q_norm` / `k_norm` normalise each head over
`head_dim` with weights shared by all heads, so removing heads leaves them whole.

Both normalise each sub-block's output (`post_attention_layernorm`, `post_feedforward_layernorm`, the
"sandwich" norm of the Gemma 2 report) before the residual add, with gains stored as weight + 1.
"""

from transformers import Gemma2Config, Gemma2ForCausalLM, Gemma3ForCausalLM, Gemma3TextConfig

from ..models.configuration_flap_gemma2 import FlapGemma2Config
from ..models.configuration_flap_gemma3 import FlapGemma3TextConfig
from ..models.modeling_flap_gemma2 import FlapGemma2ForCausalLM
from ..models.modeling_flap_gemma3 import FlapGemma3ForCausalLM
from .spec import DecoderArchitecture, ModelClasses

GEMMA2 = DecoderArchitecture(
    model_type="gemma2",
    attention_bias_flag="attention_bias",
    attention_post_norm="post_attention_layernorm",
    mlp_post_norm="post_feedforward_layernorm",
    embeddings_scaled_by_sqrt_hidden=True,
    norm_weight_offset=1.0,
    classes=ModelClasses(Gemma2Config, Gemma2ForCausalLM, FlapGemma2Config, FlapGemma2ForCausalLM),
)

GEMMA3 = DecoderArchitecture(
    model_type="gemma3_text",
    attention_bias_flag="attention_bias",
    attention_post_norm="post_attention_layernorm",
    mlp_post_norm="post_feedforward_layernorm",
    shared_head_norms=("q_norm", "k_norm"),
    embeddings_scaled_by_sqrt_hidden=True,
    norm_weight_offset=1.0,
    classes=ModelClasses(Gemma3TextConfig, Gemma3ForCausalLM, FlapGemma3TextConfig, FlapGemma3ForCausalLM),
)
