"""``commonforge check``: what CI runs on a pull request, and what ``contribute`` runs before it commits.

    report = check(repo_root, base=None, head=None)     # base: merge-base with main; head: HEAD
    report = run_checks(root, ["registry/entries/datasets/psalms/1.yaml"], fast=True)
    to_markdown(report)   to_text(report)   to_json(report)   report.exit_code

:func:`check` classifies every path of the diff (:mod:`contributions.diff`), checks out head in
a temporary git worktree (the caller's working tree is never touched), and runs, for each
change to check, the checks its kind names in :data:`KIND_CHECKS`. The table names each check
by import path (``module:function``) and imports it only when it runs, so a checkout without a
check's module reports that check as *skipped* ("not available in this checkout"), never as
passed; a kind the table does not know is reported as *unknown* (needs a maintainer). Later
kinds (import entries, fine-tune recipes...) join by adding a row.

Verdicts: ``failed`` (a check failed, or a change is refused), ``needs-review`` (nothing failed,
but a maintainer must look: code changes, unknown paths, checks not available here), ``passed``.
Exit codes: 0 nothing failed, 1 a check failed or a change is refused, 2 bad input (an unknown
ref, no base, not a git repository: raised as :class:`~commonforge.errors.InputError`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import importlib
import json
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from commonforge.errors import ForgeError, InputError
from contributions import logfiles
from contributions.diff import Change, classify, classify_path, open_repo
from contributions.report import CheckInput, CheckResult, Problem

REPORT_SCHEMA = 1  # of to_json's document; bump on any change a consumer would notice

# --- the table: entry kinds -> checks --------------------------------------------------------


@dataclass(frozen=True)
class CheckSpec:
    """One check: where its function is, and whether it belongs to the fast set."""

    name: str  # what the report calls it
    target: str  # "module:function", imported when the check runs
    fast: bool  # run by --fast (the pre-commit hook, `contribute`) as well as by CI
    needs_schema: bool = True  # skipped when the entry's schema check failed (it could not load)


CHECKS: dict[str, CheckSpec] = {s.name: s for s in (
    CheckSpec("schema", "contributions.schema_check:check_schema", fast=True, needs_schema=False),
    CheckSpec("questions", "contributions.schema_check:check_questions", fast=True),
    CheckSpec("licenses", "contributions.licenses:check_licenses", fast=True),
    CheckSpec("statements", "contributions.check:check_statements", fast=True, needs_schema=False),
    CheckSpec("params", "contributions.check:check_params", fast=True, needs_schema=False),
    CheckSpec("local source", "contributions.check:check_local_source", fast=True, needs_schema=False),
    CheckSpec(logfiles.CHECK, "contributions.logfiles:check_log_file", fast=True, needs_schema=False),
    CheckSpec("sources", "contributions.sources_check:check_sources", fast=False),
    CheckSpec("checkpoint", "contributions.checkpoint_check:check_checkpoint", fast=False),
    CheckSpec("data policy", "contributions.datapolicy:check_data_policy", fast=False),
    CheckSpec("contamination", "contributions.contamination:check_contamination", fast=False),
    CheckSpec("dry-run build", "contributions.dryrun:check_dry_run", fast=False),
)}

# Which checks each kind of change (contributions.diff's classification) runs, in order.
KIND_CHECKS: dict[str, tuple[str, ...]] = {
    "dataset": ("schema", "questions", "licenses", "sources", "data policy", "contamination", "dry-run build"),
    "recipe": ("schema", "questions", "licenses", "contamination", "dry-run build"),
    "conversion": ("schema", "licenses", "checkpoint"),
    "release": ("schema",),
    "record": ("schema",),
    "statement": ("statements",),
    "params": ("params",),
    "local-source": ("local source",),
    logfiles.KIND: (logfiles.CHECK,),  # a transparency log's file, wherever it is (contributions.logfiles)
}

Verdict = Literal["passed", "failed", "needs-review"]
UNAVAILABLE = "unavailable"  # details["skip"] of a check whose module this checkout lacks


# --- the report -------------------------------------------------------------------------------


@dataclass
class EntryReport:
    """One change that was checked, and its checks' results."""

    change: Change
    results: list[CheckResult] = field(default_factory=list)

    @property
    def verdict(self) -> Verdict:
        if any(r.outcome == "failed" for r in self.results):
            return "failed"
        if any(r.outcome == "skipped" and r.details.get("skip") == UNAVAILABLE for r in self.results):
            return "needs-review"
        return "passed"

    def as_dict(self) -> dict[str, Any]:
        return {"path": self.change.path, "kind": self.change.kind, "ref": self.change.ref,
                "reason": self.change.reason, "verdict": self.verdict,
                "checks": [r.as_dict() for r in self.results]}


