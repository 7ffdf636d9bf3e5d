"""Command line of optimum-flap: ``optimum-flap prune|eval|benchmark`` and ``optimum-cli flap ...``.

The parser lives in :mod:`optimum_flap.commands.cli`; optimum's registration file
(``optimum/commands/register/flap.py``) forwards to it, so both entry points share one definition.
Nothing is imported here eagerly, so that ``python -m optimum_flap.commands.cli`` runs the module
once (runpy warns when ``__init__`` has already imported the module it is asked to run).
"""

from __future__ import annotations

from typing import Any

__all__ = ["CLIError", "build_parser", "main"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from . import cli

        return getattr(cli, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
