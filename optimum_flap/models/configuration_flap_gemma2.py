"""Configuration of a Gemma2 model pruned by optimum-flap (layers of different sizes).

Copied next to the weights of a pruned checkpoint; imports only transformers (and huggingface_hub,
which transformers itself depends on for its `@strict` configs).
"""

from huggingface_hub.dataclasses import strict
from transformers import Gemma2Config

from .flap_common import PrunedConfig


@strict
class FlapGemma2Config(PrunedConfig, Gemma2Config):
    """`Gemma2Config` plus per-layer sizes.

    The global sizes (`num_attention_heads`, `num_key_value_heads`, `intermediate_size`) are the dense
    model's; each pruned layer's sizes are in `per_layer_config` (transformers' native per-layer
    schema). `attention_output_bias` / `mlp_output_bias` add a bias to `o_proj` / `down_proj` only.
    """

    # the stock model_type, so that tools which read config.json without remote code (AutoTokenizer)
    # resolve the stock config class and need no prompt
    model_type = "gemma2"

    attention_output_bias: bool = False
    mlp_output_bias: bool = False
    checkpoint_format: str = "flap-remote-code"


__all__ = ["FlapGemma2Config"]