@dataclass
class Report:
    """Everything ``check`` found: the classification of every path, and each checked entry's results."""

    changes: list[Change]
    entries: list[EntryReport]
    fast: bool
    seconds: float = 0.0
    base: str | None = None  # the commit --base named (None: run_checks on files)
    head: str | None = None
    merge_base: str | None = None
    refs: dict[str, str | None] = field(default_factory=dict)  # what was asked: {"base": "main", "head": "HEAD"}

    @property
    def results(self) -> list[CheckResult]:
        """Every check result, entry after entry (what ``contribute`` reads)."""
        return [r for e in self.entries for r in e.results]

    def changes_of(self, *verdicts: str) -> list[Change]:
        return [c for c in self.changes if c.verdict in verdicts]

    @property
    def verdict(self) -> Verdict:
        if self.changes_of("refused") or any(e.verdict == "failed" for e in self.entries):
            return "failed"
        if self.changes_of("review", "unknown") or any(e.verdict == "needs-review" for e in self.entries):
            return "needs-review"
        return "passed"

    @property
    def exit_code(self) -> int:
        return 1 if self.verdict == "failed" else 0

    def counts(self) -> dict[str, int]:
        out = {"passed": 0, "failed": 0, "skipped": 0}
        for r in self.results:
            out[r.outcome] += 1
        return out

    def to_dict(self) -> dict[str, Any]:
        from commonforge import __version__

        return {
            "schema_version": REPORT_SCHEMA,
            "tool": f"commonforge {__version__}",
            "mode": "fast" if self.fast else "full",
            "base": self.base, "head": self.head, "merge_base": self.merge_base, "refs": dict(self.refs),
            "verdict": self.verdict, "exit_code": self.exit_code, "seconds": round(self.seconds, 3),
            "counts": self.counts(),
            "changes": [c.as_dict() for c in self.changes],
            "entries": [e.as_dict() for e in self.entries],
        }

    def markdown(self) -> str:
        return to_markdown(self)


# --- running the table ------------------------------------------------------------------------


def _load(spec: CheckSpec) -> Callable[[CheckInput], CheckResult] | CheckResult:
    """The check's function, or the skipped result that says why this checkout cannot run it."""
    module_name, _, func_name = spec.target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        if err.name and (module_name == err.name or module_name.startswith(f"{err.name}.")):
            return CheckResult.skipped(spec.name, f"not available in this checkout ({module_name} is missing)",
                                       skip=UNAVAILABLE, target=spec.target)
        return CheckResult.skipped(spec.name, f"not available in this checkout ({module_name} needs {err.name}, "
                                              "which is not installed: run `make venv`)", skip=UNAVAILABLE,
                                   target=spec.target)
    func = getattr(module, func_name, None)
    if not callable(func):
        return CheckResult.skipped(spec.name, f"not available in this checkout ({module_name} has no {func_name})",
                                   skip=UNAVAILABLE, target=spec.target)
    return func


def run_check(spec: CheckSpec, inp: CheckInput) -> CheckResult:
    """Run one check, timed; a crash is a failure of that check (never a pass), a ForgeError is bad input.

    A check whose module or function this checkout lacks is skipped with
    ``details["skip"] == "unavailable"`` (the report asks for a maintainer), never passed.
    """
    found = _load(spec)
    if isinstance(found, CheckResult):
        return found
    started = time.perf_counter()
    try:
        result = found(inp)
    except ForgeError:
        raise  # bad input to check itself (report.py's contract): exit 2 through the CLI
    except Exception as err:  # noqa: BLE001 - a bug in a check must fail that check, not pass it
        result = CheckResult.failed(spec.name, f"the check itself crashed: {type(err).__name__}: {err}", [Problem(
            f"{spec.target} raised {type(err).__name__}: {err}",
            fix="this is a bug in the check, not in your contribution: tell the maintainers", path=inp.path)])
    if not isinstance(result, CheckResult):
        result = CheckResult.failed(spec.name, f"{spec.target} returned {type(result).__name__}, not a CheckResult", [])
    return dataclasses.replace(result, check=spec.name, seconds=time.perf_counter() - started)


