"""The release's shape, in one place: where ``build/`` keeps each stage's outputs, which of
them a release holds, and the build manifest made from them.

    build/datasets/<name>/     raw.jsonl fetch.json (fetch) · splits/ hf/ stats.json (prepare)
                               env/<stage>.json (what each stage process imported)
    build/models/<recipe>/     data/<dataset>.json (select) · tokenizer/ (tokenizer)
                               model/ train/ (train) · variants/ quantize.json (quantize)
                               eval/ (evaluate) · card/ (card) · env/<stage>.json

``build/`` is keyed by recipe and dataset *name* (params.yaml builds one version of each).
The stages write these paths, ``release`` hashes the files :func:`release_files` lists into the
:class:`~registry.schema.BuildManifest` (:func:`build_manifest`), and the explorer and the cards
read them, all through this module. It imports no stage: the stages import it, and ``release``
imports the stages. See docs/architecture.md ("Identity") for what the manifest pins and why.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from commonforge.errors import BuildError, ForgeError, InputError, NotFoundError
from pipelines.determinism import normalize_dist
from registry.digest import sha256_file
from registry.schema import (
    MANIFEST_SCHEMA,
    NO_COMMIT,
    Artifact,
    ArtifactStage,
    BuildEnvironment,
    BuildManifest,
    DatasetBuild,
    EvaluationRecord,
    PackagePin,
    Recipe,
    RecipePin,
    SplitDigest,
    lock_files_digest,
    packages_digest,
    utc_now,
)

SPLITS = ("train", "validation", "test")

# (path in the release, path under build/models/<recipe>/, stage that made it)
CORE_FILES: tuple[tuple[str, str, ArtifactStage], ...] = (
    ("tokenizer.json", "tokenizer/tokenizer.json", "tokenizer"),
    ("tokenizer_config.json", "tokenizer/tokenizer_config.json", "tokenizer"),
    ("config.json", "model/config.json", "train"),
    ("generation_config.json", "model/generation_config.json", "train"),
    ("model.safetensors", "model/model.safetensors", "train"),
)
VARIANT_FILES = ("config.json", "model.safetensors")
# The DVC stages (per recipe) whose outputs the build manifest records, in pipeline order.
MANIFEST_STAGES = ("tokenizer", "train", "quantize")
# The stages whose processes' imports make up the manifest's environment: everything upstream
# of a recorded artifact or split digest (evaluate and card only write records beside it).
DATA_ENV_STAGES = ("fetch", "prepare")
ENV_STAGES = DATA_ENV_STAGES + MANIFEST_STAGES


# --- where build/ keeps things --------------------------------------------------------------


@dataclass(frozen=True)
class DatasetOutputs:
    """``build/datasets/<name>/``: every output of one dataset's data stages."""

    dir: Path

    @property
    def raw(self) -> Path:
        return self.dir / "raw.jsonl"

    @property
    def fetch_record(self) -> Path:
        return self.dir / "fetch.json"

    @property
    def stats(self) -> Path:
        return self.dir / "stats.json"

    @property
    def hf(self) -> Path:
        return self.dir / "hf"

    def split(self, name: str) -> Path:
        if name not in SPLITS:
            raise NotFoundError(f"split {name}", candidates=SPLITS)
        return self.dir / "splits" / f"{name}.jsonl"

    def stage_env(self, stage: str) -> Path:
        return self.dir / "env" / f"{stage}.json"


@dataclass(frozen=True)
class ModelOutputs:
    """``build/models/<recipe>/``: every output of one recipe's model stages."""

    dir: Path

    @property
    def name(self) -> str:
        return self.dir.name

    @property
    def data(self) -> Path:  # select: one <dataset>.json pointer per dataset the recipe trains on
        return self.dir / "data"

    @property
    def tokenizer(self) -> Path:
        return self.dir / "tokenizer"

    @property
    def model(self) -> Path:
        return self.dir / "model"

    @property
    def weights(self) -> Path:
        return self.model / "model.safetensors"

    @property
    def config(self) -> Path:
        return self.model / "config.json"

    @property
    def train(self) -> Path:  # loss.csv, val_loss.csv, metrics.json, run.json, environment.json
        return self.dir / "train"

    @property
    def loss_csv(self) -> Path:
        return self.train / "loss.csv"

    @property
    def val_loss_csv(self) -> Path:
        return self.train / "val_loss.csv"

    @property
    def train_metrics(self) -> Path:
        return self.train / "metrics.json"

    @property
    def run_info(self) -> Path:  # wall time, tokens/s, the MLflow run id: differs per run
        return self.train / "run.json"

    @property
    def environment(self) -> Path:  # the determinism pins the train stage ran under
        return self.train / "environment.json"

    @property
    def variants(self) -> Path:
        return self.dir / "variants"

    def variant(self, name: str) -> Path:
        return self.variants / name

    @property
    def quantize_summary(self) -> Path:
        return self.dir / "quantize.json"

    @property
    def eval(self) -> Path:
        return self.dir / "eval"

    @property
    def results(self) -> Path:  # deterministic evaluation results (a DVC output)
        return self.eval / "results.json"

    @property
    def eval_metrics(self) -> Path:  # wall times, the MLflow run id (a DVC metric, differs per run)
        return self.eval / "metrics.json"

    @property
    def card(self) -> Path:
        return self.dir / "card"

    def stage_env(self, stage: str) -> Path:
        return self.dir / "env" / f"{stage}.json"


