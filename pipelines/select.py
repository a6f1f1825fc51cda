"""Stage ``select``: record which prepared dataset splits a recipe trains on.

    python -m pipelines.select forge-small literary-pd

Writes ``build/models/<recipe>/data/<dataset>.json``: the dataset's ref and the sha256 of each
split. It exists so that DVC links each recipe to exactly the datasets it uses (a model stage
depends on the ``data/`` folder, whose files are this stage's outputs), and so that later stages
verify the splits against these digests before reading them.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from pathlib import Path

from commonforge import settings
from commonforge.errors import BuildError, IntegrityError
from pipelines.manifest import dataset_outputs, model_outputs, split_path, training_splits
from pipelines.stage import run_stage
from registry.digest import canonical_json, sha256_file
from registry.fsutil import atomic_write_bytes
from registry.schema import Recipe


def main(recipe_name: str, dataset_name: str, root: Path) -> Path:
    stats_path = dataset_outputs(root, dataset_name).stats
    if not stats_path.is_file():
        raise BuildError(
            f"{stats_path} is missing: dataset {dataset_name} is not prepared",
            hint=f"run `dvc repro prepare@{dataset_name}` (params.yaml must list it under datasets)",
        )
    stats = json.loads(stats_path.read_text(encoding="utf-8"))
    pointer = {"dataset": stats["dataset"], "splits": stats["splits"]}
    out = model_outputs(root, recipe_name).data / f"{dataset_name}.json"
    atomic_write_bytes(out, canonical_json(pointer) + b"\n")
    return out


def dataset_documents(root: Path, recipe: Recipe, dataset_ref: str, split: str) -> Iterator[dict]:
    """One of the recipe's datasets' documents of ``split``, the split verified first."""
    info = training_splits(root, recipe)[dataset_ref]
    path = split_path(root, info["name"], split)
    expected = info["splits"][split]["sha256"]
    actual = sha256_file(path)
    if actual != expected:
        raise IntegrityError(str(path), expected, actual, hint=f"re-run `dvc repro` for {dataset_ref}")
    with open(path, encoding="utf-8") as f:
        for line in f:
            yield json.loads(line)


def iter_documents(root: Path, recipe: Recipe, split: str) -> Iterator[dict]:
    """Documents of ``split`` over the recipe's datasets, in order, each split verified first."""
    for ref in recipe.datasets:
        yield from dataset_documents(root, recipe, ref, split)


def cli(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m pipelines.select", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("recipe", help="recipe name, e.g. forge-small")
    parser.add_argument("dataset", help="dataset name, e.g. literary-pd")
    args = parser.parse_args(argv)
    root = settings.apply().root
    run_stage("select", f"{args.recipe}.{args.dataset}", lambda: main(args.recipe, args.dataset, root))


if __name__ == "__main__":
    cli()
