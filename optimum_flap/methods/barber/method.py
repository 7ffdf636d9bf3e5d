"""LLM-Barber (Su et al., arXiv 2408.10631) in the calibration pipeline: per layer, attention then MLP.

Propagation is "pruned", as the released code: a layer sees the hidden states of the already pruned
(and rebuilt) layers before it. Inside `block_done`, for the attention sub-block and then the MLP
sub-block of the layer:

1. capture the sub-block's inputs (after its layer norm) and call keywords for every calibration
   sequence of every batch; the MLP's inputs come from the layer with its attention already rebuilt;
2. the initial masks (magnitude, Wanda or SparseGPT, with SparseGPT's updated weights), computed on
   the stream `barber_init_stream` names (see `InitialStream`);
3. the rebuild (`rebuild_block_masks`): the target is the sub-block with its initial sparse weights
   (W * M, or SparseGPT's updated weights) on the captured inputs, the gradient is taken at the dense
   weights, one backward pass per sequence, S = |W| * sqrt(E[g^2]), rank-matched swaps per group.

The layer's dense weights are the only dense copy: the model is never duplicated, and the pipeline
zeroes the masked weights when it applies the returned plan.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import torch
from torch import nn
from torch.func import functional_call

from ...plan import MaskLayerPlan
from ..sparse.method import MaskMethod
from ..sparse.scoring import InputStatistics, initial_masks, observe_calls
from ..sparsity import rebuild_block_masks
from .capture import SubBlockCall, capture_inputs, replaced_output

#: a sub-block's initial keep-masks and SparseGPT's updated weights (empty for magnitude and Wanda)
InitialMasks = tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]


class InitialStream:
    """The initial method's own pruned stream, carried beside the pipeline's (`barber_init_stream="initial"`).

    The release prunes the whole model with the initial method before it rebuilds anything, so layer
    i's initial masks are computed on the hidden states of layers 0..i-1 pruned by the initial method
    alone (with SparseGPT's updated weights), and every projection of the layer is scored from one
    pass of the dense layer, as the Wanda and SparseGPT methods do. This keeps those hidden states,
    one tensor per calibration sequence, on the device of the pipeline's; it costs one more copy of
    the calibration hidden states and one more pass of each layer.
    """

    def __init__(self) -> None:
        self.hidden: list[torch.Tensor] | None = None

    def layer_masks(self, layer: nn.Module, calls: list[SubBlockCall], score: str, paths: tuple[str, ...],
                    ratio: float, pattern: Any, sparsegpt_mask_selection: str) -> InitialMasks:
        """Layer `layer`'s initial masks from this stream, which then moves past the layer.

        `calls` are the layer's own per-sequence calls on the pipeline's stream: their keywords
        (rotary embeddings, attention mask) serve this stream too; at layer 0 both streams start equal.
        """
        hidden = self.hidden if self.hidden is not None else [x for x, _ in calls]
        own_calls = [(x, kwargs) for x, (_, kwargs) in zip(hidden, calls)]
        statistics = InputStatistics(score, paths)
        observe_calls(layer, statistics, own_calls)
        masks, reconstructed = initial_masks(layer, paths, statistics, ratio, pattern, sparsegpt_mask_selection)
        sparse = {f"{path}.weight": reconstructed.get(path, layer.get_submodule(path).weight.detach() * mask)
                  for path, mask in masks.items()}
        with torch.no_grad():
            outputs = [functional_call(layer, sparse, (x,), kwargs) for x, kwargs in own_calls]
        self.hidden = [out[0] if isinstance(out, tuple) else out for out in outputs]
        return masks, reconstructed


def _inside(sub_block_name: str, masks: InitialMasks) -> InitialMasks:
    """The entries of a layer's `masks` under `sub_block_name`, keyed by their path inside the sub-block."""
    prefix = sub_block_name + "."
    return tuple({path[len(prefix):]: value for path, value in part.items() if path.startswith(prefix)}
                 for part in masks)


class BarberMethod(MaskMethod):
    """LLM-Barber's block-aware rebuild of a magnitude, Wanda or SparseGPT initial mask."""

    name = "barber"

    def __init__(self, config: Any, architecture: Any) -> None:
        super().__init__(config, architecture)
        self._initial_stream = InitialStream() if config.barber_init_stream == "initial" else None

    def _local_paths(self, sub_block_name: str) -> list[str]:
        prefix = sub_block_name + "."
        return [path[len(prefix):] for path in self.paths if path.startswith(prefix)]

    def _initial_masks(self, sub_block: nn.Module, paths: list[str], samples: list[SubBlockCall]) -> InitialMasks:
        """The sub-block's initial masks from its inputs on the rebuilt stream (`barber_init_stream="rebuilt"`)."""
        statistics = InputStatistics(self.config.barber_init, paths)
        observe_calls(sub_block, statistics, samples)
        return initial_masks(sub_block, paths, statistics, self.config.pruning_ratio, self.pattern,
                             self.config.sparsegpt_mask_selection)

    def _rebuild(self, sub_block: nn.Module, samples: list[SubBlockCall], initial: InitialMasks) -> MaskLayerPlan:
        """The sub-block's rebuilt masks (paths inside it), with SparseGPT's weights when they are kept.

        The target is the sub-block with its initial sparse weights, SparseGPT's updated ones when it
        is the initial method (as the release, whose sparse model holds them while it rebuilds).
        """
        config = self.config
        masks, reconstructed = initial
        rebuilt = rebuild_block_masks(
            sub_block, samples, masks, config.barber_alpha, config.barber_granularity,
            self.pattern.group if self.pattern else None, sparse_weights=reconstructed or None,
        )
        weights = {}
        if config.barber_keep_reconstruction:  # reconstructed survivors; revived weights return dense
            weights = {path: torch.where(masks[path], reconstructed[path], sub_block.get_submodule(path).weight)
                       for path in masks}
        return MaskLayerPlan(rebuilt, weights)

    def block_done(self, block: Any) -> MaskLayerPlan:
        arch, layer = self.architecture, block.module
        attention, mlp = arch.attention(layer), arch.mlp(layer)
        forwards = [partial(block.run, batch) for batch in range(block.num_batches)]
        layer_initial = None
        if self._initial_stream is not None:
            layer_initial = self._initial_stream.layer_masks(
                layer, capture_inputs(layer, forwards), self.config.barber_init, self.paths,
                self.config.pruning_ratio, self.pattern, self.config.sparsegpt_mask_selection)

        attention_samples = capture_inputs(attention, forwards)
        attention_initial = (_inside(arch.attention_name, layer_initial) if layer_initial else
                             self._initial_masks(attention, self._local_paths(arch.attention_name), attention_samples))
        attention_plan = self._rebuild(attention, attention_samples, attention_initial)
        del attention_samples
        masked = {}
        for path, mask in attention_plan.masks.items():
            weight = attention_plan.weights.get(path, attention.get_submodule(path).weight)
            masked[f"{path}.weight"] = weight.detach() * mask
        handle = replaced_output(attention, masked)  # the MLP sees the rebuilt attention's outputs
        try:
            mlp_samples = capture_inputs(mlp, forwards)
        finally:
            handle.remove()
        del masked
        mlp_initial = (_inside(arch.mlp_name, layer_initial) if layer_initial else
                       self._initial_masks(mlp, self._local_paths(arch.mlp_name), mlp_samples))
        mlp_plan = self._rebuild(mlp, mlp_samples, mlp_initial)
        prefixed = {f"{arch.attention_name}.{p}": m for p, m in attention_plan.masks.items()}
        prefixed.update({f"{arch.mlp_name}.{p}": m for p, m in mlp_plan.masks.items()})
        weights = {f"{arch.attention_name}.{p}": w for p, w in attention_plan.weights.items()}
        weights.update({f"{arch.mlp_name}.{p}": w for p, w in mlp_plan.weights.items()})
        return MaskLayerPlan(prefixed, weights)