def _check_change(change: Change, root: Path, *, fast: bool, cache: Path | None, base_root: Path | None,
                  options: dict[str, Any]) -> EntryReport:
    entry = EntryReport(change)
    inp = CheckInput(root=root, ref=change.ref or change.path, path=change.path, base_root=base_root,
                     cache=cache, options=options)
    schema_failed = False
    for name in KIND_CHECKS[change.kind]:
        spec = CHECKS[name]
        if not spec.fast and fast:
            entry.results.append(CheckResult.skipped(name, "not run with --fast (CI runs it on the pull request)",
                                                     skip="fast"))
        elif spec.needs_schema and schema_failed:
            entry.results.append(CheckResult.skipped(name, "the entry does not load: fix the schema problems first",
                                                     skip="schema"))
        else:
            result = run_check(spec, inp)
            entry.results.append(result)
            schema_failed = schema_failed or (name == "schema" and result.outcome == "failed")
    return entry


def _unknown_kind(change: Change) -> Change:
    return Change(change.path, change.status, change.kind, "unknown",
                  f"{change.reason}: this checkout has no checks for a {change.kind!r} change",
                  ref=change.ref, fix="a maintainer reviews it (or a newer commonforge checks it)")


def run_table(root: Path, changes: list[Change], *, fast: bool, cache: Path | None = None,
              base_root: Path | None = None, options: dict[str, Any] | None = None,
              ) -> tuple[list[Change], list[EntryReport]]:
    """Run each change's checks (:data:`KIND_CHECKS`) on the checkout at ``root``.

    Returns the changes (a change to check whose kind the table lacks becomes *unknown*) and
    one report per checked change. ``options["added_refs"]`` tells the checks what else the
    same change adds.
    """
    changes = [_unknown_kind(c) if c.verdict == "check" and c.kind not in KIND_CHECKS else c for c in changes]
    added = [c.ref for c in changes if c.verdict == "check" and c.ref]
    opts = {"added_refs": added, **(options or {})}
    entries = [_check_change(c, root, fast=fast, cache=cache, base_root=base_root, options=opts)
               for c in changes if c.verdict == "check"]
    return changes, entries


def run_checks(root: Path, entry_paths: list[str], *, fast: bool, cache: Path | None = None,
               options: dict[str, Any] | None = None) -> Report:
    """Check files as they are in the working tree at ``root`` (each as if added: no git diff).

    What the pre-commit hook and ``contribute`` run: the paths are classified by where they are
    (a path outside registry/entries is reported for review, not checked).
    """
    started = time.perf_counter()
    root = Path(root).resolve()
    changes = []
    for given in entry_paths:
        path = Path(given) if Path(given).is_absolute() else root / given
        path = path.parent.resolve() / path.name  # the file itself stays unresolved: a symlink is refused
        if not path.is_relative_to(root):
            raise InputError(f"{given} is not inside the repository {root}", hint="name files of this checkout")
        if not path.exists() and not path.is_symlink():
            raise InputError(f"{given}: no such file", hint="name entry files, e.g. registry/entries/datasets/NAME/1.yaml")
        rel = path.relative_to(root).as_posix()
        changes.append(classify_path(rel, "added", mode="120000" if path.is_symlink() else None))
    changes = logfiles.mark(changes, lambda c: _file_bytes(root / c.path))
    changes, entries = run_table(root, changes, fast=fast, cache=cache, base_root=None, options=options)
    return Report(changes, entries, fast, time.perf_counter() - started)


def _file_bytes(path: Path) -> bytes | None:
    return path.read_bytes() if path.is_file() and not path.is_symlink() else None


def _blob_reader(repo_root: Path, commit: str) -> Callable[[Change], bytes | None]:
    """Reads a changed path's content in ``commit`` (None for a symlink, a submodule, a path it lacks)."""
    tree = open_repo(repo_root).commit(commit).tree

    def read(change: Change) -> bytes | None:
        try:
            blob = tree / change.path
        except KeyError:
            return None
        if getattr(blob, "type", None) != "blob" or blob.mode == 0o120000:
            return None
        return blob.data_stream.read(logfiles.MAX_SCAN)

    return read


