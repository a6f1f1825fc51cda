"""Argument parsers of every subcommand. No heavy imports here: ``--help`` must stay fast.

Each subcommand names the module and function that runs it (``_target``); the function
takes the parsed arguments and returns an exit code.
"""

from __future__ import annotations

import argparse


def _cmd(sub: argparse._SubParsersAction, name: str, target: str, help: str, description: str | None = None):
    module, func = target.rsplit(":", 1)
    p = sub.add_parser(
        name,
        help=help,
        description=description or help,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.set_defaults(_target=(f"commonforge.cli.{module}", func))
    return p


def add_all(sub: argparse._SubParsersAction) -> None:
    # --- the registry --------------------------------------------------------------------
    p = _cmd(sub, "list", "registry_cmds:cmd_list", "list registry entries (datasets, recipes, models)")
    p.add_argument("kind", nargs="?", choices=["dataset", "recipe", "model", "datasets", "recipes", "models"],
                   help="only this kind")

    p = _cmd(sub, "show", "registry_cmds:cmd_show", "show one entry: what it is, where it came from, digests, status",
             "Show one entry. REF is kind/name@version; a model ref may leave out the version "
             "(newest published, else newest draft), and a bare name means a model.")
    p.add_argument("ref", metavar="REF", help="e.g. model/forge-small@1.0.0, recipe/forge-tiny@1, forge-small")

    _cmd(sub, "validate", "registry_cmds:cmd_validate",
         "validate every registry entry and every cross-reference (exit 2 on problems)")

    p = _cmd(sub, "verify", "registry_cmds:cmd_verify",
             "re-hash every artifact of a release in the local store against its manifest (exit 1 on mismatch)")
    p.add_argument("ref", metavar="MODEL_REF", help="e.g. model/forge-small@1.0.0 or forge-small")
