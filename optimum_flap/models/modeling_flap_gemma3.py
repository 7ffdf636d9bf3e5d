"""A Gemma 3 model pruned by optimum-flap: the stock Gemma 3 modules, built at each layer's own size.

Copied next to the weights of a pruned checkpoint, so that plain transformers loads it with
`trust_remote_code=True`; imports only torch and transformers. Only `__init__` differs from the
stock classes: the forward code (per-head q/k norms, query scaling, local and global layers) is transformers' own.
"""

from transformers.models.gemma3.modeling_gemma3 import (
    Gemma3DecoderLayer,
    Gemma3ForCausalLM,
    Gemma3PreTrainedModel,
    Gemma3RMSNorm,
    Gemma3RotaryEmbedding,
    Gemma3TextModel,
    Gemma3TextScaledWordEmbedding,
)

from .configuration_flap_gemma3 import FlapGemma3TextConfig
from .flap_common import init_causal_lm, init_decoder_model


class FlapGemma3TextModel(Gemma3TextModel):
    config_class = FlapGemma3TextConfig

    def __init__(self, config: FlapGemma3TextConfig):
        Gemma3PreTrainedModel.__init__(self, config)
        init_decoder_model(self, config, Gemma3DecoderLayer, Gemma3RMSNorm, Gemma3RotaryEmbedding,
                           Gemma3TextScaledWordEmbedding)
        self.post_init()


class FlapGemma3ForCausalLM(Gemma3ForCausalLM):
    config_class = FlapGemma3TextConfig

    def __init__(self, config: FlapGemma3TextConfig):
        Gemma3PreTrainedModel.__init__(self, config)
        init_causal_lm(self, config, FlapGemma3TextModel)
        self.post_init()


__all__ = ["FlapGemma3TextModel", "FlapGemma3ForCausalLM"]
