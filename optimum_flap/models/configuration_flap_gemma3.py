"""Configuration of a Gemma3 model pruned by optimum-flap (layers of different sizes).

Copied next to the weights of a pruned checkpoint; imports only transformers (and huggingface_hub,
which transformers itself depends on for its `@strict` configs).
"""

from huggingface_hub.dataclasses import strict
from transformers import Gemma3TextConfig

from .flap_common import validate_layer_sizes


@strict
class FlapGemma3TextConfig(Gemma3TextConfig):
    """`Gemma3TextConfig` plus per-layer sizes.

    The global sizes (`num_attention_heads`, `num_key_value_heads`, `intermediate_size`) are the dense
    model's; each pruned layer's sizes are in `per_layer_config` (transformers' native per-layer
    schema). `attention_output_bias` / `mlp_output_bias` add a bias to `o_proj` / `down_proj` only.
    """

    model_type = "flap_gemma3_text"
    #: the stock family this model is a pruned version of
    base_model_type = "gemma3_text"

    attention_output_bias: bool = False
    mlp_output_bias: bool = False
    checkpoint_format: str = "flap-remote-code"

    def validate_architecture(self):
        """Check each layer's sizes instead of the dense `hidden_size % num_attention_heads` rule."""
        validate_layer_sizes(self)


__all__ = ["FlapGemma3TextConfig"]
