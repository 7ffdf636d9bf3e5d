"""A Qwen3 model pruned by optimum-flap: the stock Qwen3 modules, built at each layer's own size.

Copied next to the weights of a pruned checkpoint, so that plain transformers loads it with
`trust_remote_code=True`; imports only torch and transformers. Only `__init__` differs from the
stock classes: the forward code is transformers' own.
"""

from transformers.models.qwen3.modeling_qwen3 import (
    Qwen3DecoderLayer,
    Qwen3ForCausalLM,
    Qwen3Model,
    Qwen3PreTrainedModel,
    Qwen3RMSNorm,
    Qwen3RotaryEmbedding,
)

from .configuration_flap_qwen3 import FlapQwen3Config
from .flap_common import init_causal_lm, init_decoder_model


class FlapQwen3Model(Qwen3Model):
    config_class = FlapQwen3Config

    def __init__(self, config: FlapQwen3Config):
        Qwen3PreTrainedModel.__init__(self, config)
        init_decoder_model(self, config, Qwen3DecoderLayer, Qwen3RMSNorm, Qwen3RotaryEmbedding)
        self.has_sliding_layers = "sliding_attention" in config.layer_types
        self.post_init()


class FlapQwen3ForCausalLM(Qwen3ForCausalLM):
    config_class = FlapQwen3Config

    def __init__(self, config: FlapQwen3Config):
        Qwen3PreTrainedModel.__init__(self, config)
        init_causal_lm(self, config, FlapQwen3Model)
        self.post_init()


__all__ = ["FlapQwen3Model", "FlapQwen3ForCausalLM"]
