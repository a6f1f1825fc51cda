"""Fixtures for the explorer: a copy of the tiny forge with the records the pages show.

``explorer_forge`` copies the session's ``tiny_forge`` checkout (the shared fixture is never
changed), whose release carries the evaluation and card records its build filed (the fixture
fails if either is missing), and adds, on the copy only:

* a rebuild record (identical) for ``model/forge-tiny@1.0.0``;
* ``model/forge-tiny@2.0.0``: the same artifacts under another version, with scores 0.05 higher,
  so Compare has two releases;
* ``model/imported-sample@1.0.0``: an imported release whose files are not in the store.

The store and MLflow database are the tiny forge's own, read only.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from commonforge.settings import PRIVACY_ENV
from pipelines.manifest import split_path

RELEASE = "model/forge-tiny@1.0.0"
SECOND = "model/forge-tiny@2.0.0"
IMPORTED = "model/imported-sample@1.0.0"
SHIFT = 0.05  # SECOND's scores minus RELEASE's


@dataclass
class ExplorerForge:
    root: Path
    store: Path
    mlflow_uri: str
    cache: Path
    env: dict[str, str]  # for child processes (the CLI, Streamlit)

    def variables(self) -> dict[str, str]:
        """What a test process sets so the explorer (AppTest) finds this checkout."""
        return {"COMMONFORGE_ROOT": str(self.root), "COMMONFORGE_STORE": str(self.store),
                "MLFLOW_TRACKING_URI": self.mlflow_uri, "COMMONFORGE_EXPLORER_CACHE": str(self.cache)}


def known_phrase(root: Path) -> tuple[str, str]:
    """Six words from the middle of the first training document of tiny-local, and its id."""
    import json

    first = json.loads(split_path(root, "tiny-local", "train").read_text().splitlines()[0])
    return " ".join(first["text"].split()[200:206]), first["id"]


@pytest.fixture(scope="session")
def explorer_forge(tiny_forge, tmp_path_factory) -> ExplorerForge:
    from registry import Registry
    from registry.schema import MANIFEST_SCHEMA, Artifact, BuildManifest, ProvenanceRecord, Release
    from tests.helpers import found_forge
    from trust.status import attest_rebuild

    base = tmp_path_factory.mktemp("explorer-forge")
    root = base / "forge"
    shutil.copytree(tiny_forge.root, root, symlinks=True, ignore=shutil.ignore_patterns(".forge"))
    reg = Registry(root)
    rel = reg.release(RELEASE)
    # The release step files both from the build (pipelines.release): their absence is a bug there.
    if reg.evaluation(rel) is None or reg.card(rel) is None:
        pytest.fail(f"{RELEASE} of the tiny forge has no evaluation or card record: `commonforge build` "
                    "should have filed both beside the release")
    # A governance policy with a rebuilder, who signs an identical rebuild of the release.
    signers = found_forge(root, base / "keys", {"Second Rebuilder": ("Beta", ["maintainer", "rebuilder"]),
                          "Ann Approver": ("Acme", ["maintainer"]), "Cy Reviewer": ("Cyan", ["maintainer"])})
    signer, info = signers["Second Rebuilder"]
    attest_rebuild(root, rel, signer, info, rebuilt_digest=rel.release_digest,
                   machine={"hostname": "rebuilder-box", "cpu": "AMD EPYC"})

    m2 = BuildManifest.model_validate({**rel.manifest.model_dump(mode="json", exclude_none=True), "version": "2.0.0"})
    rel2 = Release.from_manifest(m2)
    reg.save_release(rel2)
    first_eval = reg.evaluation(rel)
    reg.save_record(rel2, "evals", first_eval.model_copy(update={
        "release_digest": rel2.release_digest,
        "results": [r.model_copy(update={"value": round(r.value + SHIFT, 6)}) for r in first_eval.results]}))

    imported = Release.from_manifest(BuildManifest(
        schema_version=MANIFEST_SCHEMA, name="imported-sample", version="1.0.0", provenance="imported", license="MIT",
        artifacts=[Artifact(path="config.json", sha256="c" * 64, size=700, stage="import"),
                   Artifact(path="model.safetensors", sha256="d" * 64, size=4096, stage="import"),
                   Artifact(path="tokenizer.json", sha256="e" * 64, size=2048, stage="import")]))
    reg.save_release(imported)
    reg.save_record(imported, "provenance", ProvenanceRecord(
        release_digest=imported.release_digest, built_by="Importer",
        created_at="2026-11-24T23:40:00Z", imported_from="a model folder on the importer's disk"))

    cache = base / "explorer-cache"
    env = dict(tiny_forge.env)
    env.update({"COMMONFORGE_EXPLORER_CACHE": str(cache)})
    env.pop("COMMONFORGE_ROOT", None)
    return ExplorerForge(root, Path(env["COMMONFORGE_STORE"]), env["MLFLOW_TRACKING_URI"], cache, env)


@pytest.fixture
def explorer_env(explorer_forge, monkeypatch) -> ExplorerForge:
    """This process pointed at the explorer forge; the privacy variables the app sets are undone after."""
    for key, value in {**PRIVACY_ENV, **explorer_forge.variables()}.items():
        monkeypatch.setenv(key, value)
    return explorer_forge


@pytest.fixture
def empty_forge(tmp_path, monkeypatch) -> Path:
    """A checkout whose registry has no entries at all."""
    root = tmp_path / "empty"
    (root / "registry" / "entries").mkdir(parents=True)
    (root / "pyproject.toml").write_text("[project]\nname = 'empty'\n")
    for key, value in PRIVACY_ENV.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("COMMONFORGE_ROOT", str(root))
    monkeypatch.setenv("COMMONFORGE_STORE", str(tmp_path / "store"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("COMMONFORGE_EXPLORER_CACHE", str(tmp_path / "cache"))
    return root



