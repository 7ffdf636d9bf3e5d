"""Pruning methods, one sub-package each, registered by name with their options (see `registry`).

A method (`base.PruningMethod`) is a hook object driven by the calibration pipeline: it observes each
decoder block and returns a `PruningPlan`; it never loops over layers nor edits the model (see
`optimum_flap.engine`). Importing this package registers the built-in methods and imports no torch:
a method's implementation class is imported when a run asks for it (`get_method_class`).
"""

from __future__ import annotations

import importlib

from .registry import get_method_class, get_registered_method, register_method, registered_methods

#: the method folders; importing one registers its methods (in this order: the order of ``--help``)
BUILTIN_METHOD_PACKAGES = ("flap", "cfsp", "sparse", "barber", "minitron")
for _package in BUILTIN_METHOD_PACKAGES:
    importlib.import_module(f".{_package}", __name__)

__all__ = ["get_method_class", "get_registered_method", "register_method", "registered_methods"]
