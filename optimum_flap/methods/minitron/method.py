"""Minitron's pruning as a one-shot method: one dense calibration pass, then a stock shape chosen in `finish`.

Observers collect the activation importances of every layer (`importance.py`); `finish` picks the
shape (`target_shape`, or the best candidate of the search for `pruning_ratio`, `shapes.py` and
`search.py`) and returns one plan per layer with the same head groups count, MLP width and residual
channels in every layer, plus the model-wide cuts (embeddings, final norm, LM head, layers) that the
pruner applies after the layers' plans.
"""

from __future__ import annotations

import logging
from typing import Any

from torch import nn

from ...accounting import biased_roles
from ...architectures import GATE, QUERY, UnsupportedArchitectureError, attention_geometry
from ...methods.cfsp.importance import BlockImportance
from ...plan import PruningPlan
from ..base import PruningMethod
from ..finite import check_finite_block
from .importance import LayerImportance, MagnitudeSums, group_norms
from .search import kl_to_dense, log_probs, loss_increases, plans_for, pruned_copy
from .shapes import ShapeSpace, StockShape, candidate_shapes, spread

logger = logging.getLogger(__name__)

#: the config.json record of how the shape was chosen
SEARCH_KEY = "minitron_search"


def in_memory(model: nn.Module) -> bool:
    """Whether every weight is in memory (not streamed from a checkpoint, not offloaded by accelerate)."""
    return not getattr(model, "hf_device_map", None) and not any(p.is_meta for p in model.parameters())


