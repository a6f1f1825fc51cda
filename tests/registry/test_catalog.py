"""Refs, resolution of datasets and recipes, whole-registry validation: on real files.

Resolving a bare *model* name by verified status is trust's (tests/trust/test_status.py).
"""

from __future__ import annotations

import os

import pytest

from commonforge.errors import ForgeError, InputError, NotFoundError
from registry import Ref, Registry
from registry.schema import BuildManifest, Release
from tests.helpers import make_registry, sample, snapshot, write_yaml


def _release(version: str, reg: Registry) -> Release:
    m = sample("manifest")
    m["version"] = version
    m["recipe"]["sha256"] = reg.recipe("recipe/sample@1").digest
    return Release.from_manifest(BuildManifest.model_validate(m))


def _vouch(reg: Registry, rel: Release, kind: str = "approval") -> None:
    """A statement file beside the release (registry never verifies it: only that one is there)."""
    folder = reg.statements_dir(rel)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{kind}-{'a' * 64}.json").write_text("{}", encoding="utf-8")


@pytest.fixture
def reg(tmp_path) -> Registry:
    return Registry(make_registry(tmp_path))


def test_ref_parsing():
    assert Ref.parse("model/forge-small@1.0.0") == Ref("model", "forge-small", "1.0.0")
    assert Ref.parse("forge-small", default_kind="model") == Ref("model", "forge-small", None)
    assert str(Ref.parse("dataset/literary-pd@1")) == "dataset/literary-pd@1"
    for bad in ("model/", "model/x@", "thing/x@1", "model/X@1", "model/x@1.0.0.0", "a/b/c", ""):
        with pytest.raises(InputError):
            Ref.parse(bad, default_kind="model")


def test_get_and_unknown_refs_suggest_close_matches(reg):
    assert reg.get("recipe/sample@1").title == "A sample recipe"
    with pytest.raises(NotFoundError) as info:
        reg.get("recipe/sampel@1")
    assert "did you mean 'recipe/sample@1'" in str(info.value) or "'sample'" in str(info.value)
    with pytest.raises(NotFoundError) as info:
        reg.get("recipe/sample@2")
    assert "versions of recipe/sample: 1" in str(info.value)


def test_bare_model_names_are_left_to_trust_and_datasets_resolve_to_the_newest(reg, tmp_path):
    reg.save_release(_release("1.1.0", reg))
    with pytest.raises(InputError) as info:
        reg.resolve("model/sample")
    assert "depends on signed statements" in info.value.message and "1.0.0, 1.1.0" in info.value.hint
    with pytest.raises(InputError):
        reg.get("model/sample")  # get() of a bare ref resolves, and is refused the same way
    assert reg.resolve("model/sample@1.1.0").version == "1.1.0"
    assert reg.resolve("recipe/sample").version == "1"
    with pytest.raises(NotFoundError):
        reg.resolve("dataset/nothing-here")


def test_legacy_unsigned_records_are_refused_with_what_to_do(reg, tmp_path):
    folder = tmp_path / "registry" / "entries" / "models" / "sample"
    (folder / "1.0.0.publication.yaml").write_text("published_at: x\n", encoding="utf-8")
    (folder / "1.0.0.rebuilds").mkdir()
    problems = reg.validate()
    assert any("1.0.0.publication.yaml" in p and "`commonforge publish` signs" in p for p in problems)
    assert any("1.0.0.rebuilds" in p and "reproduce --key" in p for p in problems)
    assert len(problems) == 2


def test_a_different_release_under_the_same_version_is_refused(reg, tmp_path):
    m = sample("manifest")
    m["recipe"]["sha256"] = reg.recipe("recipe/sample@1").digest
    m["artifacts"][0]["size"] = 777
    other = Release.from_manifest(BuildManifest.model_validate(m))
    before = snapshot(tmp_path)
    with pytest.raises(ForgeError) as info:
        reg.save_release(other)
    assert "refusing to write a different release" in str(info.value)
    assert snapshot(tmp_path) == before
    # A draft may be replaced when asked to (its statements go with it: they are about another
    # build), one anybody vouched for never.
    _vouch(reg, reg.release("model/sample@1.0.0"), "build")
    reg.save_release(other, replace_draft=True)
    assert Registry(tmp_path).release("model/sample@1.0.0").release_digest == other.release_digest
    assert not reg.statements_dir(other).exists()
    _vouch(reg, other)
    before = snapshot(tmp_path)
    with pytest.raises(ForgeError) as info:
        Registry(tmp_path).save_release(_release("1.0.0", reg), replace_draft=True)
    assert "maintainers signed statements about it (approval-" in info.value.message
    assert snapshot(tmp_path) == before


def test_validate_accepts_a_consistent_registry(reg):
    assert reg.validate() == []


def test_validate_reports_cross_reference_problems(reg, tmp_path):
    entries = tmp_path / "registry" / "entries"
    recipe = sample("recipe")
    recipe["version"] = "2"
    recipe["datasets"] = ["dataset/nosuch@1"]
    write_yaml(entries / "recipes" / "sample" / "2.yaml", recipe)
    other = sample("dataset")
    other["version"] = "3"  # file says 2, content says 3: a duplicate of nothing, a lie about its path
    write_yaml(entries / "datasets" / "sample" / "2.yaml", other)
    (entries / "datasets" / "stray.txt").write_text("x")
    problems = "\n".join(reg.validate())
    assert "dataset/nosuch@1" in problems
    assert "declares dataset/sample@3, but its path says dataset/sample@2" in problems
    assert "stray.txt" in problems


def test_validate_catches_an_edited_recipe_after_release(reg, tmp_path):
    path = tmp_path / "registry" / "entries" / "recipes" / "sample" / "1.yaml"
    data = sample("recipe")
    data["training"]["steps"] = 11
    write_yaml(path, data)
    problems = "\n".join(Registry(tmp_path).validate())
    assert "a recipe is never edited after release" in problems


def test_symlink_pointing_outside_is_refused(reg, tmp_path):
    outside = tmp_path.parent / f"{tmp_path.name}-outside.yaml"
    write_yaml(outside, sample("dataset") | {"version": "5"})
    os.symlink(outside, tmp_path / "registry" / "entries" / "datasets" / "sample" / "5.yaml")
    with pytest.raises(InputError) as info:
        reg.get("dataset/sample@5")
    assert "outside the repository" in str(info.value)
    assert any("symlink" in p for p in reg.validate())
