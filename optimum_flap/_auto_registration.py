"""`import optimum_flap` registers the pruned model classes with transformers' Auto classes, without importing torch.

Registering needs transformers' model classes (and so torch: seconds). Importing the package must stay
instant (``optimum-flap --help``), yet ``import optimum_flap`` followed by
``AutoModelForCausalLM.from_pretrained(pruned_dir)`` must work, as model cards of saved checkpoints
say. So the registration runs now if transformers is already imported, and otherwise right after
the first ``import transformers``, through a one-shot import hook.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys
from typing import Any


def _register() -> None:
    from .models import register_auto_classes

    register_auto_classes()


class _RegisterAfterTransformers(importlib.abc.MetaPathFinder):
    """Finds nothing itself: it wraps transformers' loader so that `_register` runs once it has loaded."""

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        if fullname != "transformers":
            return None
        sys.meta_path.remove(self)  # one shot; also keeps the lookup below from finding this finder again
        spec = importlib.util.find_spec(fullname)
        if spec is None or spec.loader is None:
            return spec
        exec_module = spec.loader.exec_module

        def exec_then_register(module: Any) -> None:
            exec_module(module)
            _register()

        spec.loader.exec_module = exec_then_register  # type: ignore[method-assign]
        return spec


def register_when_transformers_loads() -> None:
    if "transformers" in sys.modules:
        _register()
    elif not any(isinstance(finder, _RegisterAfterTransformers) for finder in sys.meta_path):
        sys.meta_path.insert(0, _RegisterAfterTransformers())
