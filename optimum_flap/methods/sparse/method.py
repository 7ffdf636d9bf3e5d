"""Magnitude, Wanda and SparseGPT as one sequential mask method (by `config.method`).

As the released Wanda and SparseGPT code, each decoder layer is scored on the *pruned* model's hidden
states (propagation "pruned"): every projection of the layer sees the inputs the pruned previous
layers produce, the layer's masks are applied, and the pruned layer's outputs feed the next one.
Magnitude needs no data. `pruning_ratio` is the fraction of each projection's weights set to zero.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from ...plan import MaskLayerPlan, PruningPlan
from ..base import PruningMethod
from .patterns import parse_sparsity_type
from .scoring import InputStatistics, check_n_m_divisible, initial_masks


class MaskMethod(PruningMethod):
    """What every keep-mask method shares: its sparsity pattern over every projection, sequential on the
    pruned stream, each layer's masks applied in `block_done` (so nothing is left for `finish`)."""

    plan_kind = "mask"
    propagation = "pruned"

    def __init__(self, config: Any, architecture: Any) -> None:
        super().__init__(config, architecture)
        self.pattern = parse_sparsity_type(config.sparsity_type, config.pruning_ratio)
        self.paths = tuple(architecture.projection_paths())

    def check(self, model: nn.Module) -> None:
        check_n_m_divisible(self.paths, self.architecture.decoder_layers(model), self.pattern)

    def finish(self, model: nn.Module) -> PruningPlan:
        """Every layer's plan was applied in `block_done`; the zeros in the model are the record.

        Masks are not kept: for all layers they would weigh a quarter of a float32 model.
        """
        return PruningPlan(kind="mask", layers=[])


class SparseMaskMethod(MaskMethod):
    """Unstructured or N:M keep-masks from magnitude, Wanda or SparseGPT scores, one layer at a time."""

    name = "sparse"

    def __init__(self, config: Any, architecture: Any) -> None:
        super().__init__(config, architecture)
        self.name = config.method
        self._statistics: InputStatistics | None = None

    def needs_calibration(self) -> bool:
        return self.config.method != "magnitude"

    def observers(self, block: Any) -> dict[str, Any]:
        self._statistics = InputStatistics(self.config.method, self.paths)
        return self._statistics.observers()

    def block_done(self, block: Any) -> MaskLayerPlan:
        statistics = self._statistics or InputStatistics(self.config.method, self.paths)
        masks, weights = initial_masks(block.module, self.paths, statistics, self.config.pruning_ratio, self.pattern,
                                       self.config.sparsegpt_mask_selection or "row")  # None: not SparseGPT
        self._statistics = None
        return MaskLayerPlan(masks, weights)
