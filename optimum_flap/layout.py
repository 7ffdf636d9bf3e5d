"""The per-layer sizes of a pruned model, as recorded in `model.config.pruning_layout`.

This record is the contract between pruning (which writes it after surgery) and checkpointing
(which turns it into transformers' `per_layer_config` on save). It holds sizes only: the weights
already carry which heads and channels were kept.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

LAYOUT_KEY = "pruning_layout"
RECIPE_KEY = "pruning_config"
#: config key of a masked (dense-shaped) model: per layer, per projection path, the fraction of zero weights
SPARSITY_KEY = "pruning_sparsity"


@dataclass
class LayerLayout:
    """Sizes of one decoder layer after pruning."""

    num_attention_heads: int
    num_key_value_heads: int
    intermediate_size: int
    #: indices (in the dense model) of the key/value head groups this layer kept
    kept_head_groups: list[int] = field(default_factory=list)


@dataclass
class PruningLayout:
    """Per-layer sizes plus the bias flags the pruned modules need beyond the stock config."""

    layers: list[LayerLayout]
    #: `o_proj` carries a bias (bias compensation, or the model's own attention bias)
    attention_output_bias: bool
    #: `down_proj` carries a bias (bias compensation, or the model's own MLP bias)
    mlp_output_bias: bool
    #: roles ("attention_output", "mlp_output") whose bias bias compensation added (the dense model had
    #: none); None when not recorded
    compensation_biases: list[str] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PruningLayout:
        layers = [LayerLayout(**layer) for layer in data["layers"]]
        compensation = data.get("compensation_biases")
        return cls(layers, bool(data["attention_output_bias"]), bool(data["mlp_output_bias"]),
                   None if compensation is None else list(compensation))

    @classmethod
    def from_config(cls, config: Any) -> PruningLayout | None:
        """The layout recorded on a model config, or None for a model that was never pruned."""
        data = getattr(config, LAYOUT_KEY, None)
        return None if data is None else cls.from_dict(data)

    def is_uniform(self) -> bool:
        """True when every layer has the same sizes (a stock config could describe it)."""
        first = self.layers[0]
        return all(
            (layer.num_attention_heads, layer.num_key_value_heads, layer.intermediate_size)
            == (first.num_attention_heads, first.num_key_value_heads, first.intermediate_size)
            for layer in self.layers
        )
