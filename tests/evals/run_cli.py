"""``python -m tests.evals.run_cli ARGS``: ``commonforge eval ARGS`` before commands.py registers it.

Once ``commonforge.cli.commands`` wires in :func:`commonforge.cli.eval_cmds.add_parsers`, this
runs the real CLI; until then it builds the same subcommand on a local parser and handles
errors exactly as ``commonforge.cli.main`` does (message on stderr, exit code by error class).
"""

from __future__ import annotations

import argparse
import importlib
import sys


def main(argv: list[str]) -> int:
    from commonforge import cli, settings
    from commonforge.errors import ForgeError

    registered = cli.build_parser()._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    if "eval" in registered:
        return cli.main(["eval", *argv])
    settings.apply_privacy()
    parser = argparse.ArgumentParser(prog="commonforge")
    sub = parser.add_subparsers(dest="command")
    from commonforge.cli.eval_cmds import add_parsers

    add_parsers(sub)
    args = parser.parse_args(["eval", *argv])
    module_name, func_name = args._target
    try:
        return int(getattr(importlib.import_module(module_name), func_name)(args) or 0)
    except ForgeError as err:
        print(f"commonforge {args.command}: error: {err}", file=sys.stderr)
        return err.exit_code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
