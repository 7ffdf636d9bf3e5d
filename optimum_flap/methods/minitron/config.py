"""Options of Minitron-style stock-shaped pruning (Muralidharan et al. 2024; Sreenivas et al. 2024).

`minitron_axes` and `target_shape` take Python values (a tuple of axis names, a dict of sizes) and
are stored as strings (`"hidden_size,heads,ffn"`, `"hidden_size=512,num_hidden_layers=26"`), the form
the command line and a saved recipe use; `axes` and `shape` read them back.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..options import MethodOptions, option

#: what can shrink: the residual width, whole key/value groups (with their query heads), the MLP width, layers
AXES = ("hidden_size", "heads", "ffn", "depth")
WIDTH_AXES = ("hidden_size", "heads", "ffn")
#: the global config sizes `target_shape` may set
SHAPE_KEYS = ("hidden_size", "num_key_value_heads", "num_attention_heads", "intermediate_size", "num_hidden_layers")
AGGREGATIONS = ("mean", "rms")
DEPTH_IMPORTANCES = ("loss", "block")


def _join_axes(value: Any) -> Any:
    if isinstance(value, (tuple, list)):
        return ",".join(str(v) for v in value)
    return value


def _join_shape(value: Any) -> Any:
    if isinstance(value, dict):
        return ",".join(f"{k}={v}" for k, v in value.items())
    return value


@dataclass
class MinitronOptions(MethodOptions):
    """Uniform width and depth pruning by activation importance, to the family's stock shape."""

    minitron_axes: str = option("hidden_size,heads,ffn", "axes to prune, comma-separated: any of hidden_size, "
                                "heads, ffn, depth (default: the width axes)")
    target_shape: str | None = option(None, "explicit sizes instead of pruning_ratio, e.g. "
                                      "hidden_size=512,intermediate_size=1280,num_hidden_layers=26")
    minitron_aggregation: str = option("rms", "how a unit's per-token magnitudes are aggregated over batch and "
                                       "sequence: root mean square (rms, measured best on SmolLM2) or mean",
                                       choices=AGGREGATIONS)
    depth_importance: str = option("loss", "layer importance: loss increase when the layer is removed (loss) or "
                                   "1 - cos(input, output) of the block (block, no extra forward)",
                                   choices=DEPTH_IMPORTANCES)
    round_to: int | None = option(8, "make kept hidden and MLP widths multiples of this (the hidden size also a "
                                  "multiple of the head count); unset keeps exact widths", minimum=1)
    max_width_pruning: float = option(0.5, "largest fraction of any width axis the shape search may remove",
                                      minimum=0.0)
    max_depth_pruning: float = option(0.5, "largest fraction of the layers the shape search may remove",
                                      minimum=0.0)
    search_candidates: int = option(8, "candidate shapes the search prunes and scores (spread over those that "
                                    "hit pruning_ratio within 1%)", minimum=1)
    search_samples: int = option(8, "calibration windows held out to score the candidates (KL to the dense "
                                 "model)", minimum=1)

    def __post_init__(self) -> None:
        self.minitron_axes = _join_axes(self.minitron_axes)
        self.target_shape = _join_shape(self.target_shape)
        super().__post_init__()

    def check(self) -> None:
        unknown = [axis for axis in self.axes if axis not in AXES]
        if unknown or not self.axes or len(set(self.axes)) != len(self.axes):
            raise ValueError(f"FlapConfig: invalid minitron_axes={self.minitron_axes!r}; allowed: distinct names "
                             f"among {', '.join(AXES)}.")
        if self.target_shape is not None:
            self.shape  # noqa: B018 - parses and checks
        for name in ("max_width_pruning", "max_depth_pruning"):
            if getattr(self, name) >= 1:
                raise ValueError(f"FlapConfig: invalid {name}={getattr(self, name)!r}; allowed: a fraction in (0, 1).")

    @property
    def axes(self) -> tuple[str, ...]:
        return tuple(a.strip() for a in self.minitron_axes.split(",") if a.strip())

    @property
    def shape(self) -> dict[str, int] | None:
        """`target_shape` as a dict of config sizes, or None."""
        if self.target_shape is None:
            return None
        sizes: dict[str, int] = {}
        for item in self.target_shape.split(","):
            key, _, value = item.partition("=")
            key = key.strip()
            if key not in SHAPE_KEYS or not value.strip().isdigit() or int(value) < 1 or key in sizes:
                raise ValueError(f"FlapConfig: invalid target_shape={self.target_shape!r}; allowed: distinct "
                                 f"key=positive int items, keys among {', '.join(SHAPE_KEYS)}.")
            sizes[key] = int(value)
        return sizes
