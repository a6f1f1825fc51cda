"""The ``commonforge`` command.

Wiring only: argparse parses, a command function calls the library, and :func:`main` (here,
and nowhere else) turns a :class:`~commonforge.errors.ForgeError` into a message and an exit
code (0 ok, 1 verification failed, 2 bad input, 3 other failures).

Each ``*_cmds`` module owns its commands: ``add_parsers(sub)`` adds them with
:func:`commonforge.cli.command.add_command`, next to the functions that run them. A new
module joins the CLI by being listed in :func:`build_parser`. Those modules import their
libraries (torch, rich, the registry ...) inside the command functions, so building the
parser, which every run does, ``--help`` included, stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from commonforge import __version__


def build_parser() -> argparse.ArgumentParser:
    from commonforge.cli import (
        build_cmds,
        card_cmds,
        check_cmds,
        contrib_cmds,
        eval_cmds,
        explore_cmds,
        export_cmds,
        finetune_cmds,
        log_cmds,
        registry_cmds,
        serve_cmds,
        sharing_cmds,
        trust_cmds,
    )

    parser = argparse.ArgumentParser(
        prog="commonforge",
        description=(
            "commonforge: a community model forge. Models are built in the open from pinned, "
            "openly licensed data by a DVC pipeline, rebuilt bit for bit, evaluated with lm-eval, "
            "documented by generated cards and served locally. Everything runs offline unless you "
            "ask for a fetch, a peer or a remote."
        ),
        epilog="Refs look like dataset/literary-pd@1, recipe/forge-small@1, model/forge-small@1.0.0. "
        "Exit codes: 0 ok, 1 verification failed, 2 bad input, 3 other failure.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"commonforge {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log more detail to stderr")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    # This order is the order `commonforge --help` lists the commands in.
    for module in (registry_cmds, contrib_cmds, check_cmds, trust_cmds, log_cmds, sharing_cmds, build_cmds, finetune_cmds,
                   eval_cmds, card_cmds, serve_cmds, export_cmds, explore_cmds):
        module.add_parsers(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from commonforge import settings

    settings.apply_privacy()
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    from commonforge.errors import ForgeError

    module_name, func_name = args._target
    try:
        func = getattr(importlib.import_module(module_name), func_name)
        return int(func(args) or 0)
    except ForgeError as err:
        print(f"commonforge {args.command}: error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print(f"commonforge {args.command}: interrupted; nothing half-written was kept", file=sys.stderr)
        return 130
