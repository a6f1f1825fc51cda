"""Shared test helpers: sample entries, a copy of the project as a real git repo, CLI runs."""

from __future__ import annotations

import copy
import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
PRIVACY_DIR = Path(__file__).resolve().parent / "privacy" / "audit"

SHA_A = "a" * 64
SHA_B = "b" * 64

DATASET = {
    "schema_version": 1,
    "name": "sample",
    "version": "1",
    "title": "A sample dataset",
    "description": "A dataset used only by the registry tests, with one local source.",
    "license": "CC0-1.0",
    "sources": [
        {
            "id": "texts",
            "title": "Some texts",
            "kind": "local",
            "path": "texts",
            "sha256": SHA_A,
            "license": "CC0-1.0",
            "include": ["*.txt"],
            "extract": {"format": "text"},
        }
    ],
    "datasheet": {k: f"The {k} section of the sample datasheet, long enough to be real." for k in
                  ("motivation", "composition", "collection", "preprocessing", "uses", "limitations", "maintenance")},
}

RECIPE = {
    "schema_version": 1,
    "name": "sample",
    "version": "1",
    "title": "A sample recipe",
    "description": "A recipe used only by the registry tests; never built.",
    "datasets": ["dataset/sample@1"],
    "tokenizer": {"vocab_size": 512},
    "architecture": {
        "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 128,
    },
    "training": {"steps": 10, "batch_size": 2, "seq_len": 64, "learning_rate": 0.001},
    "license": "Apache-2.0",
    "intended_use": "Testing the registry code paths and nothing else at all.",
    "out_of_scope": ["Everything that is not a registry test of this project."],
    "limitations": ["It is never trained, so it has no behaviour to speak of."],
}

MANIFEST = {
    "schema_version": 1,
    "name": "sample",
    "version": "1.0.0",
    "provenance": "built",
    "license": "Apache-2.0",
    "recipe": {"ref": "recipe/sample@1", "sha256": SHA_A},
    "source_commit": "0" * 40,
    "lock_sha256": SHA_B,
    "environment": {"python": "3.11", "packages": {"torch": "2.13.0+cpu"}, "determinism": {"threads": "2"}},
    "datasets": [{"ref": "dataset/sample@1", "splits": {
        "train": {"sha256": SHA_A, "documents": 10, "bytes": 1000},
        "validation": {"sha256": SHA_B, "documents": 1, "bytes": 100},
        "test": {"sha256": SHA_B, "documents": 1, "bytes": 100},
    }}],
    "artifacts": [
        {"path": "model.safetensors", "sha256": SHA_A, "size": 123, "stage": "train"},
        {"path": "tokenizer.json", "sha256": SHA_B, "size": 45, "stage": "tokenizer"},
    ],
}


def sample(name: str) -> dict:
    return copy.deepcopy({"dataset": DATASET, "recipe": RECIPE, "manifest": MANIFEST}[name])


def write_yaml(path: Path, data) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def make_registry(root: Path, *, release: bool = True) -> Path:
    """A minimal valid checkout: pyproject.toml, the bootstrap governance policy, and registry/entries
    with a dataset, recipe, release."""
    from registry.schema import BuildManifest, Recipe, Release

    root.mkdir(parents=True, exist_ok=True)
    policy = root / "registry" / "governance" / "policy"
    policy.mkdir(parents=True, exist_ok=True)
    (policy / "0.yaml").write_bytes((REPO / "registry" / "governance" / "policy" / "0.yaml").read_bytes())
    (root / "pyproject.toml").write_text("[project]\nname='x'\n")
    (root / "texts").mkdir(parents=True, exist_ok=True)
    (root / "texts" / "a.txt").write_text("hello\n")
    entries = root / "registry" / "entries"
    write_yaml(entries / "datasets" / "sample" / "1.yaml", sample("dataset"))
    write_yaml(entries / "recipes" / "sample" / "1.yaml", sample("recipe"))
    if release:
        manifest = sample("manifest")
        manifest["recipe"]["sha256"] = Recipe.model_validate(sample("recipe")).digest
        rel = Release.from_manifest(BuildManifest.model_validate(manifest))
        write_yaml(entries / "models" / "sample" / "1.0.0.yaml", rel.model_dump(mode="json", exclude_none=True))
    return root


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under root (for 'nothing on disk changed' assertions)."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def forge_env(tmp: Path, **extra: str) -> dict[str, str]:
    """Environment for a CLI run isolated under ``tmp`` (store, remote, MLflow, HF home)."""
    env = dict(os.environ)
    env.update({
        "COMMONFORGE_STORE": str(tmp / "state" / "store"),
        "COMMONFORGE_DVC_REMOTE": str(tmp / "state" / "dvc-remote"),
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp / 'state' / 'mlflow.db'}",
        "HF_HOME": str(tmp / "state" / "hf"),
        "PATH": str(VENV_BIN) + os.pathsep + env.get("PATH", ""),
        "COLUMNS": "200",
    })
    env.pop("COMMONFORGE_ROOT", None)
    env.update(extra)
    return env


