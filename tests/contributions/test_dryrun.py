"""The dry-run build check, for real: ``dvc repro`` of a cut recipe in a temporary worktree.

A dry run that passes is built once per test run by the contribution flow (tests/contributions/
test_flow.py: the recipe a contributor pushes, checked by the CI clone). Here: a diverging recipe
built for real (into a DVC cache the test gives it), a dataset's dry run stopped by its budget
seconds in, and what is refused or not built. Every test checks that the checkout it was given is
as it was: same git status, one worktree, no DVC cache or build outputs of its own.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from commonforge.errors import InputError
from contributions.dryrun import check_dry_run
from contributions.report import CheckInput, CheckResult
from tests.helpers import REPO, git

TINY = REPO / "registry" / "entries" / "recipes" / "forge-tiny" / "1.yaml"
NEW = "registry/entries/recipes/tiny-new/1.yaml"
HOT = "registry/entries/recipes/tiny-hot/1.yaml"
STEPS = 3
# What the forge's build needs of the project; releases and their cards are left out (their
# artifacts are not in this test's store), and so is anything built.
LEFT_OUT = ("build/", "registry/entries/models/", "model_cards/published/")


def _recipe(name: str, **training) -> str:
    data = yaml.safe_load(TINY.read_text(encoding="utf-8"))
    data["name"] = name
    data["title"] = f"{name}, a contribution derived from forge-tiny"
    data["training"].update(training)
    return yaml.safe_dump(data, sort_keys=False)


def _state(root: Path) -> dict:
    """What a check must never change in the checkout it is given."""
    return {
        "status": git(root, "status", "--porcelain", "--untracked-files=all", "--ignored"),
        "head": git(root, "rev-parse", "HEAD"),
        "worktrees": git(root, "worktree", "list", "--porcelain").count("worktree "),
        "recipe": (root / NEW).read_bytes(),
        "params": (root / "params.yaml").read_bytes(),
        "dvc": sorted(p.name for p in (root / ".dvc").iterdir()),
    }


@dataclass
class DryForge:
    root: Path  # the contributor's checkout: the project with two new recipes committed
    cache: Path  # the DVC cache the diverging dry run is given (never root/.dvc/cache)
    before: dict  # _state(root) before any dry run


def _check(root: Path, ref: str, path: str, **options) -> CheckResult:
    return check_dry_run(CheckInput(root=root, ref=ref, path=path, options={"steps": STEPS, **options}))


@pytest.fixture(scope="module")
def dry_forge(tmp_path_factory) -> DryForge:
    base = tmp_path_factory.mktemp("dryrun")
    root = base / "forge"
    files = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout.decode()
    for rel in filter(None, files.split("\x00")):
        src = REPO / rel
        if rel.startswith(LEFT_OUT) or not src.is_file():
            continue
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, root / rel, follow_symlinks=False)
    for rel, text in ((NEW, _recipe("tiny-new")), (HOT, _recipe("tiny-hot", learning_rate=1.0e6))):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text, encoding="utf-8")
    git(root, "init", "-q", "-b", "main")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "the forge, and two recipe contributions")
    return DryForge(root, base / "dvc-cache", _state(root))


def _running_in_group(pgid: int) -> list[str]:
    """The processes of group ``pgid`` that are not zombies (from /proc: Linux, like CI)."""
    running = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        state, _ppid, pgrp = text.rpartition(")")[2].split()[:3]
        if int(pgrp) == pgid and state != "Z":
            running.append(text)
    return running


def _assert_untouched(forge: DryForge, result: CheckResult) -> None:
    assert _state(forge.root) == forge.before
    assert not (forge.root / ".dvc" / "cache").exists()
    assert not (forge.root / "build").exists()
    assert not Path(result.details["worktree"]).exists()


def test_a_diverging_recipe_fails_with_the_loss_that_diverged(dry_forge: DryForge) -> None:
    r = _check(dry_forge.root, "recipe/tiny-hot@1", HOT, dvc_cache=str(dry_forge.cache))
    assert r.outcome == "failed", r.as_dict()
    (problem,) = r.problems
    assert problem.message.startswith("training diverged: the loss is nan at step")
    assert "learning_rate 1e+06" in problem.message and "lower training.learning_rate" in (problem.fix or "")
    assert problem.path == HOT
    assert any(v == "nan" for _, v in r.details["loss_curve"])
    assert r.details["steps"] == STEPS and r.details["recipe_steps"] == 120  # cut from the recipe's 120
    # The recipe's own stages and the data stages it needs, and nothing else (params.yaml lists just them).
    assert r.details["stages"] == ["fetch@tiny-local", "prepare@tiny-local", "select@tiny-hot.tiny-local",
                                   "tokenizer@tiny-hot", "train@tiny-hot"]
    # Its DVC cache was the one it was given: the outputs are in there, not in the checkout.
    assert any(p.is_file() for p in (dry_forge.cache / "files").rglob("*"))
    _assert_untouched(dry_forge, r)


def test_a_build_past_its_budget_is_killed(dry_forge: DryForge) -> None:
    # A new dataset's dry run (forge-tiny over it), with a budget it cannot meet.
    started = time.perf_counter()
    r = _check(dry_forge.root, "dataset/tiny-local@1", "registry/entries/datasets/tiny-local/1.yaml", budget_s=3)
    assert time.perf_counter() - started < 20
    assert r.outcome == "failed", r.as_dict()
    assert r.summary.startswith("over budget: stopped after")
    assert "ran past its budget of 3 s and was stopped" in r.problems[0].message
    assert r.details["recipe"] == "recipe/dry-run@1" and r.details["target"] == "train@dry-run"
    assert r.details["killed"] is True
    assert _running_in_group(r.details["process_group"]) == []  # nothing the build started still runs
    _assert_untouched(dry_forge, r)


def test_what_is_not_built(dry_forge: DryForge, tmp_path: Path) -> None:
    # A clone of the contributor's checkout with a recipe that does not load, not yet committed:
    # the dry run reads it from the working tree (overlay), finds it broken and leaves it to the schema check.
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", str(dry_forge.root), str(clone))
    broken = clone / "registry" / "entries" / "recipes" / "tiny-broken" / "1.yaml"
    broken.parent.mkdir(parents=True)
    broken.write_text(_recipe("tiny-broken", steps=0), encoding="utf-8")
    status = git(clone, "status", "--porcelain", "--untracked-files=all")
    r = _check(clone, "recipe/tiny-broken@1", "registry/entries/recipes/tiny-broken/1.yaml")
    assert r.outcome == "skipped" and "does not load" in r.summary and "schema check" in r.summary
    assert git(clone, "status", "--porcelain", "--untracked-files=all") == status
    assert git(clone, "worktree", "list", "--porcelain").count("worktree ") == 1

    assert _check(clone, "model/forge-tiny@1.0.0", "x").outcome == "skipped"
    assert _check(clone, "recipe/tiny-new@1", NEW, dry_run=False).outcome == "skipped"


@pytest.mark.parametrize("options", [{"budget_s": 0}, {"budget_s": "soon"}, {"steps": -1}])
def test_bad_options_are_bad_input(dry_forge: DryForge, options: dict) -> None:
    with pytest.raises(InputError, match="must be a positive number"):
        _check(dry_forge.root, "recipe/tiny-new@1", NEW, **options)


def test_the_checkouts_own_dvc_cache_is_refused(dry_forge: DryForge) -> None:
    with pytest.raises(InputError, match="the checkout's own DVC cache"):
        _check(dry_forge.root, "recipe/tiny-new@1", NEW, dvc_cache=str(dry_forge.root / ".dvc" / "cache"))
    assert not (dry_forge.root / ".dvc" / "cache").exists()


def test_a_folder_that_is_not_a_git_checkout_is_bad_input(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not a git repository"):
        _check(tmp_path, "recipe/tiny-new@1", NEW)
