"""``commonforge release RECIPE``: turn a finished ``dvc repro`` into a registry release.

Writes ``registry/entries/models/<name>/<version>.yaml`` (the build manifest and its digest)
and the provenance record beside it, puts every artifact into the store, and pushes the
recipe's DVC outputs to the default remote. Release version = ``<recipe version>.0.0``.

Refused when the tree differs from HEAD (other than ``dvc.lock`` and the release's own
records): the source commit must be exactly what was built. Releasing a recipe whose
release already exists is a *rebuild*: the digests are compared and the store filled, and
a different result is never written under the same version (drafts can be replaced on
request, published releases never).
"""

from __future__ import annotations

import getpass
import json
import os
import platform
import socket
from dataclasses import dataclass
from pathlib import Path

from commonforge.errors import BuildError, ForgeError, InputError
from commonforge.settings import Settings
from pipelines.select import training_splits
from pipelines.stage import load_recipe, model_dir, read_timings, utc_now
from pipelines.workspace import (
    Params,
    ensure_dvc_remote,
    head_commit,
    lock_digest,
    recipe_stages,
    run_dvc,
    tree_changes,
)
from commonforge import __version__
from registry import Ref, Registry, Store
from registry.digest import sha256_file
from registry.schema import (
    Artifact,
    BuildEnvironment,
    BuildManifest,
    DatasetBuild,
    ProvenanceRecord,
    Recipe,
    RecipePin,
    Release,
    SplitDigest,
)

# (path in the release, path under build/models/<recipe>/, stage that made it)
CORE_FILES: tuple[tuple[str, str, str], ...] = (
    ("tokenizer.json", "tokenizer/tokenizer.json", "tokenizer"),
    ("tokenizer_config.json", "tokenizer/tokenizer_config.json", "tokenizer"),
    ("config.json", "model/config.json", "train"),
    ("generation_config.json", "model/generation_config.json", "train"),
    ("model.safetensors", "model/model.safetensors", "train"),
)
VARIANT_FILES = ("config.json", "model.safetensors")
# The DVC stages (per recipe) whose outputs the build manifest records, in pipeline order.
MANIFEST_STAGES = ("tokenizer", "train", "quantize")


def release_version(recipe: Recipe) -> str:
    return f"{recipe.version}.0.0"


def release_files(root: Path, recipe: Recipe) -> list[tuple[str, Path, str, str | None]]:
    """(release path, build file, stage, variant) for every artifact of the recipe's release."""
    out = model_dir(root, recipe)
    files = [(rel, out / src, stage, None) for rel, src, stage in CORE_FILES]
    for v in recipe.quantization:
        for name in VARIANT_FILES:
            files.append((f"variants/{v.name}/{name}", out / "variants" / v.name / name, "quantize", v.name))
    missing = [str(p) for _, p, _, _ in files if not p.is_file()]
    if missing:
        raise BuildError(
            f"{recipe.ref} is not fully built; missing: {', '.join(missing)}",
            hint=f"run `commonforge build {recipe.name}` (or `dvc repro`) first",
        )
    return files


def build_manifest(root: Path, recipe: Recipe, source_commit: str) -> BuildManifest:
    """The build manifest of the recipe's outputs in ``root/build`` (hashes every artifact)."""
    env_path = model_dir(root, recipe) / "train" / "environment.json"
    if not env_path.is_file():
        raise BuildError(f"{env_path} is missing", hint=f"run `dvc repro train@{recipe.name}`")
    env = BuildEnvironment.model_validate(json.loads(env_path.read_text(encoding="utf-8")))
    datasets = [
        DatasetBuild(ref=ref, splits={k: SplitDigest.model_validate(v) for k, v in info["splits"].items()})
        for ref, info in training_splits(root, recipe).items()
    ]
    artifacts = [
        Artifact(path=rel, sha256=sha256_file(src), size=src.stat().st_size, stage=stage, variant=variant)
        for rel, src, stage, variant in release_files(root, recipe)
    ]
    return BuildManifest(
        schema_version=1,
        name=recipe.name,
        version=release_version(recipe),
        provenance="built",
        license=recipe.license,
        recipe=RecipePin(ref=recipe.ref, sha256=recipe.digest),
        source_commit=source_commit,
        lock_sha256=lock_digest(root),
        environment=env,
        datasets=datasets,
        artifacts=artifacts,
    )


def machine_info() -> dict[str, str]:
    info = {
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cores": str(os.cpu_count() or 0),
    }
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return info


def builder_name(root: Path) -> str:
    try:
        from pipelines.workspace import git_repo

        reader = git_repo(root).config_reader()
        name = reader.get_value("user", "name", default="")
        email = reader.get_value("user", "email", default="")
        if name:
            return f"{name} <{email}>" if email else str(name)
    except Exception:  # noqa: BLE001 - no git identity is fine: fall back to the login
        pass
    return getpass.getuser()