def cli(*args: str, cwd: Path, env: dict | None = None, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(VENV_BIN / "commonforge"), *args], cwd=cwd, env=env or forge_env(cwd.parent),
        text=True, capture_output=True, timeout=timeout,
    )


def copy_project(dest: Path) -> Path:
    """The project's tracked and untracked-but-not-ignored files, as a fresh git repo with one commit."""
    files = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO, capture_output=True, check=True,
    ).stdout.decode().split("\x00")
    for rel in filter(None, files):
        src = REPO / rel
        if not src.exists() or src.is_dir():
            continue  # deleted in the working tree, or a submodule
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, target, follow_symlinks=False)
    git(dest, "init", "-q", "-b", "main")
    git(dest, "add", "-A")
    git(dest, "commit", "-q", "-m", "test copy of the project")
    return dest


def git(root: Path, *args: str) -> str:
    env = dict(os.environ, GIT_AUTHOR_NAME="Forge Test", GIT_AUTHOR_EMAIL="test@example.invalid",
               GIT_COMMITTER_NAME="Forge Test", GIT_COMMITTER_EMAIL="test@example.invalid")
    return subprocess.run(["git", *args], cwd=root, env=env, capture_output=True, text=True, check=True).stdout


def load_script(path: Path):
    """Import a script (a benchmark) as a module under its file name, for a module-scoped fixture.

    Yields the module; it is registered in ``sys.modules`` while in use (dataclasses look their
    module up there) and removed afterwards.
    """
    import importlib.util

    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(spec.name, None)


def found_forge(root: Path, keys_dir: Path, people: dict[str, tuple[str, list[str]]],
                not_after: str = "2100-01-01T00:00:00Z") -> dict:
    """Generate a key for each of ``people`` (name: (affiliation, roles)) and make them policy 1 of
    the checkout at ``root``, every founder signing. Returns name -> (signer, KeyInfo)."""
    from trust import keys as trust_keys
    from trust import policy as trust_policy

    signers = {}
    for name, (affiliation, _) in people.items():
        trust_keys.generate(keys_dir, name, affiliation, "ecdsa", None)
        signers[name] = trust_keys.load_signer(keys_dir, name, None)
    founders = [trust_policy.member(info.public(), list(roles), not_after)
                for (_, info), (_, roles) in zip(signers.values(), people.values())]
    trust_policy.propose(root, trust_policy.founding(root, founders))
    for signer, _ in signers.values():
        trust_policy.sign_proposal(root, signer, 1)
    trust_policy.apply(root)
    return signers


def other_cpu_vendor_than_committed(name: str = "forge-tiny", version: str = "1.0.0") -> str | None:
    """Why this machine cannot be expected to rebuild the committed release bit for bit, or None.

    Measured (docs/determinism.md): with the same pins, an Intel Xeon trains other weights than the
    AMD EPYC the committed releases were built on; comparisons with them hold per CPU vendor."""
    from commonforge.machine import machine_info
    from registry.catalog import Registry

    reg = Registry(REPO)
    try:
        built_on = (reg.provenance(reg.release(f"model/{name}@{version}")).machine or {}).get("cpu", "")
    except Exception:  # noqa: BLE001 - no committed release or record: nothing to compare with
        return None
    here = machine_info().get("cpu", "")
    if built_on and built_on.split()[:1] != here.split()[:1]:
        return (f"the committed release was built on {built_on!r}, this is {here!r}: bit-for-bit rebuilds are "
                "proven on the same CPU vendor only")
    return None