def dataset_outputs(root: Path, name: str) -> DatasetOutputs:
    return DatasetOutputs(Path(root) / "build" / "datasets" / name)


def model_outputs(root: Path, recipe: Recipe | str) -> ModelOutputs:
    """Where a recipe's outputs live (keyed by name: params.yaml builds one version)."""
    return ModelOutputs(Path(root) / "build" / "models" / (recipe if isinstance(recipe, str) else recipe.name))


def split_path(root: Path, dataset_name: str, split: str) -> Path:
    return dataset_outputs(root, dataset_name).split(split)


def read_json(path: Path) -> dict | None:
    """A build output's JSON, None when the stage has not written it; a broken file is an error."""
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as err:
        raise InputError(f"{path} is not valid JSON: {err}", hint="re-run the stage that writes it") from None


# --- what a release holds ---------------------------------------------------------------------


def release_version(recipe: Recipe) -> str:
    return f"{recipe.version}.0.0"


def release_files(root: Path, recipe: Recipe) -> list[tuple[str, Path, ArtifactStage, str | None]]:
    """(release path, build file, stage, variant) for every artifact of the recipe's release."""
    out = model_outputs(root, recipe).dir
    files: list[tuple[str, Path, ArtifactStage, str | None]] = [
        (rel, out / src, stage, None) for rel, src, stage in CORE_FILES]
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


def training_splits(root: Path, recipe: Recipe) -> dict[str, dict]:
    """The recipe's datasets -> their recorded split digests, checked against the recipe.

    Returns ``{dataset ref: {"name": ..., "splits": {split: {"sha256", "documents", "bytes"}}}}``
    from the ``select`` stage's pointers in ``build/models/<recipe>/data/``.
    """
    folder = model_outputs(root, recipe).data
    found: dict[str, dict] = {}
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        pointer = json.loads(path.read_text(encoding="utf-8"))
        found[pointer["dataset"]] = {"name": path.stem, "splits": pointer["splits"]}
    missing = [d for d in recipe.datasets if d not in found]
    extra = [d for d in found if d not in recipe.datasets]
    if missing or extra:
        raise InputError(
            f"{recipe.ref} trains on {', '.join(recipe.datasets)}, but params.yaml's training_data gives "
            f"{', '.join(sorted(found)) or 'nothing'}",
            hint="list each of the recipe's datasets under training_data (and datasets) in params.yaml",
        )
    return {d: found[d] for d in recipe.datasets}


# --- the build environment (manifest schema 2) -------------------------------------------------

_LOCK_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==([^\s;\\]+)")
_LOCK_HASH = re.compile(r"--hash=sha256:([0-9a-f]{64})")


def lock_pins(root: Path) -> dict[str, tuple[str, tuple[str, ...]]]:
    """``requirements.lock`` as {distribution: (version, sorted sha256 of its allowed files)}."""
    path = Path(root) / "requirements.lock"
    if not path.is_file():
        raise BuildError(f"{path} is missing", hint="restore requirements.lock from git")
    pins: dict[str, tuple[str, list[str]]] = {}
    current: list[str] | None = None
    for line in path.read_text(encoding="utf-8").splitlines():
        m = _LOCK_PIN.match(line)
        if m:
            current = []
            pins[normalize_dist(m.group(1))] = (m.group(2), current)
        elif current is not None and line.startswith((" ", "\t")):
            current += _LOCK_HASH.findall(line)
        else:
            current = None
    return {name: (version, tuple(sorted(set(hashes)))) for name, (version, hashes) in pins.items()}


def stage_packages(paths: list[Path]) -> dict[str, str]:
    """The union of the distributions the stage processes recorded (``env/<stage>.json``)."""
    packages: dict[str, str] = {}
    for path in paths:
        record = read_json(path)
        if record is None:
            raise BuildError(f"{path} is missing: the stage's process did not record what it imported",
                             hint="re-run the stage (dvc repro --force <stage>) with this version of commonforge")
        for dist, version in record["packages"].items():
            if packages.setdefault(dist, version) != version:
                raise BuildError(f"{dist} {packages[dist]} and {version} were both used by this build's stages",
                                 hint="rebuild everything in one environment: make venv, then dvc repro --force")
    return packages


