"""``check``: the checks a pull request must pass, as CI runs them (wiring only: see contributions.check)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from commonforge.cli.command import add_command

CHECK_HELP = """\
Check a contribution the way CI checks its pull request. Without PATHs: diff the merge-base of
--base and --head to --head (git), classify every changed path (a new dataset, a new recipe
version, a release's statements; a change to a merged entry or a deletion is refused; a change
outside registry/entries and params.yaml is reported for a maintainer's code review) and run
each new entry's checks on a temporary worktree of head (your working tree is not touched):
schema and references, unanswered questions, licenses, and without --fast also the pinned
sources, data policy, contamination and a dry-run build.

With PATHs (what the pre-commit hook passes): check those files as they are on disk.

Exit 0 nothing failed (the report may still ask for a maintainer), 1 a check failed or a change
is refused, 2 bad input (an unknown ref, no base branch, not a git repository).
"""


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "check", cmd_check, "check a contribution (base..head, or files) as CI does", CHECK_HELP)
    p.add_argument("paths", nargs="*", metavar="PATH",
                   help="files to check as they are on disk (e.g. from the pre-commit hook); leave out to diff refs")
    p.add_argument("--base", metavar="REF", help="the pull request's target (default: the merge-base with main)")
    p.add_argument("--head", metavar="REF", help="the contribution (default: HEAD)")
    p.add_argument("--format", choices=["text", "markdown", "json"], default="text",
                   help="text (default), markdown (what a bot posts on the PR), json (schema: docs/contributions.md)")
    p.add_argument("--fast", action="store_true",
                   help="only the fast checks: schema, questions, licenses, statements, params (seconds, no network)")
    p.add_argument("--output", type=Path, metavar="FILE", help="also write the report to FILE")
    p.add_argument("--json-output", type=Path, metavar="FILE",
                   help="also write the JSON report to FILE, whatever --format says (one run, both reports)")


def cmd_check(args: argparse.Namespace) -> int:
    from commonforge.errors import InputError
    from commonforge.settings import apply
    from contributions.check import RENDERERS, check, run_checks
    from registry.fsutil import atomic_write_text

    settings = apply()
    if args.paths and (args.base or args.head):
        raise InputError("give PATHs or --base/--head, not both",
                         hint="PATHs are checked as they are on disk; refs are diffed and checked as committed")
    if args.paths:
        paths = [str(Path(p).absolute()) for p in args.paths]
        report = run_checks(settings.root, paths, fast=args.fast, cache=settings.source_cache)
    else:
        report = check(settings.root, args.base, args.head, fast=args.fast, cache=settings.source_cache)
    rendered = RENDERERS[args.format](report)
    if args.output:
        atomic_write_text(args.output.absolute(), rendered)
    if args.json_output:
        atomic_write_text(args.json_output.absolute(), RENDERERS["json"](report))
    sys.stdout.write(rendered)
    return report.exit_code
