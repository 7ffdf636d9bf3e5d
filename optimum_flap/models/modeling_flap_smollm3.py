"""A SmolLM3 model pruned by optimum-flap: the stock SmolLM3 modules, built at each layer's own size.

Copied next to the weights of a pruned checkpoint, so that plain transformers loads it with
`trust_remote_code=True`; imports only torch and transformers. Only `__init__` differs from the
stock classes: the layers without rotary embeddings (`no_rope_layers`) stay so, as each layer reads
its flag from the config.
"""

from transformers.models.smollm3.modeling_smollm3 import (
    SmolLM3DecoderLayer,
    SmolLM3ForCausalLM,
    SmolLM3Model,
    SmolLM3PreTrainedModel,
    SmolLM3RMSNorm,
    SmolLM3RotaryEmbedding,
)

from .configuration_flap_smollm3 import FlapSmolLM3Config
from .flap_common import init_causal_lm, init_decoder_model


class FlapSmolLM3Model(SmolLM3Model):
    config_class = FlapSmolLM3Config

    def __init__(self, config: FlapSmolLM3Config):
        SmolLM3PreTrainedModel.__init__(self, config)
        init_decoder_model(self, config, SmolLM3DecoderLayer, SmolLM3RMSNorm, SmolLM3RotaryEmbedding)
        self.has_sliding_layers = "sliding_attention" in config.layer_types
        self.post_init()


class FlapSmolLM3ForCausalLM(SmolLM3ForCausalLM):
    config_class = FlapSmolLM3Config

    def __init__(self, config: FlapSmolLM3Config):
        SmolLM3PreTrainedModel.__init__(self, config)
        init_causal_lm(self, config, FlapSmolLM3Model)
        self.post_init()


__all__ = ["FlapSmolLM3Model", "FlapSmolLM3ForCausalLM"]
