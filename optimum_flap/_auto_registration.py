"""`import optimum_flap` registers the pruned model classes with transformers' Auto classes, without importing torch.

Registering needs transformers' model classes (and so torch: seconds). Importing the package must stay
instant (``optimum-flap --help``), yet ``import optimum_flap`` followed by
``AutoModelForCausalLM.from_pretrained(pruned_dir)`` must work, as the model cards of saved
checkpoints say. So the registration runs now if transformers is already imported, and otherwise
once transformers and `optimum_flap.models` can both be imported, through an import hook: right
after ``import transformers``, or right after `optimum_flap.models` when that is what imports
transformers (registering then, in the middle of its own import, would fail).
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys
from typing import Any

_MODELS = "optimum_flap.models"
_registered = False


def _register() -> None:
    global _registered
    if _registered:
        return
    _registered = True
    sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, _RegisterAfterImport)]
    from .models import register_auto_classes

    register_auto_classes()


class _RegisterAfterImport(importlib.abc.MetaPathFinder):
    """Finds nothing itself: it wraps the loaders of transformers and of `optimum_flap.models` so that
    `_register` runs once they have loaded."""

    def __init__(self) -> None:
        self._resolving: set[str] = set()

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        if fullname not in ("transformers", _MODELS) or fullname in self._resolving:
            return None
        self._resolving.add(fullname)
        try:
            spec = importlib.util.find_spec(fullname)
        finally:
            self._resolving.discard(fullname)
        if spec is None or spec.loader is None:
            return spec
        exec_module = spec.loader.exec_module

        def exec_then_register(module: Any) -> None:
            exec_module(module)
            if fullname == _MODELS or _MODELS not in sys.modules:  # else the models module is still importing
                _register()

        spec.loader.exec_module = exec_then_register  # type: ignore[method-assign]
        return spec


def register_when_transformers_loads() -> None:
    if "transformers" in sys.modules:
        _register()
    elif not any(isinstance(finder, _RegisterAfterImport) for finder in sys.meta_path):
        sys.meta_path.insert(0, _RegisterAfterImport())
