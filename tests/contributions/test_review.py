"""``commonforge review BRANCH`` (contributions.review): what a contribution changes, from git alone."""

from __future__ import annotations

import json

import pytest
import yaml

from commonforge.errors import InputError
from contributions.report import CheckResult
from contributions.review import FieldChange, differences, flatten, review
from contributions.scaffold import new_dataset, new_recipe
from contributions.submit import contribute
from tests.contributions.test_submit import Recorder, answer


def test_a_dataset_branch_shows_its_datasheet_and_source_statistics(contrib_repos, contrib_psalms):
    clone = contrib_repos.clone
    new_dataset(clone, "psalms", ["local:registry/local_sources/psalms"], license="CC0-1.0", cache=clone / ".c")
    answer(clone / "registry/entries/datasets/psalms/1.yaml")
    made = contribute(clone, ["dataset/psalms@1"], checks=Recorder())
    r = review(clone, made.branch)
    assert r.head_commit == made.commit and r.base_commit == made.base and r.commits == ["Add dataset/psalms@1"]
    (entry,) = r.entries
    assert (entry.change, entry.ref, entry.kind, entry.unanswered, entry.problems) == (
        "added", "dataset/psalms@1", "dataset", [], [])
    assert set(entry.datasheet) == {"motivation", "composition", "collection", "preprocessing", "uses",
                                    "limitations", "maintenance"}
    (source,) = entry.sources
    txt = sum(f.stat().st_size for f in contrib_psalms.glob("*.txt"))
    assert (source.files, source.bytes, source.include) == (2, txt, ["*.txt"])  # the README is not included
    # Local source files are part of the entry, not code to review.
    assert r.other_files == []
    md = r.markdown()
    assert "## added dataset/psalms@1" in md and "### Datasheet" in md and f"2 files, {txt:,} bytes" in md
    assert json.loads(r.json())["entries"][0]["sources"][0]["files"] == 2


def test_a_recipe_branch_shows_its_differences_from_the_parent_field_by_field(contrib_repos):
    clone = contrib_repos.clone
    path = new_recipe(clone, "forge-tiny", parent="recipe/forge-tiny@1").path
    answer(path)
    data = yaml.safe_load(path.read_text())
    data["architecture"]["num_hidden_layers"] = 4
    data["evaluation"]["tasks"]["arc_easy"] = 8
    assert data["parent"] == "recipe/forge-tiny@1"  # new recipe records where it came from
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    made = contribute(clone, [str(path)], checks=Recorder())
    r = review(clone, made.branch, checks=Recorder(CheckResult.passed("schema", "valid")))
    (entry,) = r.entries
    assert entry.parent == "recipe/forge-tiny@1" and r.params_changed
    changed = {c.field: (c.old, c.new) for c in entry.differences}
    assert changed.pop("architecture.num_hidden_layers") == (2, 4)
    assert changed.pop("evaluation.tasks.arc_easy") == (4, 8)
    assert set(changed) == {"description"}  # and nothing else
    assert "architecture.num_hidden_layers: 2 → 4" in r.text()
    assert r.checks is not None and r.checks[0]["outcome"] == "passed"
    assert "| schema | passed | valid |" in r.markdown()
    assert len(contrib_repos.repo().git.worktree("list").splitlines()) == 1  # the review's worktree is gone


def test_changes_to_merged_entries_and_code_are_called_out(contrib_repos):
    repo = contrib_repos.repo()
    clone = contrib_repos.clone
    repo.git.checkout("-q", "-b", "contrib/sneaky")
    entry = clone / "registry/entries/recipes/forge-tiny/1.yaml"
    entry.write_text(entry.read_text().replace("steps: 120", "steps: 121"))
    (clone / "tool.py").write_text("print('hi')\n")
    repo.git.add("--all")
    repo.git.commit("-q", "-m", "tweak")
    repo.git.checkout("-q", "main")
    r = review(clone, "contrib/sneaky")
    (e,) = r.entries
    assert (e.change, e.ref) == ("modified", "recipe/forge-tiny@1")
    assert "never changed" in e.problems[0]
    assert r.other_files == ["tool.py"]
    assert "Needs a maintainer's code review" in r.markdown()


def test_flatten_and_differences_name_nested_fields():
    assert flatten({"a": {"b": 1, "c": [1, {"d": 2}]}, "e": []}) == {"a.b": 1, "a.c[0]": 1, "a.c[1].d": 2, "e": []}
    assert differences({"a": {"b": 1}, "gone": 1}, {"a": {"b": 2}, "new": 3}) == [
        FieldChange("a.b", 1, 2), FieldChange("new", "(none)", 3), FieldChange("gone", 1, "(none)")]


def test_the_commands_parse_to_their_functions():
    from commonforge.cli import build_parser

    parser = build_parser()
    for argv, target in (
        (["new", "dataset", "psalms", "--source", "local:x", "--license", "CC0-1.0"], "cmd_new_dataset"),
        (["new", "recipe", "forge-wide", "--from", "recipe/forge-tiny@1"], "cmd_new_recipe"),
        (["contribute", "dataset/psalms@1", "--push", "upstream", "--description-file", "pr.md"], "cmd_contribute"),
        (["review", "contrib/dataset-psalms-1", "--format", "json"], "cmd_review"),
    ):
        assert parser.parse_args(argv)._target == ("commonforge.cli.contrib_cmds", target)


def test_the_review_command_prints_json_for_a_pushed_contribution(contrib_repos, contrib_psalms):
    import os
    import subprocess

    from tests.helpers import VENV_BIN

    clone = contrib_repos.clone
    new_dataset(clone, "psalms", ["local:registry/local_sources/psalms"], license="CC0-1.0", cache=clone / ".c")
    answer(clone / "registry/entries/datasets/psalms/1.yaml")
    contribute(clone, ["dataset/psalms@1"], push="upstream", checks=Recorder())
    contrib_repos.repo().git.fetch("upstream")
    env = {**os.environ, "COMMONFORGE_ROOT": str(clone)}
    proc = subprocess.run([str(VENV_BIN / "commonforge"), "review", "upstream/contrib/dataset-psalms-1", "--format", "json"],
                          cwd=clone, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert [e["ref"] for e in data["entries"]] == ["dataset/psalms@1"] and data["other_files"] == []
    with pytest.raises(InputError, match="unknown branch"):
        review(clone, "contrib/nothing")
