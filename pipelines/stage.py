"""What every stage process shares: settings first, the recipe's pins, timing, clean errors.

    python -m pipelines.train recipe/forge-small@1

A stage's ``cli()`` builds its argparse parser and calls :func:`run_stage`, which applies the
privacy settings, runs the stage's typed ``main``, records which distributions the process
imported (``env/<stage>.json``, for the stages whose outputs the build manifest pins; see
:mod:`pipelines.manifest`), appends its wall time to ``build/timings.jsonl`` (read by
``release`` for the provenance record, never by a stage), and turns a
:class:`~commonforge.errors.ForgeError` into a message and exit code instead of a traceback in
DVC's log: a stage process is DVC's child, not the CLI's, so this is its one error boundary.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path

from commonforge import settings
from commonforge.errors import ForgeError, InputError
from pipelines.manifest import ENV_STAGES, dataset_outputs, model_outputs
from registry import Ref, Registry
from registry.digest import canonical_json
from registry.fsutil import atomic_write_bytes
from registry.refs import Kind
from registry.schema import Recipe, utc_now

TIMINGS = Path("build") / "timings.jsonl"


def load_recipe(root: Path, ref: str) -> Recipe:
    entry = Registry(root).get(ref, "recipe")
    if not isinstance(entry, Recipe):
        raise InputError(f"{ref} is not a recipe", hint="model stages take recipe/<name>@<version>")
    return entry


def record_timing(root: Path, stage: str, key: str, seconds: float) -> None:
    path = root / TIMINGS
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps({"stage": stage, "key": key, "seconds": round(seconds, 3), "finished_at": utc_now()})
    with open(path, "a", encoding="utf-8") as f:
        f.write(line + "\n")


def read_timings(root: Path, key: str) -> dict[str, float]:
    """Latest wall time per stage for ``key`` (a recipe or dataset name)."""
    path = root / TIMINGS
    out: dict[str, float] = {}
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            if rec.get("key") == key:
                out[rec["stage"]] = rec["seconds"]
    return out


def record_imports(path: Path, stage: str) -> None:
    """Write the distributions this process imported (after the stage's work) as ``path``."""
    from pipelines.determinism import imported_distributions

    record = {"stage": stage, "packages": imported_distributions()}
    atomic_write_bytes(path, canonical_json(record) + b"\n")


def run_stage(stage: str, key: str, main: Callable[[], object], *, env_path: Path | None = None) -> None:
    """Run a stage's ``main`` with timing and error handling; exits the process.

    With ``env_path``, what the process imported is recorded there once ``main`` succeeded.
    """
    started = time.perf_counter()
    try:
        main()
        if env_path is not None:
            record_imports(env_path, stage)
    except ForgeError as err:
        print(f"stage {stage}@{key} failed: {err}", file=sys.stderr)
        sys.exit(err.exit_code)
    seconds = time.perf_counter() - started
    try:
        root = settings.find_root()
        record_timing(root, stage, key, seconds)
    except ForgeError:
        pass
    print(f"stage {stage}@{key}: done in {seconds:.1f} s", file=sys.stderr)
    sys.exit(0)


def stage_cli(stage: str, doc: str | None, main: Callable[[str, Path], object], argv: list[str] | None = None,
              *, kind: Kind = "recipe") -> None:
    """The command line of a stage that takes one pinned ref: ``python -m pipelines.<stage> <ref>``."""
    parser = argparse.ArgumentParser(prog=f"python -m pipelines.{stage}", description=doc,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("ref", help=f"the {kind}, pinned: {kind}/<name>@<version>")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    root = settings.apply().root
    try:
        name = Ref.parse(args.ref, default_kind=kind).name
    except InputError as err:
        parser.error(str(err))
    env_path = None
    if stage in ENV_STAGES:
        outputs = dataset_outputs(root, name) if kind == "dataset" else model_outputs(root, name)
        env_path = outputs.stage_env(stage)
    run_stage(stage, name, lambda: main(args.ref, root), env_path=env_path)


def mlflow_experiment(forge_settings: settings.Settings, recipe: Recipe | str) -> str:
    """The id of a recipe's MLflow experiment, or of one named by a string (``finetune/<name>``),
    created on first use with its artifacts beside the tracking store."""
    import mlflow

    mlflow.set_tracking_uri(forge_settings.mlflow_uri)
    name = f"commonforge/{recipe if isinstance(recipe, str) else recipe.name}"
    exp = mlflow.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    forge_settings.mlflow_artifacts.mkdir(parents=True, exist_ok=True)
    return mlflow.create_experiment(name, artifact_location=forge_settings.mlflow_artifacts.as_uri())
