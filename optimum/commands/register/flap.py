"""Registers ``optimum-cli flap prune|eval|benchmark`` with optimum's command line.

optimum-cli imports every file of the ``optimum.commands.register`` namespace at start-up, for every
command it runs (``optimum-cli export onnx`` included), so this file imports only optimum's light base
classes and nothing of ``optimum_flap`` (whose command line is light too, but is only needed when
``flap`` runs): the ``flap`` command takes the rest of the command line verbatim and hands it, when it runs, to
``optimum_flap.commands.cli.main``, the same parser and code as the ``optimum-flap`` console script.
This directory must not get an ``__init__.py`` (PEP 420 namespace, shared with other optimum packages).
"""

from __future__ import annotations

import argparse
from typing import Any

from optimum.commands.base import BaseOptimumCLICommand, CommandInfo

PROG = "optimum-cli flap"


class _FullHelp(argparse.Action):
    """``optimum-cli flap --help`` prints the real parser's help, built only when asked for."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        from optimum_flap.commands.cli import build_parser

        build_parser(PROG).print_help()
        parser.exit()


class FlapCommand(BaseOptimumCLICommand):
    """``optimum-cli flap ...``: structured pruning with optimum-flap."""

    COMMAND = CommandInfo(name="flap", help="Structured pruning of LLMs with optimum-flap (prune, eval, benchmark).")

    @staticmethod
    def parse_args(parser: argparse.ArgumentParser) -> None:
        # replace argparse's own -h (which would only describe the pass-through argument) by the full help
        options = parser.add_argument_group("options", conflict_handler="resolve")
        options.add_argument("-h", "--help", action=_FullHelp, nargs=0, help="show the optimum-flap help and exit")
        parser.add_argument("flap_args", nargs=argparse.REMAINDER, metavar="{prune,eval,benchmark} ...",
                            help="an optimum-flap command and its options (see --help)")

    def run(self) -> None:
        from optimum_flap.commands.cli import main

        raise SystemExit(main(self.args.flap_args, prog=PROG))


_handed_out = False


def __getattr__(name: str) -> Any:
    """``REGISTER_COMMANDS``, handed out once per process.

    optimum-cli reads ``REGISTER_COMMANDS`` once per directory of the namespace that holds a
    ``flap.py``, but imports the module only once. With two copies on the path (an editable checkout
    plus an installed wheel, or a ``--target`` copy on PYTHONPATH) a plain list would register ``flap``
    twice, and argparse's "conflicting subparser" error would then break every optimum-cli command.
    """
    global _handed_out
    if name == "REGISTER_COMMANDS":
        commands = [] if _handed_out else [FlapCommand]
        _handed_out = True
        return commands
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
