"""A Gemma 2 model pruned by optimum-flap: the stock Gemma 2 modules, built at each layer's own size.

Copied next to the weights of a pruned checkpoint, so that plain transformers loads it with
`trust_remote_code=True`; imports only torch and transformers. Only `__init__` differs from the
stock classes: the forward code (soft-capping, query scaling, sliding layers) is transformers' own.
"""

from transformers.models.gemma2.modeling_gemma2 import (
    Gemma2DecoderLayer,
    Gemma2ForCausalLM,
    Gemma2Model,
    Gemma2PreTrainedModel,
    Gemma2RMSNorm,
    Gemma2RotaryEmbedding,
    Gemma2TextScaledWordEmbedding,
)

from .configuration_flap_gemma2 import FlapGemma2Config
from .flap_common import init_causal_lm, init_decoder_model


class FlapGemma2Model(Gemma2Model):
    config_class = FlapGemma2Config

    def __init__(self, config: FlapGemma2Config):
        Gemma2PreTrainedModel.__init__(self, config)
        init_decoder_model(self, config, Gemma2DecoderLayer, Gemma2RMSNorm, Gemma2RotaryEmbedding,
                           Gemma2TextScaledWordEmbedding)
        self.post_init()


class FlapGemma2ForCausalLM(Gemma2ForCausalLM):
    config_class = FlapGemma2Config

    def __init__(self, config: FlapGemma2Config):
        Gemma2PreTrainedModel.__init__(self, config)
        init_causal_lm(self, config, FlapGemma2Model)
        self.post_init()


__all__ = ["FlapGemma2Model", "FlapGemma2ForCausalLM"]
