"""``commonforge contribute``: new entries onto a ``contrib/<kind>-<name>-<version>`` branch, DCO-signed.

    contribute(root, ["registry/entries/datasets/psalms/1.yaml"], push="upstream")

The commit is built beside the working tree, never in it: a temporary index is filled from
the base branch (``main``) plus the contributed files, written as a tree, committed with the
base as its only parent and given the new branch name (which must not exist). The working
tree, the real index and the checked-out branch are never touched, so whatever else is
modified or staged stays exactly as it was and is never committed; existing history is never
rewritten (the branch is new, a push never forces).

What is committed: each entry file; for a dataset, the files of its local sources (the entry
pins their sha256, so they are part of it); for a recipe, params.yaml as the base has it with
that recipe listed (:func:`contributions.scaffold.list_recipe`), whatever else the working
copy of params.yaml holds. Before anything is written the fast checks run
(``contributions.check.run_checks(root, paths, fast=True)``); a failed check stops the
contribution with the report.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from commonforge.errors import ForgeError, InputError, NotFoundError, VerificationError
from contributions.report import CheckResult
from registry.catalog import Registry
from registry.refs import KIND_DIRS, Ref
from registry.schema import Dataset, Entry, Recipe
from registry.yamlio import load_model

Checks = Callable[[Path, list[str]], Any]  # (root, entry paths) -> results (see _results)
ENTRIES = "registry/entries"


@dataclass(frozen=True)
class Contribution:
    """What :func:`contribute` made."""

    branch: str  # e.g. "contrib/dataset-psalms-1"
    commit: str  # its hexsha
    base: str  # the base commit's hexsha
    entries: tuple[str, ...]  # refs, e.g. ("dataset/psalms@1",)
    files: tuple[str, ...]  # every committed path
    message: str  # the commit message
    description: str  # the pull request's description (Markdown)
    description_path: Path
    pushed_to: str | None  # the remote, when pushed
    left_out: tuple[str, ...]  # other dirty paths, left as they were


def _repo(root: Path):
    import git

    try:
        return git.Repo(root)
    except (git.InvalidGitRepositoryError, git.NoSuchPathError):
        raise InputError(f"{root} is not a git repository", hint="contribute from a clone of the forge") from None


def identity(repo) -> tuple[str, str]:
    """The committer's name and e-mail as git would use them (environment, then config)."""
    import git

    def value(env: str, key: str) -> str:
        if os.environ.get(env):
            return os.environ[env]
        try:
            return repo.git.config("--get", key).strip()
        except git.GitCommandError:
            return ""

    name, email = value("GIT_COMMITTER_NAME", "user.name"), value("GIT_COMMITTER_EMAIL", "user.email")
    if not name or not email:
        missing = " and ".join(k for k, v in (("user.name", name), ("user.email", email)) if not v)
        raise InputError(
            f"git does not know who you are ({missing} unset): a contribution is signed off by its author",
            hint='git config --global user.name "Your Name" && git config --global user.email you@example.org',
        )
    return name, email


def _entry_ref(root: Path, given: str) -> tuple[Ref, str]:
    """(ref, repository-relative path) of an entry named by path or by ref."""
    if not given.endswith(".yaml") and "@" in given:
        ref = Ref.parse(given)
        rel = Registry(root).entry_path(ref).relative_to(root).as_posix()
    else:
        path = Path(given)
        if not path.is_absolute():  # relative to where the command runs inside the repository, else to its root
            here = (Path.cwd() / path).resolve()
            path = here if here.is_relative_to(root) and here.exists() else root / path
        path = path.resolve()
        if not path.is_relative_to(root):
            raise InputError(f"{given} is not inside the repository {root}", hint="name entries under registry/entries/")
        rel = path.relative_to(root).as_posix()
        parts = rel.split("/")
        dirs = {v: k for k, v in KIND_DIRS.items()}
        if len(parts) != 5 or "/".join(parts[:2]) != ENTRIES or parts[2] not in dirs or not parts[4].endswith(".yaml"):
            raise InputError(f"{given} is not an entry file",
                             hint="entries are registry/entries/<datasets|recipes>/<name>/<version>.yaml")
        ref = Ref(dirs[parts[2]], parts[3], parts[4][: -len(".yaml")])
    if ref.kind not in ("dataset", "recipe"):
        raise InputError(f"{ref}: only datasets and recipes are contributed this way",
                         hint="releases come from `commonforge build` and the maintainers' signatures")
    if not (root / rel).is_file():
        raise NotFoundError(rel, hint="scaffold it first: `commonforge new dataset|recipe ...`")
    return ref, rel


