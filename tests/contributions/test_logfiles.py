"""contributions.logfiles: a pull request that smuggles in the transparency log's files fails ``commonforge check``.

The log files are real: a LogOperator appends 300 statements (full and partial hash tiles at two
levels, entry bundles, the signed checkpoint), a ClientState records it, note.generate_key makes a
signing key. Each attempt is a real branch of a small git repository of this module's own (no
forge copy: the log check needs none), checked by :func:`contributions.check.check`.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import git
import pytest

from contributions.check import check as run_check_command
from contributions.check import run_checks, to_markdown, to_text
from tests.contributions.gitrepos import commit, repo, write
from trust.log import note
from trust.log.client import ClientState
from trust.log.operator import LogOperator

ORIGIN = "forge.example/log"
LOG_FILES = ("checkpoint", "tile/0/000", "tile/0/001.p/44", "tile/1/000.p/1", "tile/entries/000",
             "tile/entries/001.p/44")


@pytest.fixture(scope="module")
def log(tmp_path_factory) -> dict[str, bytes]:
    """A real log's files by their tlog-tiles path, its client state and its signing key."""
    base = tmp_path_factory.mktemp("log")
    signer_text, _ = note.generate_key("forge.example/log")
    signer = note.parse_signer(signer_text)
    op = LogOperator(base / "log", ORIGIN, signer)
    op.append([f"statement {i}".encode() for i in range(300)])
    state = base / "client" / "state.json"
    ClientState(state).accept(op.checkpoint_note(), signer.verifier())
    files = {rel: (base / "log" / rel).read_bytes() for rel in LOG_FILES}
    return {**files, "state.json": state.read_bytes(), "key": (signer_text + "\n").encode()}


@pytest.fixture(scope="module")
def forge(tmp_path_factory) -> Path:
    """A git repository with one commit on main: a README and a recipe folder."""
    root = tmp_path_factory.mktemp("forge") / "forge"
    root.mkdir()
    git.Repo.init(root, initial_branch="main")
    write(root, "README.md", "# the forge\n")
    write(root, "recipes/tiny/train.yaml", "steps: 10\n")
    commit(root, "the forge", "README.md", "recipes")
    return root


_branches = iter(range(1000))


def pull_request(root: Path, files: dict[str, bytes], *, start: str = "main") -> str:
    """A branch from ``start`` that adds (or overwrites) ``files``; returns its name, main checked out again."""
    name = f"contrib/{next(_branches)}"
    r = repo(root)
    r.git.checkout("-q", "-b", name, start)
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    commit(root, "my contribution", *files)
    r.git.checkout("-q", "main")
    return name


def log_changes(report) -> dict[str, str]:
    return {c.path: c.reason for c in report.changes if c.kind == "log-file"}


def assert_refused(report, path: str, what: str) -> None:
    assert report.exit_code == 1 and report.verdict == "failed"
    (entry,) = [e for e in report.entries if e.change.path == path]
    (result,) = entry.results
    assert (entry.change.kind, result.check, result.outcome) == ("log-file", "log files", "failed")
    (problem,) = result.problems
    assert what in problem.message and "operated, not merged" in problem.message
    assert problem.path == path and "commonforge log append" in problem.fix


@pytest.mark.parametrize(("source", "path", "what"), [
    ("checkpoint", "checkpoint", f"a signed checkpoint of the transparency log (origin '{ORIGIN}', tree size 300)"),
    ("checkpoint", "docs/checkpoint", "a signed checkpoint"),  # renamed to look like documentation
    ("checkpoint", "docs/release-notes.txt", "a signed checkpoint"),  # whatever its name
    ("tile/0/000", "tile/0/000", "a hash tile (level 0)"),
    ("tile/0/001.p/44", "site/log/tile/0/001.p/44", "a hash tile (level 0)"),
    ("tile/1/000.p/1", "tile/1/000.p/1", "a hash tile (level 1)"),
    ("tile/entries/000", "mirror/tile/entries/000", "an entry bundle"),
    ("tile/entries/001.p/44", "tile/entries/001.p/44", "an entry bundle"),
    ("state.json", "ops/state.json", "state file (commonforge-log-state/1)"),
    ("state.json", "recipes/tiny/config.json", "state file"),
])
def test_each_log_file_a_pull_request_adds_fails_check(forge, log, source, path, what):
    report = run_check_command(forge, "main", pull_request(forge, {path: log[source]}), fast=True)
    assert_refused(report, path, what)
    assert "commonforge log append" in to_markdown(report) and "operated, not merged" in to_text(report)


