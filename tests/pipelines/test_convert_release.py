"""`commonforge convert` and `commonforge reproduce` of a converted release, end to end, in a copy of the project.

The checkpoint is a tiny GGUF the test writes (tests/pipelines/gguf_writer.py), pinned as a local
source and committed; the commands run as a user runs them (the installed entry point, a git
checkout, the store and registry of that checkout).
"""

from __future__ import annotations

import json

import pytest

from registry import Registry, Store
from registry.digest import sha256_file
from tests.helpers import cli as forge
from tests.helpers import copy_project, forge_env, git
from tests.pipelines.gguf_writer import write_tiny_gguf
from tests.pipelines.test_convert import NAME, _entry, save_yaml

MODEL = f"model/{NAME}@1.0.0"


@pytest.fixture(scope="module")
def converted_forge(tmp_path_factory):
    base = tmp_path_factory.mktemp("convert-release")
    root = copy_project(base / "forge")
    src = root / "registry" / "local_sources" / NAME
    src.mkdir(parents=True)
    tiny = write_tiny_gguf(src / "tiny.gguf").path
    sha = sha256_file(tiny)
    entry = root / "registry" / "entries" / "conversions" / NAME / "1.yaml"
    entry.parent.mkdir(parents=True)
    save_yaml(entry, _entry(tiny.relative_to(root).as_posix(), sha))
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "a conversion of a tiny gguf")
    env = forge_env(base)
    result = forge("convert", NAME, cwd=root, env=env, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "release the tiny conversion")
    return root, env, result


def test_convert_releases_a_draft_with_converted_provenance_and_the_checkpoint_pin(converted_forge):
    root, env, result = converted_forge
    assert f"released {MODEL} (draft, converted)" in result.stdout
    reg = Registry(root)
    rel = reg.release(MODEL)
    m = rel.manifest
    assert m.provenance == "converted" and m.recipe is None and m.datasets == []
    conversion = reg.conversion(f"conversion/{NAME}@1")
    assert m.conversion.ref == conversion.ref and m.conversion.sha256 == conversion.digest
    assert m.conversion.checkpoint_sha256 == conversion.source.member_sha256
    assert set(m.variants()) == {"gguf"}
    assert m.source_commit == git(root, "rev-parse", "HEAD~1").strip()
    assert all(c.ok for c in Store(root.parent / "state" / "store").verify_release(m))  # forge_env's store
    card = reg.card(rel)
    assert card is not None and "converted" in (root / card.path).read_text(encoding="utf-8").lower()


def test_show_and_verify_a_converted_release(converted_forge):
    root, env, _ = converted_forge
    shown = forge("show", NAME, cwd=root, env=env)
    assert shown.returncode == 0, shown.stderr
    assert "CONVERTED" in shown.stdout and f"conversion/{NAME}@1" in shown.stdout
    verified = forge("verify", NAME, cwd=root, env=env)
    assert verified.returncode == 0, verified.stdout + verified.stderr


def test_a_second_conversion_only_confirms_the_release(converted_forge):
    root, env, _ = converted_forge
    before = Registry(root).release(MODEL).release_digest
    again = forge("convert", NAME, cwd=root, env=env, timeout=900)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "identical" in again.stdout
    assert Registry(root).release(MODEL).release_digest == before
    assert git(root, "status", "--porcelain", "registry") == ""


def test_convert_refuses_a_dirty_tree_and_changes_nothing(converted_forge):
    root, env, _ = converted_forge
    entry = root / "registry" / "entries" / "conversions" / NAME / "1.yaml"
    original = entry.read_bytes()
    entry.write_bytes(original.replace(b"A tiny GGUF Llama", b"A tiny GGUF llama"))
    try:
        result = forge("convert", NAME, cwd=root, env=env, timeout=900)
        assert result.returncode == 2, result.stdout + result.stderr
        assert "Traceback" not in result.stderr and "commit" in result.stderr.lower()
        assert "converting" not in result.stdout  # refused before the conversion ran
        assert git(root, "status", "--porcelain", "registry/entries/models") == ""
    finally:
        entry.write_bytes(original)


def test_reproduce_re_converts_bit_for_bit_in_a_clean_worktree(converted_forge):
    root, env, _ = converted_forge
    result = forge("reproduce", NAME, cwd=root, env=env, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    digest = Registry(root).release(MODEL).release_digest
    assert f"rebuilt bit for bit (sha256:{digest})" in result.stdout
    artifacts = Registry(root).release(MODEL).manifest.artifacts
    assert result.stdout.count("identical") >= len(artifacts) and "different" not in result.stdout
    assert "re-converting" in result.stdout and git(root, "worktree", "list").count("\n") == 1  # removed


def test_reproduce_catches_a_release_whose_manifest_lies_about_an_artifact(converted_forge, tmp_path):
    """Someone commits a release claiming other weights for the same conversion: the re-conversion disagrees."""
    root, env, _ = converted_forge
    path = root / "registry" / "entries" / "models" / NAME / "1.0.0.yaml"
    original = path.read_bytes()
    import yaml

    data = yaml.safe_load(original)
    art = next(a for a in data["manifest"]["artifacts"] if a["path"] == "model.safetensors")
    art["sha256"] = "ab" * 32
    from registry.schema import BuildManifest

    data["release_digest"] = BuildManifest.model_validate(data["manifest"]).digest  # a consistent lie
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    git(root, "commit", "-qam", "a lying release")
    try:
        result = forge("reproduce", NAME, cwd=root, env=env, timeout=900)
        assert result.returncode == 1, result.stdout + result.stderr
        assert "model.safetensors" in result.stdout and "different" in result.stdout
    finally:
        path.write_bytes(original)
        git(root, "commit", "-qam", "put the release back")


def test_the_conversion_record_names_the_checkpoint(converted_forge):
    root, _, _ = converted_forge
    record = json.loads((root / "build" / "conversions" / NAME / "convert.json").read_text())
    assert record["checkpoint"]["tensor_types"] and "Q4_1" in record["checkpoint"]["tensor_types"]