def _in_tree(tree, path: str) -> bool:
    try:
        tree[path]
    except KeyError:
        return False
    return True


def results_of(report: Any) -> list[CheckResult]:
    """The CheckResults of a check report: a list of them, or an object with ``results``."""
    items = getattr(report, "results", report)
    return [r for r in items if isinstance(r, CheckResult)] if items is not None else []


def report_markdown(report: Any) -> str:
    render = getattr(report, "markdown", None)
    if callable(render):
        return str(render())
    lines = ["| check | outcome | summary |", "|---|---|---|"]
    for r in results_of(report):
        lines.append(f"| {r.check} | {r.outcome} | {r.summary} |")
        lines.extend(f"|  | | {p.location() + ': ' if p.location() else ''}{p.message}"
                     f"{' (' + p.fix + ')' if p.fix else ''} |" for p in r.problems)
    return "\n".join(lines)


def fast_checks(root: Path, paths: list[str]) -> Any:
    """``contributions.check.run_checks(root, paths, fast=True)``, imported when needed."""
    try:
        from contributions.check import run_checks  # type: ignore[attr-defined,unused-ignore]
    except ImportError as err:
        raise ForgeError(f"the contribution checks are not available ({err})",
                         hint="update commonforge; `contribute --skip-checks` submits without them (CI runs them)") from None
    return run_checks(root, paths, fast=True)


def _files_of(root: Path, base_tree, ref: Ref, rel: str, entry: Entry) -> dict[str, bytes]:
    """``{path: bytes}`` to commit for one entry."""
    from contributions.scaffold import list_recipe

    files = {rel: (root / rel).read_bytes()}
    if isinstance(entry, Dataset):
        from pipelines.sources import path_digest
        from registry.fsutil import resolve_inside

        for s in entry.sources:
            if s.kind != "local" or not s.path:
                continue
            where = resolve_inside(root, s.path, what=f"source {s.id} path")
            if not where.exists():
                raise InputError(f"{ref}: source {s.id}: {s.path} does not exist",
                                 hint="a local source's files are committed with the entry")
            if path_digest(where) != s.sha256:
                raise InputError(f"{ref}: source {s.id}: the files in {s.path} do not match the pinned sha256",
                                 hint=f"pin what is there: python -m pipelines.sources digest {s.path}")
            found = [where] if where.is_file() else sorted(p for p in where.rglob("*") if p.is_file())
            for f in found:
                files[f.relative_to(root).as_posix()] = f.read_bytes()
    elif isinstance(entry, Recipe):
        base_params = base_tree["params.yaml"].data_stream.read().decode("utf-8") \
            if _in_tree(base_tree, "params.yaml") else ""
        listed = list_recipe(base_params, entry)
        if listed != base_params:
            files["params.yaml"] = listed.encode("utf-8")
    return files


