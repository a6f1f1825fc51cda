"""Refs, resolution by status, whole-registry validation: on real files."""

from __future__ import annotations

import os

import pytest

from commonforge.errors import ForgeError, InputError, NotFoundError
from registry import Ref, Registry
from registry.schema import BuildManifest, PublicationRecord, Release, RevocationRecord
from tests.helpers import make_registry, sample, snapshot, write_yaml


def _release(version: str, reg: Registry) -> Release:
    m = sample("manifest")
    m["version"] = version
    m["recipe"]["sha256"] = reg.recipe("recipe/sample@1").digest
    return Release.from_manifest(BuildManifest.model_validate(m))


def _publish(reg: Registry, rel: Release) -> None:
    reg.save_record(rel, "publication", PublicationRecord(
        schema_version=1, release_digest=rel.release_digest, published_at="2026-11-24T12:00:00Z",
        approvals=["maintainer-a", "maintainer-b"]))


def _revoke(reg: Registry, rel: Release) -> None:
    reg.save_record(rel, "revocation", RevocationRecord(
        schema_version=1, release_digest=rel.release_digest, revoked_at="2026-11-24T13:00:00Z",
        reason="A data licensing problem was found in one source.", revoked_by="maintainer-a"))


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


def test_resolution_by_status(reg, caplog):
    reg.save_release(_release("1.1.0", reg))
    reg.save_release(_release("1.2.0", reg))
    # No release published: the newest draft, with a warning.
    assert reg.resolve("sample").version == "1.2.0"
    assert "no published release" in caplog.text
    _publish(reg, reg.release("model/sample@1.1.0"))
    # A published release wins over newer drafts.
    assert reg.resolve("model/sample").version == "1.1.0"
    assert reg.status(reg.release("model/sample@1.1.0")) == "published"
    _revoke(reg, reg.release("model/sample@1.1.0"))
    assert reg.status(reg.release("model/sample@1.1.0")) == "revoked"
    assert reg.resolve("sample").version == "1.2.0"  # back to the newest draft
    # A revoked release is still reachable when named exactly.
    assert reg.resolve("model/sample@1.1.0").version == "1.1.0"
    # Versions compare numerically.
    reg.save_release(_release("1.10.0", reg))
    assert reg.resolve("sample").version == "1.10.0"


def test_every_release_revoked_is_not_resolved(reg):
    _revoke(reg, reg.release("model/sample@1.0.0"))
    with pytest.raises(NotFoundError) as info:
        reg.resolve("sample")
    assert "revoked" in str(info.value)


def test_records_of_published_releases_are_never_rewritten(reg):
    rel = reg.release("model/sample@1.0.0")
    _publish(reg, rel)
    with pytest.raises(ForgeError):
        _publish(reg, rel)


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
    # A draft may be replaced when asked to, a published release never.
    reg.save_release(other, replace_draft=True)
    assert Registry(tmp_path).release("model/sample@1.0.0").release_digest == other.release_digest
    _publish(reg, other)
    with pytest.raises(ForgeError):
        Registry(tmp_path).save_release(_release("1.0.0", reg), replace_draft=True)


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
