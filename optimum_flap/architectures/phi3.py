"""Phi-3: fused projections, `qkv_proj` = [q | k | v] rows and `gate_up_proj` = [gate | up] rows.

Each role's block is cut at its own row offset and the pruned model keeps the fused layout. The stock
attention splits `qkv_proj` at `config.num_attention_heads * head_dim` at every forward, so a pruned
layer's attention gets its own head counts (`attention_sizes_in_config`). No projection has a bias in
the stock model and the config has no flag for one.
"""

from transformers import Phi3Config, Phi3ForCausalLM

from ..models.configuration_flap_phi3 import FlapPhi3Config
from ..models.modeling_flap_phi3 import FlapPhi3ForCausalLM
from .spec import DecoderArchitecture, ModelClasses

PHI3 = DecoderArchitecture(
    model_type="phi3",
    query="qkv_proj",
    key="qkv_proj",
    value="qkv_proj",
    gate="gate_up_proj",
    up="gate_up_proj",
    attention_sizes_in_config=True,
    classes=ModelClasses(Phi3Config, Phi3ForCausalLM, FlapPhi3Config, FlapPhi3ForCausalLM),
)