def _description(entries: list[tuple[Ref, str, Entry]], files: dict[str, bytes], report: Any | None,
                 cache: Path | None) -> str:
    lines = ["## What this adds", ""]
    for ref, rel, entry in entries:
        title = getattr(entry, "title", "")
        lines.append(f"- **{ref}** (`{rel}`): {title}, license `{getattr(entry, 'license', '?')}`")
        if isinstance(entry, Dataset):
            for s in entry.sources:
                pin = s.path or s.url or f"{s.package}=={s.version} ({s.file})"
                lines.append(f"  - source `{s.id}`: {s.kind} {pin}, license `{s.license}`, "
                             f"{_size_of(s, files, cache)}, sha256 `{s.sha256[:16]}…`")
        if isinstance(entry, Recipe):
            a, t = entry.architecture, entry.training
            lines.append(f"  - {a.num_hidden_layers} layers × {a.hidden_size} hidden, {t.steps} steps × "
                         f"{t.batch_size} × {t.seq_len} tokens, data: {', '.join(entry.datasets)}")
    lines += ["", "## Files", ""]
    lines += [f"- `{p}` ({len(b):,} bytes)" for p, b in sorted(files.items())][:40]
    if len(files) > 40:
        lines.append(f"- … and {len(files) - 40} more")
    lines += ["", "## Checks run before submitting", ""]
    lines.append(report_markdown(report) if report is not None else
                 "Skipped locally (`--skip-checks`); CI runs `commonforge check` on this pull request.")
    lines += ["", "Signed off under the Developer Certificate of Origin (see the commit's `Signed-off-by:`)."]
    return "\n".join(lines) + "\n"


def _size_of(source, files: dict[str, bytes], cache: Path | None) -> str:
    if source.kind == "local" and source.path:
        inside = [b for p, b in files.items() if p == source.path or p.startswith(source.path.rstrip("/") + "/")]
        return f"{sum(len(b) for b in inside):,} bytes in {len(inside)} files"
    if cache is not None:
        from pipelines.sources import cache_path

        path = cache_path(cache, source)
        if path.is_file():
            return f"{path.stat().st_size:,} bytes"
    return "size not known here (not in the download cache)"


def _commit(repo, base, files: dict[str, bytes], message: str, actor) -> Any:
    """A commit of ``base``'s tree plus ``files``, built in a temporary index (see the module docstring)."""
    import io

    from git import Blob, Commit, IndexFile
    from git.index.typ import BaseIndexEntry
    from gitdb import IStream

    with tempfile.TemporaryDirectory(prefix="commonforge-contrib-") as tmp:
        index_path = os.path.join(tmp, "index")
        # GIT_INDEX_FILE: read-tree fills our index file, never the repository's own.
        repo.git.read_tree(base.hexsha, env={"GIT_INDEX_FILE": index_path})
        index = IndexFile(repo, index_path)
        entries = []
        for path, data in sorted(files.items()):
            istream = repo.odb.store(IStream(Blob.type, len(data), io.BytesIO(data)))
            entries.append(BaseIndexEntry((0o100644, istream.binsha, 0, path)))
        index.add(entries, write=False)
        tree = index.write_tree()
    return Commit.create_from_tree(repo, tree, message, parent_commits=[base], head=False,
                                   author=actor, committer=actor)