class MinitronMethod(PruningMethod):
    """Uniform width and depth pruning by activation importance (Muralidharan et al. 2024)."""

    name = "minitron"
    supports_distributed = True

    def __init__(self, config: Any, architecture: Any) -> None:
        super().__init__(config, architecture)
        #: the parsed options (`axes`, `shape` are properties of the options object, not of FlapConfig)
        self.options = config.method_options
        self._sums: dict[str, MagnitudeSums] = {}
        self._block: BlockImportance | None = None
        self.importances: list[LayerImportance] = []
        #: the dense model's layer count (set by `check`)
        self._dense_layers: int | None = None
        #: every candidate shape scored, with its ratio and KL (filled by `finish`)
        self.search: list[dict[str, Any]] = []

    # ------------------------------------------------------------------ what the run needs

    def _changes_depth(self) -> bool:
        shape = self.options.shape
        if shape is not None:
            return shape.get("num_hidden_layers", self._dense_layers) != self._dense_layers
        return "depth" in self.options.axes

    def _needs_held_out(self) -> bool:
        searches = self.options.shape is None
        return searches or (self._changes_depth() and self.config.depth_importance == "loss")

    def held_out_samples(self) -> int:
        return self.config.search_samples if self._needs_held_out() else 0

    def space(self, model: nn.Module) -> ShapeSpace:
        heads, kv_heads, head_dim = attention_geometry(model.config)
        arch = self.architecture
        layers = arch.decoder_layers(model)
        widths = {(arch.head_groups(layer), arch.projections(layer)[GATE].out_features) for layer in layers}
        if len(widths) != 1:
            raise ValueError("minitron prunes a model whose layers all have the same widths; this one has "
                             f"(head groups, MLP width) {sorted(widths)} across its layers.")
        groups, inter = widths.pop()
        dense = StockShape(int(model.config.hidden_size), groups, inter, len(layers))
        return ShapeSpace(dense, heads // kv_heads, head_dim, frozenset(biased_roles(model, arch)))

    def check(self, model: nn.Module) -> None:
        """Refuse an axis the family cannot prune, a bad `target_shape`, or depth on a dispatched model."""
        arch = self.architecture
        space = self.space(model)
        self._dense_layers = space.dense.num_hidden_layers
        shape = self.options.shape
        heads_change = ("heads" in self.options.axes if shape is None else
                        any(k in shape for k in ("num_key_value_heads", "num_attention_heads"))
                        and space.from_sizes(shape).num_key_value_heads != space.dense.num_key_value_heads)
        if heads_change and arch.head_removal_refused:
            raise UnsupportedArchitectureError(
                f"{arch.model_type}: minitron cannot prune the heads axis because {arch.head_removal_refused}. "
                "Use minitron_axes=hidden_size,ffn (or depth), or a target_shape that keeps the heads."
            )
        if shape is not None:
            space.from_sizes(shape)  # raises on a size the stock config cannot take
        if getattr(model, "hf_device_map", None) and self._changes_depth():
            raise ValueError("minitron cannot remove layers from a model dispatched by accelerate (device_map); "
                             "load it in memory, or stream it with offload_folder=... and no device_map.")
        wants_scores = self.options.shape is None or (self._changes_depth() and self.config.depth_importance == "loss")
        if wants_scores and not in_memory(model):  # a guessed shape would be another answer than in memory
            need = ("the shape search scores candidate models by KL to the dense one" if self.options.shape is None
                    else "depth_importance='loss' measures each layer's removal on the whole model")
            raise ValueError(
                f"minitron: {need}, which needs the whole model in memory; this one is streamed or offloaded. Give "
                "target_shape=... (e.g. the shape an in-memory search chose, recorded as minitron_search in its "
                "config.json) and, when layers go, depth_importance='block'."
            )

    # ------------------------------------------------------------------ calibration

    def observers(self, block: Any) -> dict[str, Any]:
        arch = self.architecture
        group_size, head_dim = arch.head_geometry(block.module)
        width = group_size * head_dim
        self._sums = {name: MagnitudeSums() for name in ("groups", "channels", "attention_in", "mlp_in")}
        self._block = BlockImportance("cosine")  # ShortGPT's block importance, 1 - cos(x, y)
        return {
            arch.attention_output_path(): lambda x: self._sums["groups"].update(group_norms(x, width)),
            arch.mlp_output_path(): self._sums["channels"].update,
            arch.path(QUERY): self._sums["attention_in"].update,
            arch.path(GATE): self._sums["mlp_in"].update,
        }

    def on_block_output(self, block: Any, inputs: Any, outputs: Any) -> None:
        self._block.update(inputs, outputs)

    def all_reduce(self) -> None:
        for sums in self._sums.values():
            sums.all_reduce()
        self._block.all_reduce()

    def block_done(self, block: Any) -> None:
        aggregation = self.config.minitron_aggregation
        value = {name: sums.aggregate(aggregation) for name, sums in self._sums.items()}
        importance = LayerImportance(groups=value["groups"], channels=value["channels"],
                                     hidden=value["attention_in"] + value["mlp_in"], block=self._block.value)
        arch = self.architecture
        check_finite_block(block, arch.layers_path, {}, {
            arch.attention_output_path(): importance.groups, arch.mlp_output_path(): importance.channels,
            arch.path(QUERY): importance.hidden,
        })
        self.importances.append(importance)
        self._sums, self._block = {}, None

    # ------------------------------------------------------------------ the decision

    def _layer_scores(self, model: nn.Module) -> list[float]:
        if self._changes_depth() and self.config.depth_importance == "loss":
            return loss_increases(model, self.architecture, self.held_out_ids, self.config.batch_size)
        return [imp.block for imp in self.importances]

    def finish(self, model: nn.Module) -> PruningPlan:
        config, arch = self.config, self.architecture
        space = self.space(model)
        layer_scores = self._layer_scores(model)
        if self.options.shape is not None:
            candidates = [space.from_sizes(self.options.shape)]
        else:
            found, hit = candidate_shapes(space, self.options.axes, config.pruning_ratio, config.round_to,
                                          config.max_width_pruning, config.max_depth_pruning)
            if not found:
                raise ValueError(f"minitron: no shape within the bounds (max_width_pruning="
                                 f"{config.max_width_pruning}, max_depth_pruning={config.max_depth_pruning}) on "
                                 f"axes {', '.join(self.options.axes)} removes anything.")
            if not hit:
                logger.warning("minitron: no shape on axes %s removes pruning_ratio=%.2f within 1%%; keeping the "
                               "closest (%.2f%%).", ",".join(self.options.axes), config.pruning_ratio,
                               100 * space.ratio(found[0]))
            candidates = spread(found, config.search_candidates)
        dense_log_probs = None
        if self.held_out_ids is not None and self.options.shape is None:
            dense_log_probs = log_probs(model, self.held_out_ids, config.batch_size)
        best, best_kl = None, float("inf")
        self.search = []
        for shape in candidates:
            plans, model_shape = plans_for(self.importances, shape, space.dense, layer_scores)
            entry: dict[str, Any] = {**shape.to_dict(), "ratio": round(space.ratio(shape), 6)}
            if dense_log_probs is not None:
                candidate = pruned_copy(model, arch, plans, model_shape)
                entry["parameters"] = sum(p.numel() for p in candidate.parameters())
                entry["kl"] = kl_to_dense(candidate, self.held_out_ids, dense_log_probs, config.batch_size)
                del candidate
            self.search.append(entry)
            score = entry.get("kl", 0.0)
            if best is None or score < best_kl:
                best, best_kl = (plans, model_shape, entry), score
        plans, model_shape, chosen = best
        chosen["chosen"] = True
        model_shape.search = self.search
        logger.info("minitron: shape %s (removes %.2f%% of decoder linear parameters)%s",
                    {k: chosen[k] for k in StockShape.__dataclass_fields__}, 100 * chosen["ratio"],
                    f", KL {chosen['kl']:.4f} to the dense model" if "kl" in chosen else "")
        records = {SEARCH_KEY: {"depth_importance": self.config.depth_importance if self._changes_depth() else None,
                                "layer_scores": [round(float(s), 6) for s in layer_scores]
                                if self._changes_depth() else None,
                                "candidates": self.search}}
        return PruningPlan(kind="structured", layers=plans, config_records=records, shape=model_shape)


__all__ = ["SEARCH_KEY", "MinitronMethod", "in_memory"]
