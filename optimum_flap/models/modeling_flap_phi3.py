"""A Phi-3 model pruned by optimum-flap: the stock Phi-3 modules, built at each layer's own size.

Copied next to the weights of a pruned checkpoint, so that plain transformers loads it with
`trust_remote_code=True`; imports only torch and transformers. The projections keep Phi-3's fused
layout (`qkv_proj` = [q | k | v] rows, `gate_up_proj` = [gate | up] rows) at each layer's widths; the
stock attention splits `qkv_proj` at its config's head count, so each layer's attention reads its own
(`LayerSizesConfig`). The forward code is transformers' own.
"""

from transformers.models.phi3.modeling_phi3 import (
    Phi3DecoderLayer,
    Phi3ForCausalLM,
    Phi3Model,
    Phi3PreTrainedModel,
    Phi3RMSNorm,
    Phi3RotaryEmbedding,
)

from .configuration_flap_phi3 import FlapPhi3Config
from .flap_common import init_causal_lm, init_decoder_model
from .layer_sizes import use_layer_sizes_in_attention


class FlapPhi3Model(Phi3Model):
    config_class = FlapPhi3Config

    def __init__(self, config: FlapPhi3Config):
        Phi3PreTrainedModel.__init__(self, config)
        init_decoder_model(self, config, Phi3DecoderLayer, Phi3RMSNorm, Phi3RotaryEmbedding)
        use_layer_sizes_in_attention(self, config)
        self.post_init()


class FlapPhi3ForCausalLM(Phi3ForCausalLM):
    config_class = FlapPhi3Config

    def __init__(self, config: FlapPhi3Config):
        Phi3PreTrainedModel.__init__(self, config)
        init_causal_lm(self, config, FlapPhi3Model)
        self.post_init()


__all__ = ["FlapPhi3Model", "FlapPhi3ForCausalLM"]
