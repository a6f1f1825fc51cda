"""Typed entries: round trips, the pinned release digest, and clear errors for bad input."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from commonforge.errors import InputError
from registry.digest import canonical_json
from registry.schema import (
    BuildManifest,
    Dataset,
    ProvenanceRecord,
    Recipe,
    Release,
)
from registry.yamlio import dump_model, load_model, save_model
from tests.helpers import SHA_B, sample, write_yaml

# The release digest of tests.helpers.MANIFEST under schema version 1. If this changes, every
# published digest would silently change: bump the schema version instead.
GOLDEN_MANIFEST_DIGEST = "5b152873a0e0d7f7b36f9382c682ed085c078274dcdf46443cc5e6a18295df13"


def test_round_trip_every_entry_kind(tmp_path):
    manifest = BuildManifest.model_validate(sample("manifest"))
    entries = [
        Dataset.model_validate(sample("dataset")),
        Recipe.model_validate(sample("recipe")),
        Release.from_manifest(manifest),
        ProvenanceRecord(schema_version=1, release_digest=manifest.digest, built_by="a b",
                         created_at="2026-11-24T10:00:00Z", machine={"hostname": "h"}, stage_seconds={"train": 1.5}),
    ]
    for entry in entries:
        path = tmp_path / f"{type(entry).__name__}.yaml"
        save_model(entry, path)
        again = load_model(type(entry), path)
        assert again == entry
        # Saving is deterministic: a second save gives the same bytes.
        assert dump_model(again) == path.read_text()


def test_release_digest_is_pinned_for_schema_version_1():
    manifest = BuildManifest.model_validate(sample("manifest"))
    assert manifest.digest == GOLDEN_MANIFEST_DIGEST
    # The canonical JSON is sorted, compact UTF-8.
    raw = canonical_json(manifest.model_dump(mode="json", exclude_none=True))
    assert raw.startswith(b'{"artifacts":[{"path":"model.safetensors"') and b" " not in raw.split(b'"determinism"')[0]


def test_provenance_changes_leave_the_release_digest_unchanged():
    manifest = BuildManifest.model_validate(sample("manifest"))
    a = ProvenanceRecord(schema_version=1, release_digest=manifest.digest, built_by="alice",
                         created_at="2026-11-24T10:00:00Z", machine={"cpu": "AMD EPYC"}, stage_seconds={"train": 10.0})
    b = a.model_copy(update={"built_by": "bob", "machine": {"cpu": "Intel Xeon"}, "stage_seconds": {"train": 99.0}})
    assert a.release_digest == b.release_digest == Release.from_manifest(manifest).release_digest
    # ...while any change to the manifest changes it.
    changed = sample("manifest")
    changed["artifacts"][0]["sha256"] = SHA_B
    assert BuildManifest.model_validate(changed).digest != manifest.digest


def test_entry_is_frozen():
    recipe = Recipe.model_validate(sample("recipe"))
    with pytest.raises(ValidationError, match="frozen"):
        recipe.name = "other"  # type: ignore[misc]


def _load_error(tmp_path, model, data_or_text) -> str:
    path = tmp_path / "entry.yaml"
    if isinstance(data_or_text, str):
        path.write_text(data_or_text)
    else:
        write_yaml(path, data_or_text)
    before = path.read_bytes()
    with pytest.raises(InputError) as info:
        load_model(model, path)
    assert path.read_bytes() == before  # loading never changes the file
    return str(info.value)


def test_malformed_yaml_names_file_and_line(tmp_path):
    msg = _load_error(tmp_path, Recipe, "schema_version: 1\nname: x\nversion: [1\ntitle: y\n")
    assert "entry.yaml:4" in msg and "malformed YAML" in msg


def test_duplicate_keys_are_an_error(tmp_path):
    msg = _load_error(tmp_path, Recipe, "schema_version: 1\nname: a\nname: b\n")
    assert "duplicate key 'name'" in msg and "line 2" in msg


def test_unknown_field_names_its_path_and_line(tmp_path):
    data = sample("recipe")
    data["training"]["stepz"] = 5
    msg = _load_error(tmp_path, Recipe, data)
    assert "training.stepz: unknown field" in msg
    line = next(i for i, text in enumerate((tmp_path / "entry.yaml").read_text().splitlines(), 1) if "stepz" in text)
    assert f"entry.yaml:{line}: training.stepz" in msg


def test_missing_field_and_wrong_type(tmp_path):
    data = sample("recipe")
    del data["license"]
    data["training"]["steps"] = "many"
    msg = _load_error(tmp_path, Recipe, data)
    assert "license: missing required field" in msg
    assert "training.steps:" in msg and "integer" in msg


def test_unknown_schema_version(tmp_path):
    data = sample("dataset")
    data["schema_version"] = 7
    msg = _load_error(tmp_path, Dataset, data)
    assert "unknown schema version 7" in msg and "reads schema version 1" in msg


@pytest.mark.parametrize("path", ["../outside", "/etc/passwd", "a/../../b", "~/x"])
def test_path_traversal_in_an_entry_is_refused(tmp_path, path):
    data = sample("dataset")
    data["sources"][0]["path"] = path
    msg = _load_error(tmp_path, Dataset, data)
    assert "sources.0.path" in msg


def test_artifact_path_traversal_is_refused(tmp_path):
    data = sample("manifest")
    data["artifacts"][0]["path"] = "../../model.safetensors"
    with pytest.raises(Exception) as info:
        BuildManifest.model_validate(data)
    assert "leaves its directory" in str(info.value)


def test_inconsistent_architecture_is_explained(tmp_path):
    data = sample("recipe")
    data["architecture"]["num_attention_heads"] = 5
    msg = _load_error(tmp_path, Recipe, data)
    assert "not divisible by num_attention_heads 5" in msg


def test_imported_release_has_no_recipe_or_commit():
    data = sample("manifest")
    data["provenance"] = "imported"
    with pytest.raises(Exception) as info:
        BuildManifest.model_validate(data)
    assert "an imported release has no recipe" in str(info.value)
    for key in ("recipe", "source_commit", "lock_sha256", "environment", "datasets"):
        data.pop(key)
    for a in data["artifacts"]:
        a["stage"] = "import"
    assert BuildManifest.model_validate(data).provenance == "imported"


def test_release_digest_must_match_its_manifest(tmp_path):
    rel = Release.from_manifest(BuildManifest.model_validate(sample("manifest")))
    data = rel.model_dump(mode="json", exclude_none=True)
    data["manifest"]["artifacts"][0]["size"] = 999  # edited after release
    msg = _load_error(tmp_path, Release, data)
    assert "does not match the manifest's digest" in msg


def test_dataset_license_must_cover_its_sources(tmp_path):
    data = sample("dataset")
    data["sources"][0]["license"] = "MIT"
    msg = _load_error(tmp_path, Dataset, data)
    assert "does not cover source 'texts'" in msg


def test_cc_by_source_needs_attribution(tmp_path):
    data = sample("dataset")
    data["license"] = "CC-BY-2.5"
    data["sources"][0]["license"] = "CC-BY-2.5"
    msg = _load_error(tmp_path, Dataset, data)
    assert "attribution" in msg


def test_sha256_fields_are_checked(tmp_path):
    data = sample("dataset")
    data["sources"][0]["sha256"] = "abc"
    assert "sources.0.sha256" in _load_error(tmp_path, Dataset, data)


V1_RELEASE = Path(__file__).resolve().parent / "data" / "forge-tiny-1.0.0-manifest-v1.yaml"


def test_a_schema_1_release_stays_readable_with_its_digest():
    """The committed forge-tiny release as it was under manifest schema 1 (whole-lock digest)."""
    rel = load_model(Release, V1_RELEASE)
    assert rel.manifest.schema_version == 1 and rel.manifest.lock_sha256
    assert rel.release_digest == rel.manifest.digest
    assert rel.manifest.environment.package_versions()["torch"].startswith("2.13.0")


def test_schema_1_and_2_environments_are_not_mixed():
    data = load_model(Release, V1_RELEASE).manifest.model_dump(mode="json", exclude_none=True)
    with pytest.raises(ValidationError, match="schema-2 manifest pins the imported packages"):
        BuildManifest.model_validate({**data, "schema_version": 2})
    data.pop("lock_sha256")
    with pytest.raises(ValidationError, match="pins each package's version and sha256"):
        BuildManifest.model_validate({**data, "schema_version": 2})
    with pytest.raises(ValidationError, match="a built release needs lock_sha256"):
        BuildManifest.model_validate(data)