def contribute(root: Path, entries: Sequence[str], *, push: str | None = None, base: str = "main",
               description_file: Path | None = None, checks: Checks | None = fast_checks,
               cache: Path | None = None) -> Contribution:
    """Check the entries, commit them on a new ``contrib/...`` branch from ``base``, push if asked.

    ``entries`` are entry files (or refs) in ``root``, the first names the branch.
    ``checks=None`` skips the local checks (the description says so). Refuses (InputError,
    nothing changed) a missing identity, an entry that ``base`` already has, a branch that
    exists, an unknown remote; a failed check is a VerificationError carrying the report.
    """
    from git import Actor, BadName, GitCommandError

    root = Path(root).resolve()
    repo = _repo(root)
    if not entries:
        raise InputError("name at least one entry", hint="e.g. commonforge contribute registry/entries/datasets/psalms/1.yaml")
    name, email = identity(repo)
    try:
        base_commit = repo.commit(base)
    except (BadName, ValueError, GitCommandError):
        raise InputError(f"no branch or commit {base!r} to start from",
                         hint="fetch the forge's main branch, or pass --base REF") from None
    named = list(dict.fromkeys(_entry_ref(root, e) for e in entries))
    loaded: list[tuple[Ref, str, Entry]] = []
    from registry.schema import ENTRY_TYPES

    for ref, rel in named:
        if _in_tree(base_commit.tree, rel):
            raise InputError(f"{ref} is already in {base} ({rel}): merged entries are never changed",
                             hint="scaffold a new version instead: `commonforge new ...`")
        entry = load_model(ENTRY_TYPES[ref.kind], root / rel)
        if (entry.name, entry.version) != (ref.name, ref.version):
            raise InputError(f"{rel} declares {entry.ref}, but its path says {ref}", hint="rename the file or fix the entry")
        loaded.append((ref, rel, entry))
    from contributions.scaffold import UNANSWERED, unanswered

    todo = [f"{ref}: {field}" for ref, _, entry in loaded for field in unanswered(entry)]
    if todo:
        raise InputError(f"{len(todo)} {UNANSWERED} question(s) are still unanswered: {'; '.join(todo)}",
                         hint="answer each in the entry file (replace the whole question), then contribute again")
    first = loaded[0][0]
    branch = f"contrib/{first.kind}-{first.name}-{first.version}"
    if branch in [h.name for h in repo.heads]:
        raise InputError(f"branch {branch} already exists",
                         hint=f"a contribution is submitted once; to redo it, delete the branch (git branch -D {branch}) "
                         "or contribute a new version")
    if push is not None and push not in [r.name for r in repo.remotes]:
        raise InputError(f"no git remote {push!r} (remotes: {', '.join(r.name for r in repo.remotes) or 'none'})",
                         hint=f"add it: git remote add {push} URL")
    files: dict[str, bytes] = {}
    for ref, rel, entry in loaded:
        files.update(_files_of(root, base_commit.tree, ref, rel, entry))
    report = checks(root, [rel for _, rel, _ in loaded]) if checks is not None else None
    if report is not None and (getattr(report, "verdict", None) == "failed"
                               or any(r.outcome == "failed" for r in results_of(report))):
        raise VerificationError("the fast checks failed; nothing was committed:\n" + report_markdown(report))

    what = ", ".join(str(r) for r, _, _ in loaded)
    titles = "\n".join(f"- {r}: {getattr(e, 'title', '')}" for r, _, e in loaded)
    message = f"Add {what}\n\n{titles}\n\nSigned-off-by: {name} <{email}>\n"
    description = _description(loaded, files, report, cache)
    actor = Actor(name, email)
    commit = _commit(repo, base_commit, files, message, actor)
    repo.create_head(branch, commit)  # refs/heads/<branch>: new, so nothing is rewritten
    pushed = None
    if push is not None:
        try:
            repo.git.push("--porcelain", push, f"refs/heads/{branch}:refs/heads/{branch}")
        except GitCommandError as err:
            raise ForgeError(f"pushing {branch} to {push} failed: {err.stderr.strip() or err}",
                             hint=f"the branch is committed locally; push it with `git push {push} {branch}`") from None
        pushed = push
    path = description_file or Path(repo.git_dir) / "commonforge" / f"{branch.replace('/', '-')}.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(description, encoding="utf-8")
    left_out = tuple(p for p in _dirty(repo) if p not in files)
    return Contribution(branch, commit.hexsha, base_commit.hexsha, tuple(str(r) for r, _, _ in loaded),
                        tuple(sorted(files)), message, description, path, pushed, left_out)


def _dirty(repo) -> list[str]:
    """Modified, staged and untracked paths of the working tree (what stayed out)."""
    out = repo.git.status("--porcelain", "--untracked-files=all", "-z")
    return sorted({item[3:] for item in out.split("\x00") if len(item) > 3})
