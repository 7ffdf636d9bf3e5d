"""A Granite model pruned by optimum-flap: the stock Granite modules, built at each layer's own size.

Copied next to the weights of a pruned checkpoint, so that plain transformers loads it with
`trust_remote_code=True`; imports only torch and transformers. Only `__init__` differs from the
stock classes: the embedding, residual, attention and logits multipliers are read from the config by
transformers' own forward code, as in the dense model.
"""

from transformers.models.granite.modeling_granite import (
    GraniteDecoderLayer,
    GraniteForCausalLM,
    GraniteModel,
    GranitePreTrainedModel,
    GraniteRMSNorm,
    GraniteRotaryEmbedding,
)

from .configuration_flap_granite import FlapGraniteConfig
from .flap_common import init_causal_lm, init_decoder_model


class FlapGraniteModel(GraniteModel):
    config_class = FlapGraniteConfig

    def __init__(self, config: FlapGraniteConfig):
        GranitePreTrainedModel.__init__(self, config)
        init_decoder_model(self, config, GraniteDecoderLayer, GraniteRMSNorm, GraniteRotaryEmbedding)
        self.embedding_multiplier = config.embedding_multiplier
        self.post_init()


class FlapGraniteForCausalLM(GraniteForCausalLM):
    config_class = FlapGraniteConfig

    def __init__(self, config: FlapGraniteConfig):
        GranitePreTrainedModel.__init__(self, config)
        init_causal_lm(self, config, FlapGraniteModel)
        self.post_init()


__all__ = ["FlapGraniteModel", "FlapGraniteForCausalLM"]
