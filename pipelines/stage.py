"""What every stage process shares: settings first, the recipe's pins, timing, clean errors.

    python -m pipelines.train recipe/forge-small@1

A stage's ``cli()`` builds its argparse parser and calls :func:`run_stage`, which applies the
privacy settings, runs the stage's typed ``main``, appends its wall time to
``build/timings.jsonl`` (read by ``release`` for the provenance record, never by a stage), and
turns a :class:`~commonforge.errors.ForgeError` into a message and exit code instead of a
traceback in DVC's log.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

from commonforge import settings
from commonforge.errors import ForgeError, InputError
from registry import Registry
from registry.schema import Recipe

TIMINGS = Path("build") / "timings.jsonl"


def utc_now() -> str:
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def load_recipe(root: Path, ref: str) -> Recipe:
    entry = Registry(root).get(ref, "recipe")
    if not isinstance(entry, Recipe):
        raise InputError(f"{ref} is not a recipe", hint="model stages take recipe/<name>@<version>")
    return entry


def model_dir(root: Path, recipe: Recipe) -> Path:
    """Where a recipe's build outputs live (keyed by name: params.yaml names one version)."""
    return root / "build" / "models" / recipe.name


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


def run_stage(stage: str, key: str, main: Callable[[], object]) -> None:
    """Run a stage's ``main`` with timing and error handling; exits the process."""
    started = time.perf_counter()
    try:
        main()
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


def ref_name(ref: str) -> str:
    """``recipe/forge-small@1`` -> ``forge-small`` (the key of a stage's outputs and timings)."""
    return ref.split("/", 1)[-1].split("@", 1)[0]


def stage_cli(stage: str, doc: str | None, main: Callable[[str, Path], object], argv: list[str] | None = None,
              *, kind: str = "recipe") -> None:
    """The command line of a stage that takes one pinned ref: ``python -m pipelines.<stage> <ref>``."""
    parser = argparse.ArgumentParser(prog=f"python -m pipelines.{stage}", description=doc,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("ref", help=f"the {kind}, pinned: {kind}/<name>@<version>")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    root = settings.apply().root
    run_stage(stage, ref_name(args.ref), lambda: main(args.ref, root))


def mlflow_experiment(forge_settings: settings.Settings, recipe: Recipe) -> str:
    """The id of the recipe's MLflow experiment (created on first use, artifacts in the clone)."""
    import mlflow

    mlflow.set_tracking_uri(forge_settings.mlflow_uri)
    name = f"commonforge/{recipe.name}"
    exp = mlflow.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    forge_settings.mlflow_artifacts.mkdir(parents=True, exist_ok=True)
    return mlflow.create_experiment(name, artifact_location=forge_settings.mlflow_artifacts.as_uri())
