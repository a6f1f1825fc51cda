"""Run evaluation sets on one loaded model and report :class:`registry.schema.TaskResult` rows.

    run = evaluate_model(loaded, sets, tasks, batch_size=16, contaminated={"hellaswag": {...}})
    run.results      # [TaskResult(variant, task, metric, value, stderr, items, chance, subset)]

lm-eval runs every request once (``lm_eval.evaluator.evaluate`` with per-sample logging); the
value of each ``subset="all"`` row is lm-eval's own aggregate. Standard errors and the
``subset="clean"`` rows (items without 13-gram overlap with the training text, reported only
for tasks where some item is contaminated) are aggregated here from lm-eval's per-item
metrics, with the same formulas:

* accuracy (``acc``, ``acc_norm``): the mean; stderr = sample standard deviation / sqrt(n);
* ``bits_per_byte``: -sum(ll) / sum(bytes) / ln 2 over the items (a ratio of sums, as lm-eval);
  stderr by linearization of the ratio: sqrt(sum((a_i - R b_i)^2) / (n (n - 1))) / mean(b),
  with a_i the item's bits and b_i its bytes. lm-eval itself gives no stderr for it.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field

from evals.tasks import EvalSet
from registry.schema import TaskResult

HARNESS = "lm-eval"


def harness_version() -> str:
    from importlib import metadata

    return f"{HARNESS} {metadata.version('lm_eval')}"


@dataclass
class ModelRun:
    variant: str
    results: list[TaskResult]
    seconds: float  # wall time of the lm-eval run
    forward_passes: int
    tokens: int  # input tokens the model scored (padding excluded)
    samples: dict[str, list[dict]] = field(default_factory=dict, repr=False)  # lm-eval's, per task


def aggregate(metric: str, values: list) -> tuple[float, float | None]:
    """(value, stderr) of per-item metric values, as lm-eval aggregates them."""
    n = len(values)
    if metric == "bits_per_byte":
        bits = [-ll / math.log(2) for ll, _ in values]
        nbytes = [b for _, b in values]
        ratio = sum(bits) / sum(nbytes)
        if n < 2:
            return ratio, None
        resid = sum((a - ratio * b) ** 2 for a, b in zip(bits, nbytes, strict=True))
        return ratio, math.sqrt(resid / (n * (n - 1))) / (sum(nbytes) / n)
    mean = sum(values) / n
    if n < 2:
        return mean, None
    var = sum((x - mean) ** 2 for x in values) / (n - 1)
    return mean, math.sqrt(var) / math.sqrt(n)


def _task_results(variant: str, s: EvalSet, samples: list[dict], reported: dict,
                  contaminated: set[str]) -> list[TaskResult]:
    by_id = {smp["doc"]["id"]: smp for smp in samples}
    if sorted(by_id) != sorted(s.ids):
        raise RuntimeError(f"lm-eval scored other items than asked for task {s.name}")
    rows = []
    clean_ids = [i for i in s.ids if i not in contaminated]
    subsets = [("all", s.ids)] + ([("clean", clean_ids)] if contaminated and clean_ids else [])
    for subset, ids in subsets:
        chance = EvalSet(s.name, s.shape, tuple(it for it in s.items if it["id"] in set(ids)), s.metrics).chance
        for metric in s.metrics:
            value, stderr = aggregate(metric, [by_id[i][metric] for i in ids])
            if subset == "all":
                harness_value = reported.get(f"{metric},none")
                if harness_value is None or not math.isclose(value, harness_value, rel_tol=1e-9, abs_tol=1e-12):
                    raise RuntimeError(f"{s.name} {metric}: our aggregate {value} differs from lm-eval's {harness_value}")
                value = float(harness_value)
            rows.append(TaskResult(variant=variant, task=s.name, metric=metric, value=value, stderr=stderr,
                                   items=len(ids), chance=chance if metric != "bits_per_byte" else None,
                                   subset=subset))
    return rows


def evaluate_model(loaded, sets: list[EvalSet], tasks: dict, *, batch_size: int,
                   contaminated: dict[str, set[str]] | None = None) -> ModelRun:
    """Score ``loaded`` (a serving.loader.LoadedModel) on ``sets``; ``tasks`` from evals.tasks.load_tasks."""
    from lm_eval.evaluator import evaluate

    from evals.adapter import ForgeLM

    lm = ForgeLM(loaded, batch_size=batch_size)
    started = time.perf_counter()
    quiet = logging.getLogger("lm_eval")
    level = quiet.level
    quiet.setLevel(logging.WARNING)
    try:
        out = evaluate(lm=lm, task_dict=tasks, bootstrap_iters=0, log_samples=True, verbosity="WARNING")
    finally:
        quiet.setLevel(level)
    seconds = time.perf_counter() - started
    results = []
    for s in sets:
        results += _task_results(loaded.variant, s, out["samples"][s.name], out["results"][s.name],
                                 (contaminated or {}).get(s.name, set()))
    return ModelRun(loaded.variant, results, seconds, lm.forward_passes, lm.tokens_scored, out["samples"])
