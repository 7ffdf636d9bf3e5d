"""Pruning methods, one sub-package each, behind one calling convention.

A method receives the model, its architecture adapter, the config and a `LayerwiseRunner` over the
calibration batch (None when it declares it needs no data), prunes the model in place and returns
each layer's plan; the pruner then records the layout and the report.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from ..architectures import DecoderArchitecture
from ..configuration import FlapConfig
from ..engine.layerwise import LayerwiseRunner
from ..plan import LayerPlan
from .cfsp import method as cfsp
from .flap import method as flap


@dataclass(frozen=True)
class PruningMethod:
    """How the pruner drives one method."""

    prune: Callable[[nn.Module, DecoderArchitecture, FlapConfig, LayerwiseRunner | None, bool], list[LayerPlan]]
    needs_calibration: Callable[[FlapConfig], bool]
    #: refuses, from the model's shapes alone, a recipe that could only fail after calibration
    check_config: Callable[[FlapConfig, nn.Module], None] = lambda config, model: None


_FLAP_FAMILY = PruningMethod(
    prune=flap.prune_structured, needs_calibration=flap.needs_calibration, check_config=flap.check_config
)

METHODS: dict[str, PruningMethod] = {
    "flap": _FLAP_FAMILY,
    "wanda-sp": _FLAP_FAMILY,
    "magnitude-sp": _FLAP_FAMILY,
    "cfsp": PruningMethod(
        prune=cfsp.prune_structured, needs_calibration=cfsp.needs_calibration, check_config=cfsp.check_config
    ),
}


def get_method(name: str) -> PruningMethod:
    return METHODS[name]
