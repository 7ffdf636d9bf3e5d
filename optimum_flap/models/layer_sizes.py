"""A layer's view of the model config with its own head counts, for attention modules that read them at forward.

Copied next to the weights of the pruned checkpoints of such families (Phi-3); imports nothing but
sibling files.
"""

from .flap_common import layer_config


class LayerSizesConfig:
    """One layer's view of the model config: its own head counts, everything else read live from the model's.

    Some stock attention modules read their head count from their config at every forward (Phi-3
    splits its fused `qkv_proj` at `config.num_attention_heads * head_dim`). A pruned layer's module
    gets this view, so it splits at its own width while the attention implementation and every other
    setting still follow the model's config.
    """

    def __init__(self, config, num_attention_heads, num_key_value_heads):
        if isinstance(config, LayerSizesConfig):
            config = config.__dict__["_config"]
        self.__dict__["_config"] = config
        self.__dict__["_sizes"] = {
            "num_attention_heads": num_attention_heads, "num_key_value_heads": num_key_value_heads,
        }

    def __getattr__(self, key):
        state = self.__dict__
        if "_sizes" not in state:  # a copy being built
            raise AttributeError(key)
        if key in state["_sizes"]:
            return state["_sizes"][key]
        return getattr(state["_config"], key)

    def __setattr__(self, key, value):
        setattr(self.__dict__["_config"], key, value)


def use_layer_sizes_in_attention(model, config):
    """Give each layer's attention module a `LayerSizesConfig` with that layer's head counts."""
    for layer_idx, layer in enumerate(model.layers):
        sizes = layer_config(config, layer_idx)
        layer.self_attn.config = LayerSizesConfig(config, sizes.num_attention_heads, sizes.num_key_value_heads)
