"""An OLMo-2 model pruned by optimum-flap: the stock OLMo-2 modules, built at each layer's own size.

Copied next to the weights of a pruned checkpoint, so that plain transformers loads it with
`trust_remote_code=True`; imports only torch and transformers. Only `__init__` differs from the
stock classes. OLMo-2 keeps every attention head (its q/k norms span all heads), so only the MLP
widths differ between layers.
"""

from transformers.models.olmo2.modeling_olmo2 import (
    Olmo2DecoderLayer,
    Olmo2ForCausalLM,
    Olmo2Model,
    Olmo2PreTrainedModel,
    Olmo2RMSNorm,
    Olmo2RotaryEmbedding,
)

from .configuration_flap_olmo2 import FlapOlmo2Config
from .flap_common import init_causal_lm, init_decoder_model


class FlapOlmo2Model(Olmo2Model):
    config_class = FlapOlmo2Config

    def __init__(self, config: FlapOlmo2Config):
        Olmo2PreTrainedModel.__init__(self, config)
        init_decoder_model(self, config, Olmo2DecoderLayer, Olmo2RMSNorm, Olmo2RotaryEmbedding)
        self.post_init()


class FlapOlmo2ForCausalLM(Olmo2ForCausalLM):
    config_class = FlapOlmo2Config

    def __init__(self, config: FlapOlmo2Config):
        Olmo2PreTrainedModel.__init__(self, config)
        init_causal_lm(self, config, FlapOlmo2Model)
        self.post_init()


__all__ = ["FlapOlmo2Model", "FlapOlmo2ForCausalLM"]