def test_a_note_signing_key_is_refused_wherever_it_is_hidden(forge, log):
    key = log["key"].decode().strip()
    code = f'"""Deployment helper."""\n\nLOG_KEY = "{key}"  # for the cron job\n'.encode()
    branch = pull_request(forge, {"log.key": log["key"], "tools/deploy.py": code})
    report = run_check_command(forge, "main", branch, fast=True)
    for path in ("log.key", "tools/deploy.py"):
        assert_refused(report, path, "a note signing key (PRIVATE+KEY+forge.example/log+")
        (entry,) = [e for e in report.entries if e.change.path == path]
        assert "compromised" in entry.results[0].problems[0].fix  # a published key is burnt, not just removed


def test_a_whole_log_directory_and_an_edited_file_are_all_refused(forge, log):
    files = {f"published/{rel}": log[rel] for rel in LOG_FILES}
    crlf = log["checkpoint"].replace(b"\n", b"\r\n")  # a checkpoint "reformatted" to slip past an exact parser
    branch = pull_request(forge, {**files, "README.md": crlf})
    report = run_check_command(forge, "main", branch, fast=True)
    assert set(log_changes(report)) == {*files, "README.md"}
    (readme,) = [c for c in report.changes if c.path == "README.md"]
    assert readme.status == "modified"
    assert report.exit_code == 1 and all(e.verdict == "failed" for e in report.entries)


def test_ordinary_files_that_merely_resemble_log_files_are_not_flagged(forge, log):
    """Recognised by content and tlog-tiles shape, not by a word in the name: none of these is a log file."""
    body = log["checkpoint"].decode()
    files = {
        # a document about checkpoints that shows one in a code block and the state format in prose
        "docs/checkpointing.md": (f"# Checkpointing\n\nA checkpoint looks like:\n\n```\n{body}```\n\n"
                                  'The state file is `{"format": "commonforge-log-state/1", "logs": {}}`.\n'
                                  "A signer key reads PRIVATE+KEY+<name>+<hash>+<base64>.\n").encode(),
        # a training checkpoint marker in a recipe, named checkpoint but nothing of the log's
        "recipes/tiny/checkpoint": b"step: 1000\nloss: 2.31\n",
        "recipes/tiny/weights/checkpoint": bytes(range(256)) * 4,  # binary
        # paths that mention tiles without the tlog-tiles shape
        "docs/tile/overview.md": b"# Tiles\n",
        "tiles/0/000": b"a map tile\n",
        "tile/0/readme.txt": b"not an index\n",
        # a JSON of another format, and the signed-note spec's published example key (public test vector)
        "ops/state.json": b'{"format": "something-else/1", "logs": {}}\n',
        "tests/vectors.py": b'KEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"\n',
    }
    report = run_check_command(forge, "main", pull_request(forge, files), fast=True)
    assert log_changes(report) == {}
    assert report.exit_code == 0 and report.verdict == "needs-review"  # code and docs: a maintainer's review
    assert {c.path for c in report.changes} == set(files) and {c.kind for c in report.changes} == {"code"}


def test_removing_a_committed_log_file_is_not_refused(forge, log):
    """Cleaning up a log file that once slipped in is welcome; only adding or changing one fails."""
    smuggled = pull_request(forge, {"checkpoint": log["checkpoint"]})
    r = repo(forge)
    r.git.checkout("-q", "-b", "contrib/cleanup", smuggled)
    r.git.rm("-q", "checkpoint")
    r.git.commit("-q", "-m", "remove the checkpoint")
    r.git.checkout("-q", "main")
    report = run_check_command(forge, smuggled, "contrib/cleanup", fast=True)
    (change,) = report.changes
    assert (change.path, change.status, change.kind) == ("checkpoint", "deleted", "code")
    assert report.exit_code == 0


def test_the_pre_commit_check_of_files_refuses_a_log_file_too(tmp_path, log):
    """``run_checks`` (the hook, ``contribute``) reads the working tree's files, not a diff."""
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'x'\n", encoding="utf-8")
    shutil.copyfile(tmp_path / "pyproject.toml", tmp_path / "notes.txt")
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "checkpoint").write_bytes(log["checkpoint"])
    report = run_checks(tmp_path, ["docs/checkpoint", "notes.txt"], fast=True)
    assert_refused(report, "docs/checkpoint", "a signed checkpoint")
    assert log_changes(report).keys() == {"docs/checkpoint"}
