"""Build outputs the explorer reads (never writes): training curves, metrics, the quantize
summary, dataset statistics, and the MLflow run of a build.

    build/models/<recipe>/train/loss.csv, val_loss.csv, metrics.json    (pipelines.train)
    build/models/<recipe>/quantize.json                                  (pipelines.quantize)
    build/datasets/<name>/stats.json, splits/*.jsonl                     (pipelines.prepare)

``build/`` is keyed by recipe name, so it may hold another build than the release shown: the
weights there are compared with the release's manifest and the page says which it is.
"""

from __future__ import annotations

import csv
import json
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

from explorer.checkout import Forge
from registry.digest import sha256_file
from registry.refs import Ref
from registry.schema import Dataset, Release

TRAIN_LOSS = ("train", "loss.csv")
VAL_LOSS = ("train", "val_loss.csv")
TRAIN_METRICS = ("train", "metrics.json")
QUANTIZE_SUMMARY = ("quantize.json",)


def build_dir(forge: Forge, release: Release) -> Path | None:
    """``build/models/<recipe name>/`` for a built release, else None."""
    if release.manifest.recipe is None:
        return None
    return forge.root / "build" / "models" / Ref.parse(release.manifest.recipe.ref).name


@dataclass(frozen=True)
class BuildOutputs:
    folder: str
    matches_release: bool | None  # None: cannot tell (no weights in build/)
    note: str
    train_loss: tuple[tuple[int, float], ...] = ()
    val_loss: tuple[tuple[int, float], ...] = ()
    metrics: dict = field(default_factory=dict)
    quantize: dict = field(default_factory=dict)


def _read_curve(path: Path) -> tuple[tuple[int, float], ...]:
    if not path.is_file():
        return ()
    rows = []
    with open(path, encoding="utf-8", newline="") as f:
        for row in csv.DictReader(f):
            try:
                values = list(row.values())
                rows.append((int(values[0]), float(values[1])))
            except (ValueError, IndexError, TypeError):
                continue
    return tuple(rows)


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    except (OSError, ValueError):
        return {}


def build_outputs(forge: Forge, release: Release) -> BuildOutputs | None:
    """Training curves, metrics and the quantize summary from ``build/``, if this release's build is there."""
    folder = build_dir(forge, release)
    if folder is None:
        return None
    rel = str(folder.relative_to(forge.root))
    if not folder.is_dir():
        return BuildOutputs(rel, None, f"{rel}/ is not in this checkout: run `commonforge build "
                            f"{folder.name}` (or `dvc pull`) to get the training curves.")
    weights = folder / "model" / "model.safetensors"
    try:
        expected = release.manifest.artifact("model.safetensors").sha256
    except KeyError:
        expected = None
    if weights.is_file() and expected:
        same = sha256_file(weights) == expected
        note = (f"from {rel}/, the build of this release (its weights match the manifest)" if same else
                f"{rel}/ holds another build of {folder.name} (its weights differ from this release's): "
                "the curves below are that build's, not this release's")
    else:
        same, note = None, f"from {rel}/ (no weights there to check they belong to this release)"
    return BuildOutputs(
        rel, same, note,
        train_loss=_read_curve(folder.joinpath(*TRAIN_LOSS)),
        val_loss=_read_curve(folder.joinpath(*VAL_LOSS)),
        metrics=_read_json(folder.joinpath(*TRAIN_METRICS)),
        quantize=_read_json(folder.joinpath(*QUANTIZE_SUMMARY)),
    )


# --- MLflow -------------------------------------------------------------------------------


@dataclass(frozen=True)
class MlflowRun:
    run_id: str
    found: bool
    message: str
    name: str = ""
    status: str = ""
    metrics: dict[str, tuple[tuple[int, float], ...]] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)


def _sqlite_path(uri: str) -> Path | None:
    if not uri.startswith("sqlite:///"):
        return None
    return Path(uri[len("sqlite:///"):])


def mlflow_run(mlflow_uri: str, run_id: str | None) -> MlflowRun | None:
    """The run's metric histories, read-only.

    A local sqlite tracking store is opened read-only with sqlite3 (no MLflow import, no
    schema migration, nothing written); any other tracking URI goes through MLflow's client.
    """
    if not run_id:
        return None
    db = _sqlite_path(mlflow_uri)
    if db is not None:
        if not db.is_file():
            return MlflowRun(run_id, False, f"the MLflow database {db} is not on this machine")
        try:
            con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
            try:
                run = con.execute("SELECT name, status FROM runs WHERE run_uuid = ?", (run_id,)).fetchone()
                if run is None:
                    return MlflowRun(run_id, False, f"run {run_id} is not in {db} (it was tracked on another machine)")
                metrics: dict[str, list] = {}
                for key, step, value in con.execute(
                        "SELECT key, step, value FROM metrics WHERE run_uuid = ? AND is_nan = 0 "
                        "ORDER BY key, step, timestamp", (run_id,)):
                    metrics.setdefault(key, []).append((int(step), float(value)))
                params = dict(con.execute("SELECT key, value FROM params WHERE run_uuid = ?", (run_id,)).fetchall())
            finally:
                con.close()
        except sqlite3.Error as err:
            return MlflowRun(run_id, False, f"could not read {db}: {err}")
        return MlflowRun(run_id, True, f"MLflow run {run_id} in {db}", run[0] or "", run[1] or "",
                         {k: tuple(v) for k, v in metrics.items()}, params)
    try:
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=mlflow_uri)
        run = client.get_run(run_id)
        histories = {k: tuple((m.step, m.value) for m in client.get_metric_history(run_id, k))
                     for k in run.data.metrics}
        return MlflowRun(run_id, True, f"MLflow run {run_id} at {mlflow_uri}", run.info.run_name or "",
                         run.info.status, histories, dict(run.data.params))
    except Exception as err:  # an unreachable server is a message on the page, not a traceback
        return MlflowRun(run_id, False, f"could not read run {run_id} from {mlflow_uri}: {err}")


# --- datasets -----------------------------------------------------------------------------


@dataclass(frozen=True)
class DatasetBuildInfo:
    folder: str
    stats: dict  # stats.json, or {} when the dataset is not prepared here
    note: str
    split_files: dict[str, str] = field(default_factory=dict)  # split -> path relative to the root


def dataset_outputs(forge: Forge, dataset: Dataset) -> DatasetBuildInfo:
    folder = forge.root / "build" / "datasets" / dataset.name
    rel = str(folder.relative_to(forge.root))
    stats = _read_json(folder / "stats.json")
    if not stats:
        return DatasetBuildInfo(rel, {}, f"{dataset.ref} is not prepared in this checkout ({rel}/stats.json is "
                                f"missing): run `dvc repro prepare@{dataset.name}` to browse its documents.")
    if stats.get("dataset") != dataset.ref:
        return DatasetBuildInfo(rel, {}, f"{rel}/ holds {stats.get('dataset')}, not {dataset.ref}: "
                                "prepare this version to browse it.")
    files = {s: str((folder / "splits" / f"{s}.jsonl").relative_to(forge.root))
             for s in ("train", "validation", "test") if (folder / "splits" / f"{s}.jsonl").is_file()}
    return DatasetBuildInfo(rel, stats, f"statistics from {rel}/stats.json", files)
