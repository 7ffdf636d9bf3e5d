"""Stock shapes: the four global sizes a uniform model has, their parameter count, and the search space.

A shape's decoder linear parameters come from `accounting.shape_parameters` (the one count), times
its layers, so `pruning_ratio` means here what it means for every method. The search space follows
ModelOpt's Minitron search: every combination of the pruned axes within per-axis bounds, widths on
`round_to` multiples (the hidden size also on a multiple of the query-head count, which transformers'
configs require), with the MLP width solved for the ratio when `ffn` is an axis; a shape is a
candidate when it removes `pruning_ratio` within `TOLERANCE`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass

from ...accounting import shape_parameters

#: a candidate's ratio may differ from `pruning_ratio` by at most this much
TOLERANCE = 0.01


@dataclass(frozen=True)
class StockShape:
    """The global sizes of a model whose layers all have the same widths."""

    hidden_size: int
    num_key_value_heads: int
    intermediate_size: int
    num_hidden_layers: int

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass(frozen=True)
class ShapeSpace:
    """What the parameter count of a shape depends on, besides the shape: the dense model's fixed facts."""

    dense: StockShape
    group_size: int
    head_dim: int
    #: roles whose projection carries a bias
    biased: frozenset[str]

    def decoder_parameters(self, shape: StockShape) -> int:
        """Weights and biases of every decoder projection of a model of this shape."""
        per_layer = shape_parameters(shape.hidden_size, self.head_dim, shape.num_key_value_heads * self.group_size,
                                     shape.num_key_value_heads, shape.intermediate_size, self.biased)
        return shape.num_hidden_layers * per_layer

    def ratio(self, shape: StockShape) -> float:
        """Fraction of the dense decoder linear parameters a shape removes."""
        return 1.0 - self.decoder_parameters(shape) / self.decoder_parameters(self.dense)

    def check(self, shape: StockShape) -> None:
        """Refuse a shape larger than the dense model, empty, or one the stock config rejects."""
        for name, value in shape.to_dict().items():
            dense = getattr(self.dense, name)
            if not 1 <= value <= dense:
                raise ValueError(f"target_shape: {name}={value} is outside [1, {dense}] (the dense model's size).")
        heads = shape.num_key_value_heads * self.group_size
        if shape.hidden_size % heads:
            raise ValueError(f"target_shape: hidden_size={shape.hidden_size} is not a multiple of the "
                             f"{heads} attention heads; the stock config requires hidden_size % heads == 0.")

    def from_sizes(self, sizes: dict[str, int]) -> StockShape:
        """A shape from `target_shape`'s config sizes; unnamed sizes stay dense."""
        sizes = dict(sizes)
        heads = sizes.pop("num_attention_heads", None)
        if heads is not None:
            kv = sizes.get("num_key_value_heads", heads // self.group_size)
            if heads != kv * self.group_size:
                raise ValueError(f"target_shape: num_attention_heads={heads} is not {self.group_size} query heads "
                                 f"per key/value head (the dense ratio) for num_key_value_heads={kv}.")
            sizes["num_key_value_heads"] = kv
        shape = StockShape(**{**self.dense.to_dict(), **sizes})
        self.check(shape)
        return shape


def _range(dense: int, max_fraction: float, step: int, on: bool, extra_rule=lambda value: True) -> list[int]:
    """Sizes from the dense one down to dense * (1 - max_fraction), on multiples of `step` (dense kept)."""
    if not on:
        return [dense]
    low = max(1, math.ceil(dense * (1.0 - max_fraction)))
    values = {dense} | {v for v in range(step * math.ceil(low / step), dense + 1, step) if v >= 1}
    return sorted((v for v in values if extra_rule(v)), reverse=True)


def candidate_shapes(space: ShapeSpace, axes: Iterable[str], ratio: float, round_to: int | None,
                     max_width: float, max_depth: float) -> tuple[list[StockShape], bool]:
    """Every shape within the bounds that removes `ratio` within `TOLERANCE`, and whether any did.

    When none does (a coarse axis such as depth alone), the shapes closest to the ratio are returned
    with False.
    """
    axes, dense, step = set(axes), space.dense, round_to or 1
    found: dict[StockShape, float] = {}
    for kv in _range(dense.num_key_value_heads, max_width, 1, "heads" in axes):
        heads = kv * space.group_size
        hidden_step = math.lcm(step, heads) if "hidden_size" in axes else 1
        for hidden in _range(dense.hidden_size, max_width, hidden_step, "hidden_size" in axes,
                             lambda h, heads=heads: h % heads == 0):
            for layers in _range(dense.num_hidden_layers, max_depth, 1, "depth" in axes):
                for inter in _ffn_widths(space, hidden, kv, layers, ratio, step, max_width, "ffn" in axes):
                    shape = StockShape(hidden, kv, inter, layers)
                    if shape != dense:
                        found[shape] = abs(space.ratio(shape) - ratio)
    hits = [shape for shape, error in found.items() if error <= TOLERANCE]
    if hits:
        return hits, True
    if not found:
        return [], False
    best = min(found.values())
    return [shape for shape, error in found.items() if error == best], False


def _ffn_widths(space: ShapeSpace, hidden: int, kv: int, layers: int, ratio: float, step: int, max_width: float,
                on: bool) -> list[int]:
    """The MLP widths (multiples of `step`, within bounds) nearest to the one that makes the ratio exact."""
    dense = space.dense.intermediate_size
    if not on:
        return [dense]
    target = (1.0 - ratio) * space.decoder_parameters(space.dense)
    fixed = StockShape(hidden, kv, 0, layers)
    per_channel = space.decoder_parameters(StockShape(hidden, kv, 1, layers)) - space.decoder_parameters(fixed)
    exact = (target - space.decoder_parameters(fixed)) / per_channel
    low = max(step, step * math.ceil(dense * (1.0 - max_width) / step))
    widths = {step * math.floor(exact / step), step * math.ceil(exact / step)}
    return sorted({w for w in widths if low <= w <= dense} | ({dense} if exact >= dense else set()))


def spread(shapes: list[StockShape], count: int) -> list[StockShape]:
    """`count` shapes spread evenly over `shapes` ordered by hidden size, heads, depth, MLP width."""
    ordered = sorted(shapes, key=lambda s: (s.hidden_size, s.num_key_value_heads, s.num_hidden_layers,
                                            s.intermediate_size))
    if len(ordered) <= count:
        return ordered
    if count == 1:
        return [ordered[len(ordered) // 2]]
    return [ordered[round(i * (len(ordered) - 1) / (count - 1))] for i in range(count)]
