"""contributions.diff: every classification, on real git repositories (a bare upstream, a clone)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from commonforge.errors import InputError
from contributions.diff import classify, classify_path, params_change
from tests.contributions.gitrepos import branch, commit, entry_path, entry_text, repo, seed_forge, upstream_and_clone, write

TINY = "registry/entries/datasets/tiny-local/1.yaml"


@pytest.fixture(scope="module")
def seed(tmp_path_factory) -> Path:
    return seed_forge(tmp_path_factory.mktemp("diff-seed") / "forge")


@pytest.fixture
def clone(seed, tmp_path) -> Path:
    _, clone = upstream_and_clone(seed, tmp_path)
    branch(clone, "contrib/test")
    return clone


def only(found, path: str):
    (change,) = [c for c in found.changes if c.path == path]
    return change


def test_new_dataset_is_checked(clone):
    write(clone, entry_path("dataset", "psalms"), entry_text("dataset", "psalms"))
    commit(clone, "add psalms", "registry")
    found = classify(clone)
    c = only(found, entry_path("dataset", "psalms"))
    assert (c.kind, c.verdict, c.status, c.ref) == ("dataset", "check", "added", "dataset/psalms@1")
    assert found.merge_base == repo(clone).commit("main").hexsha
    assert len(found.changes) == 1


def test_new_recipe_version_names_the_versions_before_it(clone):
    write(clone, entry_path("recipe", "forge-tiny", "2"), entry_text("recipe", "forge-tiny", "2"))
    commit(clone, "forge-tiny 2", "registry")
    c = only(classify(clone), entry_path("recipe", "forge-tiny", "2"))
    assert (c.kind, c.verdict, c.ref) == ("recipe", "check", "recipe/forge-tiny@2")
    assert "new recipe version recipe/forge-tiny@2 (after forge-tiny@1)" in c.reason


def test_a_change_to_a_merged_entry_is_refused_with_the_next_version(clone):
    path = clone / TINY
    path.write_text(path.read_text().replace("Tiny local sample", "A tiny local sample"))
    commit(clone, "edit", TINY)
    c = only(classify(clone), TINY)
    assert (c.kind, c.verdict, c.status) == ("entry-change", "refused", "modified")
    assert "immutable" in c.reason and "registry/entries/datasets/tiny-local/2.yaml" in c.fix


def test_deletions_are_refused_in_the_registry_and_reviewed_elsewhere(clone):
    (clone / TINY).unlink()
    (clone / "pyproject.toml").unlink()
    commit(clone, "delete", TINY, "pyproject.toml")
    found = classify(clone)
    assert (only(found, TINY).kind, only(found, TINY).verdict) == ("deletion", "refused")
    assert (only(found, "pyproject.toml").kind, only(found, "pyproject.toml").verdict) == ("code", "review")


def test_code_outside_the_registry_needs_review_and_unknown_entry_files_are_unknown(clone):
    write(clone, "pipelines/new_stage.py", "print('hi')\n")
    write(clone, "registry/entries/datasets/tiny-local/notes.txt", "a note\n")
    write(clone, "registry/entries/recipes/Bad_Name/1.yaml", "name: x\n")
    commit(clone, "mixed", "pipelines", "registry")
    found = classify(clone)
    code = only(found, "pipelines/new_stage.py")
    assert (code.kind, code.verdict) == ("code", "review") and "code review" in code.reason
    for path in ("registry/entries/datasets/tiny-local/notes.txt", "registry/entries/recipes/Bad_Name/1.yaml"):
        assert (only(found, path).kind, only(found, path).verdict) == ("unknown", "unknown")


def test_statements_records_releases_and_local_sources(clone):
    st = "registry/entries/models/forge-tiny/1.0.0.statements/approval-abc.json"
    rel = "registry/entries/models/forge-tiny/2.0.0.yaml"
    rec = "registry/entries/models/forge-tiny/2.0.0.provenance.yaml"
    src = "registry/local_sources/psalms/psalm_1.txt"
    for p in (st, rel, rec, src):
        write(clone, p, "{}\n")
    commit(clone, "beside", "registry")
    found = classify(clone)
    assert (only(found, st).kind, only(found, st).ref) == ("statement", "model/forge-tiny@1.0.0")
    assert (only(found, rel).kind, only(found, rel).ref) == ("release", "model/forge-tiny@2.0.0")
    assert only(found, rec).kind == "record"
    assert (only(found, src).kind, only(found, src).verdict) == ("local-source", "check")


def test_a_symlink_in_the_registry_is_refused(clone):
    target = clone / "registry/entries/datasets/linked/1.yaml"
    target.parent.mkdir(parents=True)
    os.symlink("../tiny-local/1.yaml", target)
    commit(clone, "link", "registry")
    c = only(classify(clone), "registry/entries/datasets/linked/1.yaml")
    assert (c.kind, c.verdict) == ("symlink", "refused")


def test_params_listing_the_new_recipe_is_checked_anything_else_reviewed(clone):
    write(clone, entry_path("recipe", "forge-mini"), entry_text("recipe", "forge-mini"))
    params = clone / "params.yaml"
    base = params.read_text()
    params.write_text(base.replace("recipes:\n", "recipes:\n  forge-mini: {version: 1}\n").replace(
        "training_data:\n", "training_data:\n  forge-mini.tiny-local: {recipe: forge-mini, dataset: tiny-local}\n"))
    commit(clone, "forge-mini", "registry", "params.yaml")
    c = only(classify(clone), "params.yaml")
    assert (c.kind, c.verdict) == ("params", "check")
    assert "recipes.forge-mini" in c.reason and "training_data.forge-mini.tiny-local" in c.reason

    params.write_text(params.read_text().replace("forge-small: {version: 1}", "forge-small: {version: 7}"))
    commit(clone, "bump what is built", "params.yaml")
    c = only(classify(clone), "params.yaml")
    assert (c.kind, c.verdict) == ("params", "review") and "recipes.forge-small" in c.reason


def test_params_change_rules_in_isolation():
    base = "datasets:\n  a: {version: 1}\nrecipes:\n  r: {version: 1}\ntraining_data: {}\n"
    assert params_change(base, base + "# a comment\n", [])[0] == "check"
    assert params_change(base, base.replace("  a: {version: 1}\n", ""), [])[0] == "review"  # removal
    assert params_change(base, base + "stages: [x]\n", [])[0] == "review"  # another section
    assert params_change(None, base, [])[0] == "review"  # a new params.yaml
    new = classify_path(entry_path("dataset", "b"))
    assert params_change(base, base.replace("datasets:\n", "datasets:\n  b: {version: 1}\n"), [new])[0] == "check"
    assert params_change(base, base.replace("datasets:\n", "datasets:\n  b: {version: 2}\n"), [new])[0] == "review"


def test_only_the_contribution_is_diffed_when_main_moves_on(clone, tmp_path):
    write(clone, entry_path("dataset", "psalms"), entry_text("dataset", "psalms"))
    commit(clone, "psalms", "registry")
    r = repo(clone)
    r.git.checkout("-q", "main")
    write(clone, entry_path("dataset", "hymns"), entry_text("dataset", "hymns"))
    commit(clone, "main moves on", "registry")
    found = classify(clone, "main", "contrib/test")
    assert [c.path for c in found.changes] == [entry_path("dataset", "psalms")]
    assert found.base == r.commit("main").hexsha and found.merge_base != found.base


def test_bad_refs_and_places_are_input_errors(clone, tmp_path):
    with pytest.raises(InputError, match="--base 'no-such-branch' names no commit"):
        classify(clone, "no-such-branch")
    with pytest.raises(InputError, match="--head"):
        classify(clone, None, "deadbeef" * 5)
    with pytest.raises(InputError, match="not a git repository"):
        classify(tmp_path / "nowhere")
    r = repo(clone)
    r.git.branch("-m", "main", "trunk")
    r.git.branch("-D", "-r", "origin/main")
    with pytest.raises(InputError, match="no main branch") as err:
        classify(clone)
    assert "--base" in (err.value.hint or "")
