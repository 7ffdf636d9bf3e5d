"""A Mistral model pruned by optimum-flap: the stock Mistral modules, built at each layer's own size.

Copied next to the weights of a pruned checkpoint, so that plain transformers loads it with
`trust_remote_code=True`; imports only torch and transformers. Only `__init__` differs from the
stock classes: the forward code is transformers' own.
"""

from transformers.models.mistral.modeling_mistral import (
    MistralDecoderLayer,
    MistralForCausalLM,
    MistralModel,
    MistralPreTrainedModel,
    MistralRMSNorm,
    MistralRotaryEmbedding,
)

from .configuration_flap_mistral import FlapMistralConfig
from .flap_common import init_causal_lm, init_decoder_model


class FlapMistralModel(MistralModel):
    config_class = FlapMistralConfig

    def __init__(self, config: FlapMistralConfig):
        MistralPreTrainedModel.__init__(self, config)
        init_decoder_model(self, config, MistralDecoderLayer, MistralRMSNorm, MistralRotaryEmbedding)
        self.post_init()


class FlapMistralForCausalLM(MistralForCausalLM):
    config_class = FlapMistralConfig

    def __init__(self, config: FlapMistralConfig):
        MistralPreTrainedModel.__init__(self, config)
        init_causal_lm(self, config, FlapMistralModel)
        self.post_init()


__all__ = ["FlapMistralModel", "FlapMistralForCausalLM"]
