"""A LLaMA model pruned by optimum-flap: the stock Llama modules, built at each layer's own size.

Copied next to the weights of a pruned checkpoint, so that plain transformers loads it with
`trust_remote_code=True`; imports only torch and transformers. Only `__init__` differs from the
stock classes: the forward code is transformers' own.
"""

from transformers.models.llama.modeling_llama import (
    LlamaDecoderLayer,
    LlamaForCausalLM,
    LlamaModel,
    LlamaPreTrainedModel,
    LlamaRMSNorm,
    LlamaRotaryEmbedding,
)

from .configuration_flap_llama import FlapLlamaConfig
from .flap_common import init_causal_lm, init_decoder_model


class FlapLlamaModel(LlamaModel):
    config_class = FlapLlamaConfig

    def __init__(self, config: FlapLlamaConfig):
        LlamaPreTrainedModel.__init__(self, config)
        init_decoder_model(self, config, LlamaDecoderLayer, LlamaRMSNorm, LlamaRotaryEmbedding)
        self.post_init()


class FlapLlamaForCausalLM(LlamaForCausalLM):
    config_class = FlapLlamaConfig

    def __init__(self, config: FlapLlamaConfig):
        LlamaPreTrainedModel.__init__(self, config)
        init_causal_lm(self, config, FlapLlamaModel)
        self.post_init()


__all__ = ["FlapLlamaModel", "FlapLlamaForCausalLM"]
