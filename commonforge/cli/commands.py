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

    # --- the build ----------------------------------------------------------------------
    p = _cmd(sub, "build", "build_cmds:cmd_build", "build a recipe with `dvc repro`, then release it",
             "Run the DVC pipeline for one recipe (only the data stages it uses), then release it: the "
             "build manifest and provenance go into registry/entries/models, the artifacts into the store "
             "and the DVC remote. If the release already exists, this is a rebuild: the digests are "
             "compared and the store filled; a different result is never written under the same version.")
    p.add_argument("recipe", nargs="?", default="forge-small", help="recipe name in params.yaml (default: forge-small)")
    p.add_argument("--no-release", action="store_true", help="only run the pipeline")
    p.add_argument("--replace-draft", action="store_true",
                   help="replace an existing draft release of this version with this build's")

    p = _cmd(sub, "release", "build_cmds:cmd_release", "release a recipe that `dvc repro` has built",
             "Write the release of a built recipe (see `build`). Refused when the tree differs from HEAD "
             "other than dvc.lock and the release's own records.")
    p.add_argument("recipe", help="recipe name in params.yaml, e.g. forge-small")
    p.add_argument("--replace-draft", action="store_true", help="replace an existing draft of this version")
    p.add_argument("--no-push", action="store_true", help="don't push DVC outputs to the default remote")

    p = _cmd(sub, "reproduce", "build_cmds:cmd_reproduce", "rebuild a release from its source commit and compare bit for bit",
             "Rebuild a release in a clean temporary worktree at its source commit (data from the DVC remote "
             "or the pinned sources), compare the build manifest field by field and write a rebuild record. "
             "Exit 0 only when the rebuild is identical; 1 when it differs (the first differing stage and "
             "any difference in the pinned environment are shown).")
    p.add_argument("ref", metavar="MODEL_REF", help="e.g. model/forge-small@1.0.0 or forge-small")
    p.add_argument("--keep", action="store_true", help="keep the temporary worktree for inspection")

    p = _cmd(sub, "demo", "build_cmds:cmd_demo", "build and release forge-small end to end, then say what to try next",
             "The quickstart's main job (`make demo`): fetch the pinned public-domain sources, prepare them, "
             "train the tokenizer and forge-small on the CPU, quantize, evaluate, render its card and release "
             "it (or, where the release is committed, rebuild it and confirm the digests). Prints the time "
             "of every stage and the commands to try next.")
    p.add_argument("recipe", nargs="?", default="forge-small", help="recipe to build (default: forge-small)")

    # --- evaluation, cards, serving, the explorer (each module registers its own parsers) -----
    from commonforge.cli import card_cmds, eval_cmds, explore_cmds, serve_cmds

    eval_cmds.add_parsers(sub)
    card_cmds.add_parsers(sub)
    serve_cmds.add_parsers(sub)
    explore_cmds.add_parsers(sub)
