"""How a ``*_cmds`` module adds a subcommand: :func:`add_command`, the one way to register one.

A command function takes the parsed arguments and returns an exit code (``None`` means 0). It
reports failure by raising a :class:`~commonforge.errors.ForgeError`; only
:func:`commonforge.cli.main` turns that into a message and an exit code, so every command
fails the same way.

Parsers are built for every ``commonforge`` run, ``--help`` included, so a ``*_cmds`` module
imports only the standard library at module level and the libraries it drives (torch, rich,
the registry, ...) inside its command functions.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

Command = Callable[[argparse.Namespace], "int | None"]


def add_command(sub: argparse._SubParsersAction, name: str, run: Command, help: str,
                description: str | None = None) -> argparse.ArgumentParser:
    """Add subcommand ``name``, run by ``run``; returns its parser for the arguments.

    ``help`` is the one line ``commonforge --help`` shows; ``description`` (default: ``help``)
    heads ``commonforge NAME --help``, with its line breaks kept.
    """
    parser = sub.add_parser(name, help=help, description=description or help,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    # (module, function name): what `main` looks up and runs, and what tests read to see which
    # function a command runs.
    parser.set_defaults(_target=(run.__module__, run.__name__))
    return parser