@dataclass
class ReleaseResult:
    release: Release
    path: Path | None  # the entry written; None when a rebuild confirmed an existing release
    confirmed: bool  # an identical release already existed (a rebuild)
    note: str


def comparable(manifest: BuildManifest) -> dict:
    """A manifest without its source commit: what a rebuild at a later commit must match."""
    data = manifest.model_dump(mode="json", exclude_none=True)
    data.pop("source_commit", None)
    return data


def fill_store(settings: Settings, root: Path, recipe: Recipe, manifest: BuildManifest) -> None:
    store = Store(settings.store_dir)
    for rel, src, _, _ in release_files(root, recipe):
        store.put_file(src, expected=manifest.artifact(rel).sha256)


def push_outputs(settings: Settings, root: Path, recipe: Recipe) -> None:
    """Push the recipe's DVC outputs (and its datasets') to the default remote."""
    ensure_dvc_remote(root, settings.dvc_remote)
    run_dvc(root, "push", "--quiet", "--with-deps", *recipe_stages(root, recipe.name), capture=True)


def release(settings: Settings, recipe_name: str, *, replace_draft: bool = False, push: bool = True) -> ReleaseResult:
    root = settings.root
    params = Params.load(root)
    recipe = load_recipe(root, params.recipe_ref(recipe_name) if "/" not in recipe_name else recipe_name)
    changes = tree_changes(root)
    if changes:
        shown = "\n  ".join(changes[:20])
        raise InputError(
            f"the tree differs from HEAD, so no commit describes this build:\n  {shown}",
            hint="commit (or stash) these changes, rebuild, then release; "
            "only dvc.lock and the release's own records may differ",
        )
    commit = head_commit(root)
    manifest = build_manifest(root, recipe, commit)
    reg = Registry(root)
    existing_path = reg.entry_path(Ref("model", manifest.name, manifest.version))
    if existing_path.is_file():
        existing = reg.release(f"model/{manifest.name}@{manifest.version}")
        if comparable(existing.manifest) == comparable(manifest):
            fill_store(settings, root, recipe, existing.manifest)
            if push:
                push_outputs(settings, root, recipe)
            same = "" if existing.manifest.source_commit == commit else (
                f" (built at {commit[:12]}, released from {existing.manifest.source_commit[:12]})")
            return ReleaseResult(existing, None, True,
                                 f"rebuild of {existing.ref} is identical{same}; the store now holds its artifacts")
        if not replace_draft or reg.status(existing) != "draft":
            from pipelines.compare import compare_manifests

            diff = compare_manifests(existing.manifest, manifest)
            raise ForgeError(
                f"{existing.ref} ({reg.status(existing)}) exists and this build differs from it:\n  "
                + "\n  ".join(diff.lines()[:15]),
                hint="make a new recipe version for a new model"
                + ("; or pass --replace-draft to replace the draft" if reg.status(existing) == "draft" else ""),
            )
    new = Release.from_manifest(manifest)
    fill_store(settings, root, recipe, manifest)
    if push:
        push_outputs(settings, root, recipe)
    path = reg.save_release(new, replace_draft=replace_draft)
    run_info = {}
    run_path = model_dir(root, recipe) / "train" / "run.json"
    if run_path.is_file():
        run_info = json.loads(run_path.read_text(encoding="utf-8"))
    timings = read_timings(root, recipe.name)
    for d in manifest.datasets:
        dname = d.ref.split("/", 1)[1].split("@")[0]
        for stage, seconds in read_timings(root, dname).items():
            timings[f"{stage}@{dname}"] = seconds
    prov = ProvenanceRecord(
        schema_version=1,
        release_digest=new.release_digest,
        built_by=builder_name(root),
        created_at=utc_now(),
        machine=machine_info() | {"cpu_capability": run_info.get("cpu_capability", "unknown")},
        stage_seconds=timings,
        mlflow_run_id=run_info.get("mlflow_run_id"),
        forge_version=__version__,
    )
    reg.save_record(new, "provenance", prov)
    # The evaluation results and the card are records beside the release (never in the manifest).
    from pipelines.card import evaluation_from_build, publish_cards

    evaluation = evaluation_from_build(root, recipe, new)  # None when the recipe was not evaluated
    if evaluation is not None:
        reg.save_record(new, "evals", evaluation)
    reg.save_record(new, "card", publish_cards(root, recipe, new, prov, evaluation))
    return ReleaseResult(new, path, False, f"released {new.ref} (draft) sha256:{new.release_digest}")
