"""`commonforge import`: forge-tiny's files, laid out as a Hugging Face directory, come back as
an imported release that serves; pickle, custom code and inconsistent directories are refused
with nothing written."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from commonforge.errors import ForgeError, InputError
from commonforge.settings import Settings
from registry import Registry, Store
from registry.schema import ProvenanceRecord
from tests.helpers import make_registry, snapshot

REF = "model/forge-tiny@1.0.0"


@pytest.fixture(scope="module")
def hf_dir(tiny_forge, tmp_path_factory) -> Path:
    """forge-tiny's full-precision files from the store, as a plain model directory."""
    release = Registry(tiny_forge.root).release(REF)
    dest = tmp_path_factory.mktemp("hf") / "forge-tiny"
    Store(tiny_forge.state / "store").materialize(release.manifest, dest)
    for p in dest.iterdir():  # materialize hard-links read-only store objects: make real copies
        data = p.read_bytes()
        p.unlink()
        p.write_bytes(data)
    return dest


@pytest.fixture
def checkout(tmp_path) -> Settings:
    """An empty checkout of its own (registry entries + store) to import into."""
    root = make_registry(tmp_path / "repo", release=False)
    return dataclasses.replace(Settings.load(root), store_dir=(tmp_path / "store").resolve())


@pytest.fixture
def model_dir(hf_dir, tmp_path) -> Path:
    dest = tmp_path / "model"
    shutil.copytree(hf_dir, dest)
    return dest


def test_an_imported_directory_becomes_a_release_that_serves(checkout, model_dir, tiny_loaded):
    from serving.engine import Engine
    from serving.importer import import_model
    from serving.loader import load_release
    from serving.sampling import SamplingParams

    result = import_model(checkout, model_dir, name="tiny-import", license="Apache-2.0", version="2.0.0",
                          imported_by="Test <test@example.invalid>")
    rel = result.release
    assert rel.ref == "model/tiny-import@2.0.0"
    m = rel.manifest
    assert m.provenance == "imported" and m.recipe is None and m.source_commit is None and m.datasets == []
    assert {a.stage for a in m.artifacts} == {"import"}
    assert {a.path for a in m.artifacts} == {p.name for p in model_dir.iterdir()}
    reg = Registry(checkout.root)
    assert reg.release("model/tiny-import@2.0.0").release_digest == rel.release_digest
    prov = reg.provenance(rel)
    assert isinstance(prov, ProvenanceRecord) and prov.imported_from == str(model_dir.resolve())
    assert all(c.ok for c in Store(checkout.store_dir).verify_release(m))
    assert reg.validate() == []
    # it serves, and computes what the original release computes (same files)
    loaded = load_release("tiny-import", device="cpu", settings=checkout)
    ids = loaded.tokenizer("Call me Ishmael.")["input_ids"]
    params = SamplingParams(max_tokens=12, temperature=0, ignore_eos=True)
    engines = [Engine(x, max_batch=1, max_queue=1).start() for x in (loaded, tiny_loaded)]
    try:
        a, b = (e.generate(ids, params) for e in engines)
    finally:
        for e in engines:
            e.stop()
    assert a.text == b.text and a.completion_tokens == 12
    # importing the same directory again changes nothing; a different one under the same version is refused
    again = import_model(checkout, model_dir, name="tiny-import", license="Apache-2.0", version="2.0.0")
    assert again.entry is None and again.release.release_digest == rel.release_digest
    (model_dir / "README.md").write_text("# tiny import\n")
    with pytest.raises(ForgeError, match="already exists"):
        import_model(checkout, model_dir, name="tiny-import", license="Apache-2.0", version="2.0.0")


