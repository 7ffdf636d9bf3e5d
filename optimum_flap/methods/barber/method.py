"""LLM-Barber (Su et al., arXiv 2408.10631) in the calibration pipeline: per layer, attention then MLP.

Propagation is "pruned", as the released code: a layer sees the hidden states of the already pruned
(and rebuilt) layers before it. Inside `block_done`, for the attention sub-block and then the MLP
sub-block of the layer:

1. capture the sub-block's inputs (after its layer norm) and call keywords for every calibration
   sequence; the MLP's inputs come from the layer with its attention already rebuilt;
2. the initial masks (magnitude, Wanda or SparseGPT) from those inputs;
3. the rebuild (`rebuild_block_masks`): the dense sub-block on the same inputs is the target, one
   backward pass per sequence, S = |W| * sqrt(E[g^2]), rank-matched swaps per comparison group.

The layer's dense weights are the only dense copy: the model is never duplicated, and the pipeline
zeroes the masked weights when it applies the returned plan.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ...plan import MaskLayerPlan
from ..sparse.method import MaskMethod
from ..sparse.scoring import InputStatistics, initial_masks, observe_calls
from ..sparsity import rebuild_block_masks
from .capture import SubBlockCall, capture_inputs, replaced_output


class BarberMethod(MaskMethod):
    """LLM-Barber's block-aware rebuild of a magnitude, Wanda or SparseGPT initial mask."""

    name = "barber"

    def _local_paths(self, sub_block_name: str) -> list[str]:
        prefix = sub_block_name + "."
        return [path[len(prefix):] for path in self.paths if path.startswith(prefix)]

    def _rebuild(self, sub_block: nn.Module, paths: list[str], samples: list[SubBlockCall]) -> MaskLayerPlan:
        """The sub-block's rebuilt masks (paths inside it), with SparseGPT's weights when they are kept."""
        config = self.config
        statistics = InputStatistics(config.barber_init, paths)
        observe_calls(sub_block, statistics, samples)
        masks, reconstructed = initial_masks(sub_block, paths, statistics, config.pruning_ratio, self.pattern)
        rebuilt = rebuild_block_masks(
            sub_block, samples, masks, config.barber_alpha, config.barber_granularity,
            self.pattern.group if self.pattern else None,
            sparse_weights=reconstructed if config.barber_keep_reconstruction else None,
        )
        weights = {}
        if config.barber_keep_reconstruction:  # reconstructed survivors; revived weights return dense
            weights = {path: torch.where(masks[path], reconstructed[path], sub_block.get_submodule(path).weight)
                       for path in paths}
        return MaskLayerPlan(rebuilt, weights)

    def block_done(self, block: Any) -> MaskLayerPlan:
        arch, layer = self.architecture, block.module
        attention, mlp = arch.attention(layer), arch.mlp(layer)

        def run_layer() -> None:
            for batch in range(block.num_batches):
                block.run(batch)

        attention_plan = self._rebuild(attention, self._local_paths(arch.attention_name),
                                       capture_inputs(attention, run_layer))
        masked = {}
        for path, mask in attention_plan.masks.items():
            weight = attention_plan.weights.get(path, attention.get_submodule(path).weight)
            masked[f"{path}.weight"] = weight.detach() * mask
        handle = replaced_output(attention, masked)  # the MLP sees the rebuilt attention's outputs
        try:
            mlp_samples = capture_inputs(mlp, run_layer)
        finally:
            handle.remove()
        del masked
        mlp_plan = self._rebuild(mlp, self._local_paths(arch.mlp_name), mlp_samples)
        prefixed = {f"{arch.attention_name}.{p}": m for p, m in attention_plan.masks.items()}
        prefixed.update({f"{arch.mlp_name}.{p}": m for p, m in mlp_plan.masks.items()})
        weights = {f"{arch.attention_name}.{p}": w for p, w in attention_plan.weights.items()}
        weights.update({f"{arch.mlp_name}.{p}": w for p, w in mlp_plan.weights.items()})
        return MaskLayerPlan(prefixed, weights)
