"""Helpers shared by the `flap_*` model classes of optimum-flap pruned checkpoints.

This file is copied next to the weights of every pruned checkpoint (it is imported by the
`configuration_flap_*.py` and `modeling_flap_*.py` files with a single-dot import), so it must
import nothing but torch and transformers.

A pruned model is the stock decoder whose layers have their own sizes: layer `i` is built from
`config.per_layer_config[i]` (transformers' native per-layer config), and `o_proj` / `down_proj`
carry a bias when `config.attention_output_bias` / `config.mlp_output_bias` say so (FLAP's bias
compensation). Nothing else differs from the stock model, so the stock forward code is reused.
"""

from torch import nn

#: Written to config.json only. A pruned checkpoint keeps its stock model_type, so tools that read config.json
#: without remote code (AutoTokenizer, a load without the flag) build the stock config class, which refuses a
#: per-layer config unless reads of the global sizes are allowed. They then read the dense sizes: a stock model
#: built from them fails on the weights' shapes instead of loading wrong ones.
STOCK_READABLE = {"allow_global_per_layer_attribute_access": True}


def layer_config(config, layer_idx):
    """The resolved config of one decoder layer (the global config when all layers are alike)."""
    return config.per_layer_config[layer_idx] if config.is_heterogeneous else config


def validate_layer_sizes(config):
    """Check every layer's sizes; replaces the stock `hidden_size % num_attention_heads` check.

    A pruned layer keeps the model's `head_dim`, so its head count need not divide `hidden_size`.
    Global reads of a per-layer size are an error again in memory (config.json allows them for the
    stock classes, see `STOCK_READABLE`): this model reads each layer's own sizes.
    """
    config.allow_global_per_layer_attribute_access = False
    if not isinstance(config.head_dim, int) or config.head_dim <= 0:
        raise ValueError(f"A pruned model needs an explicit positive `head_dim`, got {config.head_dim!r}.")
    for layer_idx in range(config.num_hidden_layers):
        layer = layer_config(config, layer_idx)
        heads, kv_heads = layer.num_attention_heads, layer.num_key_value_heads
        if layer.intermediate_size < 1 or kv_heads < 1 or heads < 1 or heads % kv_heads:
            raise ValueError(
                f"Layer {layer_idx}: invalid sizes num_attention_heads={heads}, "
                f"num_key_value_heads={kv_heads}, intermediate_size={layer.intermediate_size} (each must be "
                "at least 1 and num_attention_heads a multiple of num_key_value_heads)."
            )


class PrunedConfig:
    """Mixed in before the stock config class by every `Flap<Family>Config` (with the two bias flags and
    `checkpoint_format` as fields): the per-layer size check and the config.json stock classes can read."""

    def validate_architecture(self):
        """Check each layer's sizes instead of the dense `hidden_size % num_attention_heads` rule."""
        validate_layer_sizes(self)

    def to_dict(self):
        """The dict of config.json: this config's fields plus `STOCK_READABLE`."""
        return {**super().to_dict(), **STOCK_READABLE}


def _with_bias(linear):
    """`linear` itself if it has a bias, else a same-shaped Linear that has one."""
    if linear.bias is not None:
        return linear
    weight = linear.weight
    return nn.Linear(linear.in_features, linear.out_features, bias=True, device=weight.device, dtype=weight.dtype)


def build_decoder_layer(config, layer_idx, decoder_layer_class):
    """One stock decoder layer built at its own sizes, with the output biases the config asks for."""
    layer = decoder_layer_class(layer_config(config, layer_idx), layer_idx)
    # The submodules keep the global config, so later changes to it (e.g. the attention
    # implementation) reach every layer, as in the stock model.
    for module in (layer.self_attn, layer.mlp):
        if getattr(module, "config", None) is not None:
            module.config = config
    if config.attention_output_bias:
        layer.self_attn.o_proj = _with_bias(layer.self_attn.o_proj)
    if config.mlp_output_bias:
        layer.mlp.down_proj = _with_bias(layer.mlp.down_proj)
    return layer


def init_decoder_model(model, config, decoder_layer_class, norm_class, rotary_class, embedding_class=None):
    """Set up the modules of a stock `<Family>Model`, building each decoder layer at its own sizes.

    This mirrors the stock `<Family>Model.__init__`, which cannot be reused because it builds every
    layer from the global config. `embedding_class` is the family's scaled embedding (Gemma multiplies
    the embeddings by sqrt(hidden_size)); a plain `nn.Embedding` otherwise. The caller then sets any
    family-specific attribute and calls `post_init()`.
    """
    model.padding_idx = config.pad_token_id
    model.vocab_size = config.vocab_size
    if embedding_class is None:
        model.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size, model.padding_idx)
    else:
        model.embed_tokens = embedding_class(
            config.vocab_size, config.hidden_size, model.padding_idx, embed_scale=config.hidden_size**0.5
        )
    model.layers = nn.ModuleList(
        [build_decoder_layer(config, i, decoder_layer_class) for i in range(config.num_hidden_layers)]
    )
    model.norm = norm_class(config.hidden_size, eps=config.rms_norm_eps)
    model.rotary_emb = rotary_class(config=config)
    model.gradient_checkpointing = False


def init_causal_lm(model, config, base_model_class):
    """Set up the modules of a stock `<Family>ForCausalLM` around a pruned base model."""
    model.model = base_model_class(config)
    model.vocab_size = config.vocab_size
    model.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)

