"""Pruning methods, one sub-package each, as hook objects driven by the calibration pipeline.

A method (`base.PruningMethod`) observes each decoder block through the pipeline's hooks and returns
a `PruningPlan`; it never loops over layers nor edits the model (see `optimum_flap.engine`).
"""

from __future__ import annotations

from .base import PruningMethod
from .cfsp.method import CfspMethod
from .flap.method import FlapFamilyMethod

METHOD_CLASSES: dict[str, type[PruningMethod]] = {
    "flap": FlapFamilyMethod,
    "wanda-sp": FlapFamilyMethod,
    "magnitude-sp": FlapFamilyMethod,
    "cfsp": CfspMethod,
}


def get_method_class(name: str) -> type[PruningMethod]:
    """The method class serving `config.method == name`."""
    if name not in METHOD_CLASSES:
        raise ValueError(f"Unknown pruning method {name!r}; allowed: {', '.join(METHOD_CLASSES)}.")
    return METHOD_CLASSES[name]


__all__ = ["METHOD_CLASSES", "PruningMethod", "get_method_class"]
