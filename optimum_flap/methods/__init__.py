"""Pruning methods, one sub-package each, registered by name with their options (see `registry`).

Importing this package registers the built-in methods and imports no torch: a method's computations
are imported when a run asks for them.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .registry import get_method_class, get_registered_method, register_method, registered_methods

#: the method folders; importing one registers its methods (in this order: the order of ``--help``)
BUILTIN_METHOD_PACKAGES = ("flap", "cfsp")
for _package in BUILTIN_METHOD_PACKAGES:
    importlib.import_module(f".{_package}", __name__)


@dataclass(frozen=True)
class PruningMethod:
    """How the pruner drives one method: the functions of its implementation module."""

    prune: Callable[..., Any]
    needs_calibration: Callable[[Any], bool]
    #: refuses, from the model's shapes alone, a recipe that could only fail after calibration
    check_config: Callable[[Any, Any], None]


def get_method(name: str) -> PruningMethod:
    """The functions of method `name`'s implementation module (imported now)."""
    module = importlib.import_module(get_registered_method(name).implementation.split(":")[0])
    return PruningMethod(module.prune_structured, module.needs_calibration, module.check_config)


__all__ = ["PruningMethod", "get_method", "get_method_class", "register_method", "registered_methods"]