@contextlib.contextmanager
def worktree(repo_root: Path, commit: str) -> Iterator[Path]:
    """A detached temporary git worktree of ``commit``, removed afterwards (the caller's tree is untouched)."""
    repo = open_repo(repo_root)
    tmp = Path(tempfile.mkdtemp(prefix="commonforge-check-"))
    tree = tmp / "tree"
    try:
        repo.git.worktree("add", "--detach", str(tree), commit)
        yield tree
    finally:
        try:
            if tree.exists():
                repo.git.worktree("remove", "--force", str(tree))
        except Exception:  # noqa: BLE001 - best effort: the folder goes below and prune forgets it
            pass
        shutil.rmtree(tmp, ignore_errors=True)
        with contextlib.suppress(Exception):
            repo.git.worktree("prune")


def check(repo_root: Path, base: str | None = None, head: str | None = None, *, fast: bool = False,
          cache: Path | None = None, options: dict[str, Any] | None = None) -> Report:
    """Classify base..head (from their merge-base) and run each change's checks on a worktree of head.

    ``base`` None: the merge-base with ``main`` (else ``origin/main``); ``head`` None: HEAD.
    Raises InputError (exit 2) for a ref that names nothing, a missing base, or no git repository.
    """
    started = time.perf_counter()
    found = classify(Path(repo_root), base, head)
    changes: list[Change] = logfiles.mark(list(found.changes), _blob_reader(Path(repo_root), found.head))
    entries: list[EntryReport] = []
    if any(c.verdict == "check" for c in changes):
        with contextlib.ExitStack() as stack:
            tree = stack.enter_context(worktree(Path(repo_root), found.head))
            base_root = None if fast else stack.enter_context(worktree(Path(repo_root), found.merge_base))
            changes, entries = run_table(tree, changes, fast=fast, cache=cache, base_root=base_root, options=options)
    return Report(changes, entries, fast, time.perf_counter() - started, found.base, found.head, found.merge_base,
                  {"base": base, "head": head or "HEAD"})


# --- checks that live with the table (small, about the diff itself) -----------------------------


def check_statements(inp: CheckInput) -> CheckResult:
    """An added signed statement must parse, name the release beside which it sits, verify, and be
    signed by a key the current policy gives its role (:func:`trust.status.statement_problems`)."""
    from trust.status import statement_problems

    file = (inp.root / inp.path).resolve()
    problems = statement_problems(inp.root, only={file})
    if not problems:
        return CheckResult.passed("statements", f"{inp.path.rsplit('/', 1)[-1]} verifies and counts under the policy")
    return CheckResult.failed("statements", f"{len(problems)} statement problem(s)", [
        Problem(p.split(": ", 1)[1] if ": " in p else p, path=inp.path,
                fix="sign it again with `commonforge approve|attest|revoke` using a key the policy lists")
        for p in problems])


def check_params(inp: CheckInput) -> CheckResult:
    """params.yaml still parses and agrees with the recipes it names (what `commonforge validate` checks)."""
    from pipelines.workspace import Params
    from registry.catalog import Registry

    try:
        params = Params.load(inp.root)
        problems = params.problems(Registry(inp.root))
    except ForgeError as err:
        return CheckResult.failed("params", "params.yaml cannot be read", [Problem(err.message, fix=err.hint,
                                                                                   path=inp.path)])
    except Exception as err:  # noqa: BLE001 - yaml errors, a section of the wrong shape
        return CheckResult.failed("params", "params.yaml cannot be read", [Problem(
            f"{type(err).__name__}: {err}", fix="compare it with the params.yaml of main", path=inp.path)])
    if problems:
        return CheckResult.failed("params", f"{len(problems)} inconsistency(ies) in params.yaml", [
            Problem(p.removeprefix("params.yaml: "), path=inp.path,
                    fix="list the recipe under recipes, each of its datasets under datasets, and the pair under "
                        "training_data (`commonforge new recipe` writes these lines)") for p in problems])
    return CheckResult.passed("params", f"builds {len(params.recipes)} recipe(s) over {len(params.datasets)} "
                                        "dataset(s), consistently")


@functools.lru_cache(maxsize=8)
def _local_sources(root: str, stamp: tuple[tuple[str, int, int], ...]) -> tuple[tuple[str, str], ...]:
    """(entry ref, local source path) of every dataset and conversion in the checkout (a conversion's
    checkpoint may be a local file); ``stamp`` (the entry files' names, sizes and mtimes) is the cache
    key, so a corpus of many files reads the registry once."""
    from registry.catalog import Registry
    from registry.schema import Conversion, Dataset

    found = []
    reg = Registry(Path(root))
    for entry in reg.iter_entries("dataset"):
        assert isinstance(entry, Dataset)
        found += [(entry.ref, s.path.rstrip("/")) for s in entry.sources if s.kind == "local" and s.path]
    for conv in reg.iter_entries("conversion"):
        assert isinstance(conv, Conversion)
        if conv.source.kind == "local" and conv.source.path:
            found.append((conv.ref, conv.source.path.rstrip("/")))
    return tuple(found)


