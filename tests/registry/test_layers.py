"""The user's own registry, layered under a checkout or standing alone (registry/layers.py):
the read-only commands see both layers and say which one a release is in (the real CLI, in this
process; real registries on disk; the release in the user registry has real artifacts in its
own store)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from commonforge import settings
from commonforge.cli import main
from registry.catalog import Registry
from registry.schema import BuildManifest, Release
from registry.store import Store
from tests.helpers import make_registry, sample, write_yaml
from trust import status as trust_status


def user_release(user: Path) -> Release:
    """model/pulled@2.0.0 in the user registry at ``user``, its two artifacts in that registry's store."""
    make_registry(user, release=False)
    (user / "pyproject.toml").unlink()  # a user registry is no checkout
    shutil.rmtree(user / "texts")
    manifest = sample("manifest")
    manifest.update(name="pulled", version="2.0.0")
    manifest["recipe"]["sha256"] = Registry(user).recipe("recipe/sample@1").digest
    store = Store(user / ".forge" / "store")
    for artifact in manifest["artifacts"]:
        artifact["sha256"], artifact["size"] = store.put_bytes(f"pulled {artifact['path']}".encode())
    rel = Release.from_manifest(BuildManifest.model_validate(manifest))
    write_yaml(user / "registry" / "entries" / "models" / "pulled" / "2.0.0.yaml", rel.model_dump(mode="json",
                                                                                                 exclude_none=True))
    return rel


@pytest.fixture
def layered(tmp_path, monkeypatch):
    checkout = make_registry(tmp_path / "checkout")
    user = tmp_path / "user"
    user_release(user)
    monkeypatch.setenv("COMMONFORGE_USER_REGISTRY", str(user))
    monkeypatch.setenv("COMMONFORGE_STORE", str(tmp_path / "checkout-store"))
    monkeypatch.delenv("COMMONFORGE_ROOT", raising=False)
    return checkout, user


def run(capsys, *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_with_a_checkout_both_layers_are_listed_and_each_release_found_in_its_own(layered, capsys, monkeypatch):
    checkout, user = layered
    monkeypatch.chdir(checkout)
    code, out, _ = run(capsys, "list", "models")
    assert code == 0 and "model/sample@1.0.0" in out and "model/pulled@2.0.0" in out
    assert "user registry" in out and "checkout" in out
    code, out, _ = run(capsys, "show", "pulled")
    assert code == 0 and "in: user registry" in out and str(user) in out.replace("\n", "")
    code, out, _ = run(capsys, "show", "model/sample@1.0.0")
    assert code == 0 and "in: checkout" in out
    release, status = trust_status.for_use(checkout, "model/pulled@2.0.0")
    assert status.root == user and status.layer == "user registry"
    code, out, _ = run(capsys, "verify", "model/pulled@2.0.0")  # its artifacts are in the user registry's store
    assert code == 0 and "all 2 artifacts match the manifest" in out
    assert not (checkout / "registry" / "entries" / "models" / "pulled").exists()


def test_without_a_checkout_the_user_registry_stands_alone(layered, capsys, monkeypatch, tmp_path):
    _, user = layered
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.chdir(empty)
    assert settings.find_root() == user.resolve()
    assert settings.Settings.load().store_dir == (user / ".forge" / "store").resolve()  # its own store
    code, out, _ = run(capsys, "list", "models")
    assert code == 0 and "model/pulled@2.0.0" in out and "model/sample" not in out
    code, out, _ = run(capsys, "verify", "pulled")
    assert code == 0 and "all 2 artifacts match the manifest" in out


def test_with_neither_the_error_says_how_to_start(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COMMONFORGE_USER_REGISTRY", str(tmp_path / "nothing-yet"))
    monkeypatch.delenv("COMMONFORGE_ROOT", raising=False)
    monkeypatch.chdir(tmp_path)
    code, _, err = run(capsys, "list")
    assert code == 2 and "no registry of your own yet" in err and "commonforge pull REF --from URL" in err
    assert not (tmp_path / "nothing-yet").exists()  # looking never creates it
    assert os.environ["COMMONFORGE_USER_REGISTRY"].endswith("nothing-yet")