def build_environment(root: Path, recipe: Recipe, dataset_names: list[str]) -> BuildEnvironment:
    """Python, the determinism pins, and version + lock hashes of every distribution the stages imported."""
    out = model_outputs(root, recipe)
    recorded = read_json(out.environment)
    if recorded is None:
        raise BuildError(f"{out.environment} is missing", hint=f"run `dvc repro train@{recipe.name}`")
    paths = [dataset_outputs(root, d).stage_env(s) for d in dataset_names for s in DATA_ENV_STAGES]
    paths += [out.stage_env(s) for s in MANIFEST_STAGES]
    return locked_environment(root, recorded, paths)


def locked_environment(root: Path, recorded: dict, paths: list[Path]) -> BuildEnvironment:
    """The environment of a build whose stages recorded their imports in ``paths``, checked against the lock.

    ``recorded`` holds the python version and determinism pins (:func:`pipelines.determinism.environment`).
    """
    lock = lock_pins(root)
    packages: dict[str, PackagePin] = {}
    for dist, version in sorted(stage_packages(paths).items()):
        locked = lock.get(dist)
        if locked is None or not _same_version(locked[0], version):
            raise BuildError(
                f"the build imported {dist} {version}, but requirements.lock "
                + (f"pins {dist}=={locked[0]}" if locked else f"does not list {dist}"),
                hint="the build ran outside the locked environment: run `make venv`, then rebuild "
                "(dvc repro --force); a new dependency goes into pyproject.toml and `make lock`",
            )
        packages[dist] = PackagePin(version=version, lock_sha256=lock_files_digest(locked[1]))
    return BuildEnvironment(
        python=recorded["python"],
        packages=packages,
        packages_sha256=packages_digest(packages),
        determinism=recorded["determinism"],
    )


def _same_version(locked: str, installed: str) -> bool:
    # The lock may pin a local version (torch==2.13.0+cpu); metadata reports the same string.
    return locked == installed or locked.split("+")[0] == installed


def build_manifest(root: Path, recipe: Recipe, source_commit: str) -> BuildManifest:
    """The build manifest (schema 2) of the recipe's outputs in ``root/build`` (hashes every artifact)."""
    splits = training_splits(root, recipe)
    datasets = [
        DatasetBuild(ref=ref, splits={k: SplitDigest.model_validate(v) for k, v in info["splits"].items()})
        for ref, info in splits.items()
    ]
    artifacts = [
        Artifact(path=rel, sha256=sha256_file(src), size=src.stat().st_size, stage=stage, variant=variant)
        for rel, src, stage, variant in release_files(root, recipe)
    ]
    return BuildManifest(
        schema_version=MANIFEST_SCHEMA,
        name=recipe.name,
        version=release_version(recipe),
        provenance="built",
        license=recipe.license,
        recipe=RecipePin(ref=recipe.ref, sha256=recipe.digest),
        source_commit=source_commit,
        environment=build_environment(root, recipe, [info["name"] for info in splits.values()]),
        datasets=datasets,
        artifacts=artifacts,
    )


def comparable(manifest: BuildManifest) -> dict:
    """A manifest without its source commit: what a rebuild at a later commit must match."""
    data = manifest.model_dump(mode="json", exclude_none=True)
    data.pop("source_commit", None)
    return data


def source_commit(root: Path) -> str:
    """git HEAD, or :data:`NO_COMMIT` outside git (a prospective manifest for the card and evaluate stages)."""
    from pipelines.workspace import head_commit

    try:
        return head_commit(root)
    except ForgeError:
        return NO_COMMIT


def dataset_names(manifest: BuildManifest) -> list[str]:
    """The names (the keys of build/datasets/) of the datasets a release was trained on."""
    return [d.name for d in manifest.datasets]


# --- the records beside a release -------------------------------------------------------------


def evaluation_record(root: Path, recipe: Recipe, release_digest: str,
                      evaluated_at: str | None = None) -> EvaluationRecord | None:
    """The evaluate stage's results.json as the EvaluationRecord of ``release_digest`` (None if absent).

    ``evaluated_at`` defaults to when the stage ran (eval/metrics.json), else now.
    """
    from evals.record import load_results, to_record

    out = model_outputs(root, recipe)
    if not out.results.is_file():
        return None
    doc = load_results(out.results)
    if evaluated_at is None:
        try:
            evaluated_at = (read_json(out.eval_metrics) or {})["evaluated_at"]
        except (InputError, KeyError):
            evaluated_at = None
    return to_record(doc, release_digest, evaluated_at or utc_now())
