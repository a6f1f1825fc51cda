"""The build, for real: dvc repro, release, verify, reproduce; on the shared tiny forge.

A reproduction that matches (in a second clean clone, under a different parent environment)
is walked in tests/test_end_to_end.py; here, one that must not match.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time

import pytest
import yaml

from registry import Registry, Store
from registry.schema import BuildManifest, Release
from tests.helpers import REPO, VENV_BIN, git
from tests.privacy.audit import unprotected_processes, violations


def test_build_writes_a_draft_release_with_provenance(tiny_forge):
    from trust.status import release_status

    reg = Registry(tiny_forge.root)
    rel = reg.release("model/forge-tiny@1.0.0")
    assert release_status(tiny_forge.root, rel).status == "draft"
    m = rel.manifest
    assert m.provenance == "built" and m.recipe.ref == "recipe/forge-tiny@1"
    assert m.recipe.sha256 == reg.recipe("recipe/forge-tiny@1").digest
    head_before_release = git(tiny_forge.root, "rev-parse", "HEAD~1").strip()
    assert m.source_commit == head_before_release
    assert {a.path for a in m.artifacts} >= {"model.safetensors", "config.json", "tokenizer.json"}
    assert m.environment.determinism["ATEN_CPU_CAPABILITY"] == "avx2"
    assert m.environment.determinism["MKL_CBWR"] == "AVX2,STRICT"
    assert m.datasets[0].ref == "dataset/tiny-local@1" and m.datasets[0].splits["train"].documents > 0
    prov = reg.provenance(rel)
    assert prov.release_digest == rel.release_digest and "train" in prov.stage_seconds
    assert prov.mlflow_run_id
    # Every artifact is in the store.
    assert all(c.ok for c in Store(tiny_forge.state / "store").verify_release(m))


def test_the_committed_forge_tiny_release_is_rebuilt_bit_for_bit(tiny_forge):
    """The project's committed release of forge-tiny, against this run's build on this machine."""
    committed_path = REPO / "registry" / "entries" / "models" / "forge-tiny" / "1.0.0.yaml"
    if not committed_path.is_file():
        pytest.skip("the project has no committed forge-tiny release")
    from pipelines.compare import compare_manifests

    committed = Registry(REPO).release("model/forge-tiny@1.0.0")
    if committed.manifest.recipe.sha256 != Registry(REPO).recipe("recipe/forge-tiny@1").digest:
        pytest.skip("recipe/forge-tiny@1 changed since its release was committed (a new version is due)")
    from tests.helpers import other_cpu_vendor_than_committed

    why = other_cpu_vendor_than_committed()
    if why:
        pytest.skip(why)
    rebuilt = Registry(tiny_forge.root).release("model/forge-tiny@1.0.0")
    diff = compare_manifests(committed.manifest, rebuilt.manifest, ignore_commit=True)
    assert diff.stages == {}, "\n".join(diff.lines())
    assert diff.identical, "\n".join(diff.lines())


def test_build_logs_to_mlflow_and_writes_plots(tiny_forge):
    import mlflow

    rel = Registry(tiny_forge.root).release("model/forge-tiny@1.0.0")
    run_id = Registry(tiny_forge.root).provenance(rel).mlflow_run_id
    client = mlflow.MlflowClient(tracking_uri=tiny_forge.env["MLFLOW_TRACKING_URI"])
    run = client.get_run(run_id)
    assert run.data.params["recipe"] == "recipe/forge-tiny@1"
    assert "train_loss" in run.data.metrics and "val_bits_per_byte" in run.data.metrics
    assert run.data.tags["determinism.ATEN_CPU_CAPABILITY"] == "avx2"
    history = client.get_metric_history(run_id, "train_loss")
    assert len(history) >= 5
    loss_csv = tiny_forge.root / "build" / "models" / "forge-tiny" / "train" / "loss.csv"
    rows = loss_csv.read_text().splitlines()
    assert rows[0] == "step,train_loss" and len(rows) == 121
    # Training worked: the loss went down.
    assert float(rows[-1].split(",")[1]) < float(rows[1].split(",")[1]) - 1.0


def test_the_build_made_no_connection(tiny_forge):
    assert violations(tiny_forge.audit) == []
    assert unprotected_processes(tiny_forge.audit) == []
    argvs = [" ".join(p["argv"]) for p in map(json.loads, _lines(tiny_forge.audit))]
    # Python records `-m pipelines.train` at start and the module's path at exit.
    assert any("pipelines/train.py" in a or "pipelines.train" in a for a in argvs), "no stage process seen"


def _lines(folder):
    for p in folder.glob("process-*.jsonl"):
        yield from (line for line in p.read_text().splitlines() if line)


def test_noop_repro_is_quick(tiny_forge):
    started = time.perf_counter()
    out = subprocess.run([str(VENV_BIN / "dvc"), "repro", "train@forge-tiny"], cwd=tiny_forge.root,
                         env=tiny_forge.env, capture_output=True, text=True, check=True)
    seconds = time.perf_counter() - started
    assert "didn't change, skipping" in out.stdout or "up to date" in out.stdout, out.stdout
    assert "Running stage" not in out.stdout
    print(f"no-op dvc repro: {seconds:.2f} s")
    assert seconds < 30


def test_verify_catches_a_tampered_weight_file(tiny_forge, tmp_path):
    # A copy of the store, so the shared one stays intact.
    store_copy = tmp_path / "store"
    shutil.copytree(tiny_forge.state / "store", store_copy)
    env = dict(tiny_forge.env, COMMONFORGE_STORE=str(store_copy))
    ok = tiny_forge.cli("verify", "model/forge-tiny@1.0.0", env=env)
    assert ok.returncode == 0, ok.stderr
    rel = Registry(tiny_forge.root).release("model/forge-tiny@1.0.0")
    weights = Store(store_copy).object_path(rel.manifest.artifact("model.safetensors").sha256)
    os.chmod(weights, 0o644)
    data = bytearray(weights.read_bytes())
    data[-10] ^= 0xFF
    weights.write_bytes(bytes(data))
    bad = tiny_forge.cli("verify", "forge-tiny", env=env)
    assert bad.returncode == 1
    assert "model.safetensors (corrupt)" in bad.stderr
    assert rel.manifest.artifact("model.safetensors").sha256 in bad.stdout


def test_release_refuses_a_tree_that_differs_from_its_commit(tiny_forge, tmp_path):
    clone = tmp_path / "clone"
    git(tiny_forge.root, "clone", "-q", str(tiny_forge.root), str(clone))
    shutil.copytree(tiny_forge.root / "build", clone / "build")
    (clone / "pipelines" / "train.py").write_text((clone / "pipelines" / "train.py").read_text() + "\n# edited\n")
    before = (clone / "registry" / "entries" / "models" / "forge-tiny" / "1.0.0.yaml").read_bytes()
    result = tiny_forge.cli("release", "forge-tiny", "--no-push", cwd=clone)
    assert result.returncode == 2
    assert "pipelines/train.py" in result.stderr and "the tree differs from HEAD" in result.stderr
    assert (clone / "registry" / "entries" / "models" / "forge-tiny" / "1.0.0.yaml").read_bytes() == before


def test_reproduce_names_the_first_differing_stage(tiny_forge, tmp_path):
    """A release whose claimed source commit does not produce its weights is caught at `train`."""
    clone = tmp_path / "clone"
    git(tiny_forge.root, "clone", "-q", str(tiny_forge.root), str(clone))
    recipe_path = clone / "registry" / "entries" / "recipes" / "forge-tiny" / "1.yaml"
    recipe = yaml.safe_load(recipe_path.read_text())
    recipe["training"]["learning_rate"] = 0.002  # one value changed after release
    recipe_path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    git(clone, "commit", "-q", "-am", "change the learning rate")
    changed_commit = git(clone, "rev-parse", "HEAD").strip()
    reg = Registry(clone)
    old = reg.release("model/forge-tiny@1.0.0")
    data = old.manifest.model_dump(mode="json", exclude_none=True)
    data["source_commit"] = changed_commit
    data["recipe"]["sha256"] = reg.recipe("recipe/forge-tiny@1").digest
    claim = Release.from_manifest(BuildManifest.model_validate(data))
    reg.save_release(claim, replace_draft=True)
    git(clone, "add", "-A")
    git(clone, "commit", "-q", "-m", "claim the old weights came from the new recipe")
    result = tiny_forge.cli("reproduce", "forge-tiny", cwd=clone, timeout=1200)
    assert result.returncode == 1, result.stdout[-3000:] + result.stderr[-3000:]
    assert "first differing stage: train" in result.stderr
    assert "model.safetensors" in result.stderr
    # The differences listed field by field: the tokenizer does not depend on the learning rate.
    listed = result.stderr.split("first differing stage: train", 1)[1].splitlines()
    assert any("model.safetensors" in line for line in listed)
    assert not any(line.strip().startswith("tokenizer") for line in listed)
    # Nobody gave a key: nothing was signed, and the command says how to vouch for the result.
    assert not (clone / "registry" / "entries" / "models" / "forge-tiny" / "1.0.0.statements").exists()
