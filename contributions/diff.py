"""What a pull request changes, path by path, and what ``commonforge check`` does about each path.

    found = classify(repo_root, base=None, head=None)   # base: merge-base with main; head: HEAD
    found.changes                                       # one Change per changed path

The diff is taken from the merge-base of base and head to head (what a pull request shows:
commits that landed on the base branch meanwhile are not the contribution's). Every path gets
exactly one classification:

==============  ======================================================  =========
kind            path (under registry/entries/ unless said otherwise)    verdict
==============  ======================================================  =========
dataset         datasets/<name>/<version>.yaml added                    check
recipe          recipes/<name>/<version>.yaml added                     check
conversion      conversions/<name>/<version>.yaml added                 check
release         models/<name>/<version>.yaml added                      check
record          models/<name>/<version>.<record>.yaml (provenance...)   check
statement       models/<name>/<version>.statements/*.json added         check
local-source    registry/local_sources/** added (a new dataset's text)  check
params          params.yaml: only the new entries added to its lists    check
params          params.yaml: any other change                           review
entry-change    an existing entry (or local source) modified            refused
deletion        anything under registry/ or params.yaml deleted         refused
symlink         a symlink added under registry/ or as params.yaml       refused
code            anything else (code, docs, CI, other deletions)         review
unknown         a path under registry/entries/ that fits no layout      unknown
==============  ======================================================  =========

``check``: :mod:`contributions.check` runs that kind's checks. ``refused``: a failure (merged
entries are immutable: add a version). ``review``: reported as "needs a maintainer's code
review", not failed. ``unknown``: reported as needing a maintainer, never passed silently.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from commonforge.errors import InputError
from registry.refs import NAME_RE, VERSION_RE
from registry.schema import RECORD_SUFFIXES

Status = Literal["added", "modified", "deleted", "type-changed"]
Verdict = Literal["check", "refused", "review", "unknown"]

ENTRIES = "registry/entries/"
LOCAL_SOURCES = "registry/local_sources/"
PARAMS = "params.yaml"
DEFAULT_BASE = "main"  # the branch a contribution is checked against when --base is not given

_STATUS: dict[str, Status] = {"A": "added", "M": "modified", "D": "deleted", "T": "type-changed"}
_SYMLINK, _SUBMODULE = "120000", "160000"
_ENTRY = re.compile(r"^(?P<dir>datasets|recipes|conversions|models)/(?P<name>[^/]+)/(?P<version>[0-9.]+)\.yaml$")
_RECORD = re.compile(r"^models/(?P<name>[^/]+)/(?P<version>[0-9.]+)\.(?P<suffix>[a-z]+)\.yaml$")
_STATEMENT = re.compile(r"^models/(?P<name>[^/]+)/(?P<version>[0-9.]+)\.statements/(?P<file>[^/]+\.json)$")
_KIND_OF_DIR = {"datasets": "dataset", "recipes": "recipe", "conversions": "conversion", "models": "model"}


@dataclass(frozen=True)
class Change:
    """One changed path and what ``check`` does about it."""

    path: str  # repository-relative, POSIX
    status: Status
    kind: str  # see the module's table
    verdict: Verdict
    reason: str  # one line for the report
    ref: str | None = None  # the entry it is (or belongs to), e.g. "dataset/psalms@1"
    fix: str | None = None  # what to do, for refused and unknown changes

    def as_dict(self) -> dict[str, Any]:
        return {"path": self.path, "status": self.status, "kind": self.kind, "verdict": self.verdict,
                "reason": self.reason, "ref": self.ref, "fix": self.fix}


@dataclass(frozen=True)
class Classification:
    """The changes between the merge-base of base and head, and head."""

    base: str  # the commit --base named (sha)
    head: str  # the commit --head named (sha)
    merge_base: str  # where the diff starts
    changes: tuple[Change, ...] = field(default_factory=tuple)

    def of(self, verdict: Verdict) -> list[Change]:
        return [c for c in self.changes if c.verdict == verdict]


def _valid_name(name: str, version: str) -> bool:
    return bool(NAME_RE.match(name) and VERSION_RE.match(version))


def _next_version(version: str) -> str:
    parts = version.split(".")
    parts[-1] = str(int(parts[-1]) + 1) if parts[-1].isdigit() else parts[-1]
    return ".".join(parts)


def _entry_of(rel: str) -> tuple[str, str | None]:
    """(kind, ref) of a path below registry/entries/ by its layout; kind "unknown" when it fits none."""
    m = _ENTRY.match(rel)
    if m and _valid_name(m["name"], m["version"]):
        kind = _KIND_OF_DIR[m["dir"]]
        return ("release" if kind == "model" else kind), f"{kind}/{m['name']}@{m['version']}"
    m = _RECORD.match(rel)
    if m and _valid_name(m["name"], m["version"]) and m["suffix"] in RECORD_SUFFIXES:
        return "record", f"model/{m['name']}@{m['version']}"
    m = _STATEMENT.match(rel)
    if m and _valid_name(m["name"], m["version"]):
        return "statement", f"model/{m['name']}@{m['version']}"
    return "unknown", None


def classify_path(path: str, status: Status = "added", *, mode: str | None = None) -> Change:
    """The classification of one path by its place in the repository and how it changed.

    ``params.yaml`` is classified here as a change to check; :func:`classify` refines that
    with the base's and head's contents (only additions of the new entries are accepted).
    ``mode`` is git's file mode in head (``120000``: a symlink), where known.
    """
    in_registry = path.startswith("registry/") or path == PARAMS
    if status == "deleted":
        if in_registry:
            return Change(path, status, "deletion", "refused",
                          "deletes a merged file: entries and their data are never deleted",
                          fix="restore it; a release is withdrawn by a signed revocation, a dataset or recipe by a new version")
        return Change(path, status, "code", "review", "deletes code or docs: needs a maintainer's code review")
    if mode == _SYMLINK and in_registry:
        return Change(path, status, "symlink", "refused", "a symlink: entries and their data are plain files",
                      fix="commit the file itself (a source outside the repository is pinned by its sha256 instead)")
    if mode == _SUBMODULE:
        return Change(path, status, "code", "review", "a git submodule: needs a maintainer's code review")
    if path == PARAMS:
        return Change(path, status, "params", "check", "params.yaml: what `dvc repro` builds")
    if path.startswith(ENTRIES):
        kind, ref = _entry_of(path[len(ENTRIES):])
        if status != "added":
            if kind == "unknown":
                return Change(path, status, "entry-change", "refused", "changes a merged file under registry/entries",
                              fix="leave merged files as they are")
            assert ref is not None
            version = ref.rsplit("@", 1)[1]
            what = ref.split("/", 1)[0]
            fix = ("add a new version beside it, e.g. "
                   f"{path.rsplit('/', 1)[0]}/{_next_version(version)}.yaml" if kind in ("dataset", "recipe")
                   else "a release and its records are never edited: build a new version (or sign a revocation)")
            return Change(path, status, "entry-change", "refused",
                          f"changes the merged {what} {ref}: merged entries are immutable", ref=ref, fix=fix)
        if kind == "unknown":
            return Change(path, status, "unknown", "unknown",
                          "a file under registry/entries that is no known entry, record or statement",
                          fix="entries are <kind>s/<name>/<version>.yaml; a maintainer decides about anything else")
        reasons = {"dataset": "new dataset", "recipe": "new recipe", "conversion": "new conversion",
                   "release": "new model release",
                   "record": "new record beside a release", "statement": "new signed statement about a release"}
        return Change(path, status, kind, "check", f"{reasons[kind]} {ref}", ref=ref)
    if path.startswith(LOCAL_SOURCES):
        if status != "added":
            return Change(path, status, "entry-change", "refused",
                          "changes a merged local source: its dataset pins these files by digest",
                          fix="put changed text under a new directory and add a new dataset version that pins it")
        return Change(path, status, "local-source", "check", "new local source file (must belong to a new dataset)")
    return Change(path, status, "code", "review", "outside registry/entries and params.yaml: needs a maintainer's code review")


# --- params.yaml -----------------------------------------------------------------------------

_PARAMS_SECTIONS = ("datasets", "recipes", "training_data")


def _added_names(changes: list[Change], kind: str) -> dict[str, set[str]]:
    """name -> versions of the ``kind`` entries this diff adds."""
    out: dict[str, set[str]] = {}
    for c in changes:
        if c.kind == kind and c.verdict == "check" and c.ref:
            name, version = c.ref.split("/", 1)[1].split("@")
            out.setdefault(name, set()).add(version)
    return out


def params_change(base_text: str | None, head_text: str, changes: list[Change]) -> tuple[Verdict, str]:
    """Is this params.yaml change only the listing of entries the same diff adds?

    Accepted: a new key under ``datasets`` or ``recipes`` naming an added entry (or an existing
    key moved to a version this diff adds), and a new ``training_data`` pair whose recipe or
    dataset this diff adds. Anything else (removals, other sections, other values) needs a
    maintainer. An unreadable head is left to the params check, which reports the YAML error.
    """
    if base_text is None:
        return "review", "params.yaml is new: needs a maintainer"
    try:
        base = yaml.safe_load(base_text) or {}
        head = yaml.safe_load(head_text) or {}
    except yaml.YAMLError:
        return "check", "params.yaml changed (and does not parse: see the params check)"
    if not isinstance(base, dict) or not isinstance(head, dict):
        return "check", "params.yaml changed (and is not a mapping: see the params check)"
    if base == head:
        return "check", "params.yaml: comments or layout only; what it builds is unchanged"
    others = sorted(k for k in set(base) | set(head) if k not in _PARAMS_SECTIONS and base.get(k) != head.get(k))
    if others:
        return "review", f"params.yaml changes {', '.join(others)}: only additions of new entries are checked automatically"
    added = {"datasets": _added_names(changes, "dataset"), "recipes": _added_names(changes, "recipe")}
    new_recipes, new_datasets = set(added["recipes"]), set(added["datasets"])
    listed: list[str] = []
    for section in _PARAMS_SECTIONS:
        old, new = base.get(section) or {}, head.get(section) or {}
        if not isinstance(old, dict) or not isinstance(new, dict):
            return "review", f"params.yaml: {section} is not a mapping"
        for key in old:
            if key not in new:
                return "review", f"params.yaml removes {section}.{key}: needs a maintainer"
        for key, value in new.items():
            if old.get(key) == value:
                continue
            if section in ("datasets", "recipes"):
                version = str(value.get("version")) if isinstance(value, dict) and set(value) == {"version"} else None
                if version is None or version not in added[section].get(str(key), set()):
                    return "review", (f"params.yaml {section}.{key}: {value!r} is not a {section[:-1]} this "
                                      "change adds: needs a maintainer")
            else:
                pair = value if isinstance(value, dict) else {}
                recipe, dataset = pair.get("recipe"), pair.get("dataset")
                if (set(pair) != {"recipe", "dataset"} or key != f"{recipe}.{dataset}" or key in old
                        or not (recipe in new_recipes or dataset in new_datasets)):
                    return "review", (f"params.yaml training_data.{key}: not a pair for a recipe or dataset "
                                      "this change adds: needs a maintainer")
            listed.append(f"{section}.{key}")
    return "check", "params.yaml lists the new entries: " + ", ".join(listed)


# --- the diff --------------------------------------------------------------------------------


def open_repo(repo_root: Path):
    """The git repository at ``repo_root`` (GitPython), or an InputError (exit 2)."""
    import git

    try:
        return git.Repo(repo_root)
    except (git.InvalidGitRepositoryError, git.NoSuchPathError):
        raise InputError(f"{repo_root} is not a git repository",
                         hint="run check inside a clone of the forge (contributions are git branches)") from None


def resolve_commit(repo, ref: str, what: str) -> str:
    """The sha of ``ref`` in ``repo``; an InputError naming ``what`` (--base/--head) when it names none."""
    import git

    try:
        return repo.commit(ref).hexsha
    except (git.BadName, git.BadObject, ValueError):
        hint = (f"fetch it first (`git fetch origin {ref}`), or name another commit with {what}"
                if what == "--base" else f"name a branch, tag or commit with {what}")
        raise InputError(f"{what} {ref!r} names no commit in {repo.working_dir}", hint=hint) from None


def default_base(repo) -> str:
    """``main``, else ``origin/main``: the branch contributions are made against."""
    for name in (DEFAULT_BASE, f"origin/{DEFAULT_BASE}"):
        try:
            return repo.commit(name).hexsha
        except Exception:  # noqa: BLE001 - GitPython raises several types for a missing ref
            continue
    raise InputError(f"no base given and {repo.working_dir} has no {DEFAULT_BASE} branch",
                     hint="name the base with --base REF (the pull request's target branch or commit)")


def _blob_text(repo, commit: str, path: str) -> str | None:
    import git

    try:
        return repo.git.show(f"{commit}:{path}")
    except git.GitCommandError:
        return None


def _raw_changes(repo, start: str, end: str) -> list[tuple[Status, str, str]]:
    """(status, path, mode in end) of every path that differs, renames split into delete + add."""
    out = repo.git.diff("--raw", "-z", "--no-renames", "--no-abbrev", start, end)
    items = out.split("\x00")
    found: list[tuple[Status, str, str]] = []
    i = 0
    while i + 1 < len(items):
        meta, path = items[i], items[i + 1]
        i += 2
        if not meta.startswith(":"):
            continue
        _, new_mode, _, _, letter = meta[1:].split(" ")
        status = _STATUS.get(letter[:1])
        if status is None:  # unmerged or unknown: say so rather than skip it
            raise InputError(f"git reports {path} as {letter!r} between {start[:12]} and {end[:12]}",
                             hint="check a committed head, not one with merge conflicts")
        found.append((status, path, new_mode))
    return found


def classify(repo_root: Path, base: str | None = None, head: str | None = None) -> Classification:
    """Classify every path that differs between merge-base(base, head) and head."""
    repo = open_repo(repo_root)
    head_sha = resolve_commit(repo, head or "HEAD", "--head")
    base_sha = resolve_commit(repo, base, "--base") if base else default_base(repo)
    bases = repo.merge_base(base_sha, head_sha)
    if not bases:
        raise InputError(f"{base or DEFAULT_BASE} and {head or 'HEAD'} share no history",
                         hint="a contribution is a branch made from the forge's main branch")
    merge_base = bases[0].hexsha
    changes = [classify_path(path, status, mode=mode) for status, path, mode in _raw_changes(repo, merge_base, head_sha)]
    refined = []
    for c in changes:
        if c.path == PARAMS and c.kind == "params":
            verdict, reason = params_change(_blob_text(repo, merge_base, PARAMS),
                                            _blob_text(repo, head_sha, PARAMS) or "", changes)
            c = Change(c.path, c.status, "params", verdict, reason)
        elif c.kind in ("dataset", "recipe") and c.ref:
            name = c.ref.split("/", 1)[1].split("@")[0]
            folder = c.path.rsplit("/", 1)[0]
            earlier = [Path(p).stem for p in _tree_files(repo, merge_base, folder)]
            if earlier:
                c = Change(c.path, c.status, c.kind, c.verdict,
                           f"new {c.kind} version {c.ref} (after {name}@{', '.join(sorted(earlier))})", ref=c.ref)
        refined.append(c)
    return Classification(base_sha, head_sha, merge_base, tuple(refined))


def _tree_files(repo, commit: str, folder: str) -> list[str]:
    out = repo.git.ls_tree("--name-only", commit, f"{folder}/")
    return [p for p in out.splitlines() if p.endswith(".yaml")]
