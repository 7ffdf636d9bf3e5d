"""A Qwen2 model pruned by optimum-flap: the stock Qwen2 modules, built at each layer's own size.

Copied next to the weights of a pruned checkpoint, so that plain transformers loads it with
`trust_remote_code=True`; imports only torch and transformers. Only `__init__` differs from the
stock classes: the forward code is transformers' own.
"""

from transformers.models.qwen2.modeling_qwen2 import (
    Qwen2DecoderLayer,
    Qwen2ForCausalLM,
    Qwen2Model,
    Qwen2PreTrainedModel,
    Qwen2RMSNorm,
    Qwen2RotaryEmbedding,
)

from .configuration_flap_qwen2 import FlapQwen2Config
from .flap_common import init_causal_lm, init_decoder_model


class FlapQwen2Model(Qwen2Model):
    config_class = FlapQwen2Config

    def __init__(self, config: FlapQwen2Config):
        Qwen2PreTrainedModel.__init__(self, config)
        init_decoder_model(self, config, Qwen2DecoderLayer, Qwen2RMSNorm, Qwen2RotaryEmbedding)
        self.has_sliding_layers = "sliding_attention" in config.layer_types
        self.post_init()


class FlapQwen2ForCausalLM(Qwen2ForCausalLM):
    config_class = FlapQwen2Config

    def __init__(self, config: FlapQwen2Config):
        Qwen2PreTrainedModel.__init__(self, config)
        init_causal_lm(self, config, FlapQwen2Model)
        self.post_init()


__all__ = ["FlapQwen2Model", "FlapQwen2ForCausalLM"]
