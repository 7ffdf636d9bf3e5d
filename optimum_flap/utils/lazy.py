"""Public names imported on first access, so importing a package (and the CLI's --help) costs no torch."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from typing import Any


def lazy_exports(package: str, exports: dict[str, str]) -> Callable[[str], Any]:
    """A module `__getattr__` (PEP 562) importing each name of `exports` from its submodule when first read.

    `exports` maps a public name to the module defining it, relative to `package` (e.g. `".pruner"`).
    The value is then stored on the package, so later reads are plain attribute reads.
    """

    def __getattr__(name: str) -> Any:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(exports[name], package), name)
        setattr(sys.modules[package], name, value)
        return value

    return __getattr__