def _break(kind: str, d: Path) -> str:
    """Make the model directory bad in one way; return what the error must mention."""
    config = json.loads((d / "config.json").read_text())
    if kind == "pickle":
        (d / "pytorch_model.bin").write_bytes(b"\x80\x04K\x01.")
        return "pickle"
    if kind == "pickle-deep":
        (d / "original").mkdir()
        (d / "original" / "consolidated.00.pth").write_bytes(b"\x80\x04K\x01.")
        return "pickle"
    if kind == "auto_map":
        config["auto_map"] = {"AutoModelForCausalLM": "modeling_x.XForCausalLM"}
        (d / "config.json").write_text(json.dumps(config))
        return "custom model code"
    if kind == "python":
        (d / "modeling_x.py").write_text("import os\n")
        return "Python code"
    if kind == "no-tokenizer":
        (d / "tokenizer.json").unlink()
        return "no tokenizer.json"
    if kind == "no-config":
        (d / "config.json").unlink()
        return "no config.json"
    if kind == "symlink-out":
        outside = d.parent / "elsewhere.json"
        outside.write_text("{}")
        (d / "special_tokens_map.json").symlink_to(outside)
        return "outside"
    if kind == "index-missing-shard":
        (d / "model.safetensors.index.json").write_text(json.dumps(
            {"metadata": {}, "weight_map": {"model.embed_tokens.weight": "model-00002-of-00002.safetensors"}}))
        return "does not match the shards"
    if kind == "index-wrong-tensors":
        from safetensors import safe_open

        with safe_open(str(d / "model.safetensors"), "pt") as f:
            names = list(f.keys())
        (d / "model.safetensors.index.json").write_text(json.dumps(
            {"metadata": {}, "weight_map": {n: "model.safetensors" for n in names[1:] + ["model.extra.weight"]}}))
        return "does not hold the tensors"
    if kind == "truncated":
        data = (d / "model.safetensors").read_bytes()
        (d / "model.safetensors").write_bytes(data[: len(data) // 2])
        return "past the end"
    if kind == "wrong-architecture":
        config["num_hidden_layers"] = config["num_hidden_layers"] + 1
        (d / "config.json").write_text(json.dumps(config))
        return "do not match config.json"
    if kind == "quantized":
        config["quantization_config"] = {"quant_method": "gptq"}
        (d / "config.json").write_text(json.dumps(config))
        return "already quantized"
    if kind == "stray-file":
        (d / "weights.npz").write_bytes(b"x")
        return "not part of a model directory"
    raise AssertionError(kind)


KINDS = ["pickle", "pickle-deep", "auto_map", "python", "no-tokenizer", "no-config", "symlink-out",
         "index-missing-shard", "index-wrong-tensors", "truncated", "wrong-architecture", "quantized", "stray-file"]


@pytest.mark.parametrize("kind", KINDS)
def test_a_bad_directory_is_refused_and_nothing_is_written(checkout, model_dir, kind):
    from serving.importer import import_model

    expected = _break(kind, model_dir)
    before = snapshot(checkout.root)
    with pytest.raises(InputError, match=expected) as info:
        import_model(checkout, model_dir, name="bad-import", license="MIT")
    assert "nothing was imported" in str(info.value)
    assert snapshot(checkout.root) == before
    assert not checkout.store_dir.exists() or not any(p.is_file() for p in checkout.store_dir.rglob("*"))


def test_bad_names_licences_and_base_models_are_refused(checkout, model_dir):
    from serving.importer import import_model

    before = snapshot(checkout.root)
    with pytest.raises(InputError, match="name"):
        import_model(checkout, model_dir, name="Bad Name!", license="MIT")
    with pytest.raises(InputError, match="licen|SPDX"):
        import_model(checkout, model_dir, name="ok-name", license="Apache 2.0!")
    with pytest.raises(InputError, match="not found"):
        import_model(checkout, model_dir, name="ok-name", license="MIT", base_model="model/nothing@1.0.0")
    assert snapshot(checkout.root) == before


def test_a_consistent_sharded_checkpoint_passes_the_checks(checkout, model_dir):
    from safetensors.torch import load_file, save_file

    from serving.importer import plan_import

    tensors = load_file(str(model_dir / "model.safetensors"))
    names = sorted(tensors)
    shards = {"model-00001-of-00002.safetensors": names[::2], "model-00002-of-00002.safetensors": names[1::2]}
    for shard, keys in shards.items():
        save_file({k: tensors[k] for k in keys}, str(model_dir / shard), metadata={"format": "pt"})
    (model_dir / "model.safetensors").unlink()
    (model_dir / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {}, "weight_map": {k: s for s, keys in shards.items() for k in keys}}))
    release, files = plan_import(checkout, model_dir, name="sharded", license="MIT")
    assert {a.path for a in release.manifest.artifacts} >= set(shards) | {"model.safetensors.index.json"}


def test_the_import_command(checkout, model_dir, tiny_forge, tmp_path):
    env = dict(tiny_forge.env, COMMONFORGE_STORE=str(checkout.store_dir))
    cmd = [sys.executable, "-m", "commonforge", "import"]
    ok = subprocess.run([*cmd, str(model_dir), "--name", "cli-import", "--license", "Apache-2.0"],
                        cwd=checkout.root, env=env, capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert "imported model/cli-import@1.0.0" in ok.stdout
    assert (checkout.root / "registry" / "entries" / "models" / "cli-import" / "1.0.0.yaml").is_file()
    os.symlink("/etc/hostname", model_dir / "vocab.txt")
    bad = subprocess.run([*cmd, str(model_dir), "--name", "cli-bad", "--license", "MIT"],
                         cwd=checkout.root, env=env, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "outside" in bad.stderr
    assert not (checkout.root / "registry" / "entries" / "models" / "cli-bad").exists()
