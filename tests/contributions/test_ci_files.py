"""The CI workflow and the pre-commit hook: they parse, and the commands they run are the ones tested here.

No hosted runner can be reached from here, so the workflow is checked by reading it: its trigger,
checkout and venv steps, and its check step, whose script is run for real (bash, in a real
clone, with GITHUB_STEP_SUMMARY pointing at a file) and whose ``commonforge check`` argv is
parsed by the real CLI parser. The hook's entry is run on real files the way pre-commit runs it.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
from pathlib import Path

import pytest
import yaml

from commonforge.cli import build_parser
from tests.contributions.gitrepos import branch, commit, entry_path, entry_text, repo, seed_forge, upstream_and_clone, write
from tests.helpers import REPO, VENV_BIN, forge_env

WORKFLOW = REPO / ".github" / "workflows" / "contributions.yml"
HOOKS = REPO / ".pre-commit-hooks.yaml"
TINY = "registry/entries/datasets/tiny-local/1.yaml"


@pytest.fixture(scope="module")
def seed(tmp_path_factory) -> Path:
    return seed_forge(tmp_path_factory.mktemp("ci-seed") / "forge")


@pytest.fixture
def clone(seed, tmp_path) -> Path:
    _, clone = upstream_and_clone(seed, tmp_path)
    branch(clone, "contrib/test")
    (clone / ".venv").symlink_to(VENV_BIN.parent)  # the workflow runs .venv/bin/commonforge from the checkout
    return clone


def workflow() -> dict:
    return yaml.safe_load(WORKFLOW.read_text(encoding="utf-8"))


def steps() -> list[dict]:
    (job,) = workflow()["jobs"].values()
    return job["steps"]


def check_step() -> dict:
    (step,) = [s for s in steps() if "commonforge check" in s.get("run", "")]
    return step


def check_argv(step: dict) -> list[str]:
    (line,) = [ln for ln in step["run"].splitlines() if "commonforge check" in ln]
    return shlex.split(line)


def env(clone: Path, **extra: str) -> dict[str, str]:
    e = forge_env(clone.parent, GIT_CONFIG_GLOBAL=os.devnull, GIT_CONFIG_NOSYSTEM="1", **extra)
    e.pop("GITHUB_STEP_SUMMARY", None)
    e.update(extra)
    return e


def test_the_workflow_runs_on_registry_pull_requests_with_the_whole_history():
    wf = workflow()
    on = wf.get("on", wf.get(True))  # YAML 1.1 reads a bare `on` key as true
    assert on == {"pull_request": {"paths": ["registry/entries/**", "params.yaml"]}}
    assert wf["permissions"] == {"contents": "read"}  # untrusted pull requests get no write token
    (checkout,) = [s for s in steps() if s.get("uses", "").startswith("actions/checkout@")]
    assert checkout["with"]["fetch-depth"] == 0
    runs = [s["run"] for s in steps() if "run" in s]
    assert runs[0] == "make venv"  # the README's way on a fresh machine
    assert re.search(r"(?m)^venv: \$\(STAMP\)$", (REPO / "Makefile").read_text())
    assert "--prefetch" in runs[1] and "--prefetch" in (REPO / "pipelines" / "evaluate.py").read_text()


def test_the_check_step_is_a_real_commonforge_check_command():
    step = check_step()
    argv = check_argv(step)
    assert argv[:2] == [".venv/bin/commonforge", "check"]
    assert step["env"] == {"BASE_SHA": "${{ github.event.pull_request.base.sha }}"}
    args = build_parser().parse_args(argv[1:])
    assert args._target == ("commonforge.cli.check_cmds", "cmd_check")
    assert (args.base, args.head, args.format, args.fast, str(args.output), args.paths) == (
        "$BASE_SHA", "HEAD", "markdown", False, "report.md", [])
    assert 'cat report.md >> "$GITHUB_STEP_SUMMARY"' in step["run"] and "exit $status" in step["run"]


def run_step(clone: Path, summary: Path) -> subprocess.CompletedProcess:
    """The check step's script as a runner runs it: bash, in the checkout, with its env and a job summary."""
    base = repo(clone).commit("main").hexsha
    return subprocess.run(["bash", "-e", "-c", check_step()["run"]], cwd=clone, text=True, capture_output=True,
                          env=env(clone, BASE_SHA=base, GITHUB_STEP_SUMMARY=str(summary)), timeout=120)


def test_the_check_step_writes_the_summary_and_keeps_the_exit_code(clone, tmp_path):
    # The real script on real commits: a refused change fails the job, and the summary is still written.
    (clone / TINY).write_text((clone / TINY).read_text() + "# edited after merge\n")
    commit(clone, "edit a merged entry", TINY)
    summary = tmp_path / "summary.md"
    failed = run_step(clone, summary)
    assert failed.returncode == 1, failed.stderr
    text = summary.read_text()
    assert text.startswith("## ❌ commonforge check: failed") and f"`{TINY}` (modified)" in text
    assert (clone / "report.md").read_text() == text

    repo(clone).git.reset("-q", "--hard", "HEAD~1")
    write(clone, "docs/notes.md", "a note\n")
    commit(clone, "docs only", "docs")
    summary.unlink()
    reviewed = run_step(clone, summary)
    assert reviewed.returncode == 0, reviewed.stderr
    assert summary.read_text().startswith("## ⚠️ commonforge check: needs-review")


def hook() -> dict:
    (h,) = yaml.safe_load(HOOKS.read_text(encoding="utf-8"))
    return h


def test_the_pre_commit_hook_runs_the_fast_checks_on_registry_files():
    h = hook()
    assert (h["id"], h["language"], h["pass_filenames"]) == ("commonforge-check", "unsupported", True)
    files = re.compile(h["files"])
    assert files.search("registry/entries/datasets/psalms/1.yaml") and files.search("params.yaml")
    assert not files.search("README.md") and not files.search("registry/schema.py")
    argv = shlex.split(h["entry"])
    assert argv[0] == "commonforge"
    args = build_parser().parse_args([*argv[1:], "registry/entries/datasets/psalms/1.yaml"])
    assert args._target == ("commonforge.cli.check_cmds", "cmd_check")
    assert (args.fast, args.paths, args.base, args.head) == (True, ["registry/entries/datasets/psalms/1.yaml"], None, None)


def test_the_hook_entry_passes_a_good_entry_and_fails_a_broken_one(clone):
    # As pre-commit runs it: the entry, then the staged files' paths, in the repository's root.
    good = entry_path("dataset", "psalms")
    write(clone, good, entry_text("dataset", "psalms"))
    bad = entry_path("recipe", "forge-odd")
    write(clone, bad, entry_text("recipe", "forge-odd", **{"architecture.num_attention_heads": 3}))
    argv = shlex.split(hook()["entry"])
    run_env = env(clone, PATH=f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}")
    ok = subprocess.run([*argv, good, "params.yaml"], cwd=clone, env=run_env, text=True, capture_output=True, timeout=120)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "✓ schema" in ok.stdout
    broken = subprocess.run([*argv, good, bad], cwd=clone, env=run_env, text=True, capture_output=True, timeout=120)
    assert broken.returncode == 1
    assert re.search(rf"{re.escape(bad)}:\d+: architecture: hidden_size 128 is not divisible by num_attention_heads 3",
                     broken.stdout)