def check_local_source(inp: CheckInput) -> CheckResult:
    """An added file under registry/local_sources must be a local source of a dataset (or the local
    checkpoint of a conversion) this change adds (a merged entry's files are pinned: adding to its
    directory would change what it pins)."""
    added = set(inp.options.get("added_refs") or [])
    entries = inp.root / "registry" / "entries"
    files = sorted([*(entries / "datasets").glob("*/*.yaml"), *(entries / "conversions").glob("*/*.yaml")])
    stamp = tuple((str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files)
    owners = [ref for ref, path in _local_sources(str(inp.root), stamp)
              if inp.path == path or inp.path.startswith(f"{path}/")]
    new_owners = sorted(r for r in owners if r in added)
    if new_owners:
        return CheckResult.passed("local source", f"text of {', '.join(new_owners)}", owners=new_owners)
    if owners:
        return CheckResult.failed("local source", f"adds a file to the merged source of {', '.join(sorted(owners))}", [
            Problem(f"belongs to the local source of {', '.join(sorted(owners))}, which is merged and pinned by digest",
                    fix="put new text in a new directory, pinned by a new dataset (or a new version)", path=inp.path)])
    return CheckResult.failed("local source", "no dataset or conversion uses this file", [Problem(
        "is under registry/local_sources but no dataset's local source (or conversion's checkpoint) includes it",
        fix="add the dataset entry that pins it in the same change, or leave the file out", path=inp.path)])


# --- rendering ----------------------------------------------------------------------------------

ICONS = {"passed": "✅", "failed": "❌", "skipped": "⏭"}
VERDICT_ICONS = {"passed": "✅", "failed": "❌", "needs-review": "⚠️"}
CHANGE_ICONS = {"check": "🔎", "refused": "❌", "review": "⚠️", "unknown": "❓"}


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _short(sha: str | None) -> str:
    return sha[:12] if sha else "-"


def _headline(report: Report) -> str:
    mode = "fast checks" if report.fast else "all checks"
    where = (f"base `{_short(report.base)}` (merge-base `{_short(report.merge_base)}`) → head `{_short(report.head)}`"
             if report.head else "working tree")
    return f"{where} · {mode} · {len(report.changes)} changed path(s) · {report.seconds:.1f} s"


def _summary_rows(report: Report) -> list[tuple[str, str, list[EntryReport]]]:
    """(label, kind, entries) per row of the summary: an entry each, but a new local source's files
    as one row per directory under registry/local_sources (a corpus may be hundreds of files)."""
    rows: list[tuple[str, str, list[EntryReport]]] = []
    folders: dict[str, list[EntryReport]] = {}
    for e in report.entries:
        if e.change.kind == "local-source":
            top = "/".join(e.change.path.split("/")[:3]) + "/"
            if top not in folders:
                folders[top] = []
                rows.append((top, "local-source", folders[top]))
            folders[top].append(e)
        else:
            rows.append((e.change.ref or e.change.path, e.change.kind, [e]))
    return rows


def to_markdown(report: Report) -> str:
    """The report as a bot would post it on the pull request."""
    v = report.verdict
    out = [f"## {VERDICT_ICONS[v]} commonforge check: {v}", "", _headline(report), ""]
    if report.entries:
        names = [n for n in CHECKS if any(r.check == n for e in report.entries for r in e.results)]
        out += ["| entry | kind | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(names)]
        for label, kind, group in _summary_rows(report):
            cells = []
            for n in names:
                outcomes = [r.outcome for e in group for r in e.results if r.check == n]
                worst = next((o for o in ("failed", "skipped", "passed") if o in outcomes), None)
                cells.append(ICONS[worst] if worst else "—")
            files = f" ({len(group)} file{'s' if len(group) > 1 else ''})" if kind == "local-source" else ""
            out.append(f"| `{_cell(label)}`{files} | {kind} | " + " | ".join(cells) + " |")
        out += ["", "✅ passed · ❌ failed · ⏭ skipped · — not run for this kind", ""]
    failed = [(e, r) for e in report.entries for r in e.results if r.outcome == "failed"]
    if failed:
        out += ["### ❌ Problems", ""]
        for e, r in failed:
            out.append(f"**{_cell(e.change.ref or e.change.path)} · {r.check}**: {r.summary}")
            out.append("")
            for p in r.problems or (Problem(r.summary),):
                where = f"`{p.location()}` " if p.location() else ""
                out.append(f"- {where}{p.message}" + (f"  \n  **fix:** {p.fix}" if p.fix else ""))
            out.append("")
    refused = report.changes_of("refused")
    if refused:
        out += ["### ❌ Refused changes", ""]
        out += [f"- `{c.path}` ({c.status}): {c.reason}" + (f"  \n  **fix:** {c.fix}" if c.fix else "") for c in refused]
        out.append("")
    review = report.changes_of("review", "unknown")
    unavailable = [(e, r) for e in report.entries for r in e.results
                   if r.outcome == "skipped" and r.details.get("skip") == UNAVAILABLE]
    if review or unavailable:
        out += ["### ⚠️ Needs a maintainer", ""]
        out += [f"- {CHANGE_ICONS[c.verdict]} `{c.path}` ({c.status}): {c.reason}" for c in review]
        out += [f"- ⏭ {e.change.ref or e.change.path}: {r.check}: {r.summary}" for e, r in unavailable]
        out.append("")
    if not report.changes:
        out += ["Nothing changed between the merge-base and head: nothing to check.", ""]
    if report.entries:
        out += ["<details><summary>Every check</summary>", "", "| entry | check | outcome | seconds | summary |",
                "|---|---|---|---|---|"]
        for e in report.entries:
            for r in e.results:
                out.append(f"| `{_cell(e.change.ref or e.change.path)}` | {r.check} | {ICONS[r.outcome]} {r.outcome} | "
                           f"{r.seconds:.2f} | {_cell(r.summary)} |")
        out += ["", "</details>", ""]
    if report.changes:
        out += ["<details><summary>Every changed path</summary>", "", "| path | change | kind | verdict | why |",
                "|---|---|---|---|---|"]
        out += [f"| `{_cell(c.path)}` | {c.status} | {c.kind} | {CHANGE_ICONS[c.verdict]} {c.verdict} | {_cell(c.reason)} |"
                for c in report.changes]
        out += ["", "</details>", ""]
    return "\n".join(out)


def _entries_text(entries: list[EntryReport], marks: dict[str, str]) -> list[str]:
    out = []
    for e in entries:
        out.append(f"{e.change.ref or e.change.path}  [{e.change.kind}: {e.verdict}]  {e.change.path}")
        for r in e.results:
            out.append(f"  {marks[r.outcome]} {r.check:<14} {r.seconds:6.2f} s  {r.summary}")
            for p in r.problems:
                out.append(f"      {p.location() + ': ' if p.location() else ''}{p.message}")
                if p.fix:
                    out.append(f"        fix: {p.fix}")
        out.append("")
    return out


def to_text(report: Report) -> str:
    """The report for a terminal."""
    marks = {"passed": "✓", "failed": "✗", "skipped": "-"}
    out = [f"commonforge check: {report.verdict} (exit {report.exit_code})", _headline(report).replace("`", ""), ""]
    for label, kind, group in _summary_rows(report):
        if kind == "local-source" and all(e.verdict == "passed" for e in group):
            out += [f"{label}  [{kind}: passed]  {len(group)} new file(s), each a local source of a dataset added here", ""]
            continue
        out += _entries_text(group, marks)
    for title, verdicts in (("refused", ("refused",)), ("needs a maintainer", ("review", "unknown"))):
        found = report.changes_of(*verdicts)
        if found:
            out.append(f"{title}:")
            for c in found:
                out.append(f"  {c.verdict:<8} {c.path} ({c.status}): {c.reason}")
                if c.fix and c.verdict != "review":
                    out.append(f"           fix: {c.fix}")
            out.append("")
    if not report.changes:
        out.append("nothing changed between the merge-base and head: nothing to check")
    return "\n".join(out).rstrip() + "\n"


def to_json(report: Report) -> str:
    """The report as a JSON document (schema: docs/contributions.md, ``schema_version`` :data:`REPORT_SCHEMA`)."""
    # default=str: a check's details that JSON cannot hold (a Path...) are written as text, not a crash.
    return json.dumps(report.to_dict(), indent=2, ensure_ascii=False, default=str) + "\n"


RENDERERS: dict[str, Callable[[Report], str]] = {"text": to_text, "markdown": to_markdown, "json": to_json}
