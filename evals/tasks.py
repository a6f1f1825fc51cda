"""Evaluation sets as lm-eval tasks: JSON-lines data + a YAML config per task, written at run time.

    sets = [benchmark_set(archive, "hellaswag", 100), *heldout_sets(test_documents, per_source=20)]
    folder = write_tasks(sets, build_dir / "eval" / "tasks")
    tasks = load_tasks(folder, [s.name for s in sets])     # lm-eval's task dict

Each task's data is a JSON-lines file named after its content digest
(``<task>-<sha256[:16]>.jsonl``), so the ``datasets`` cache, which keys local files by path,
can never serve stale items; that cache lives in the task folder too (``datasets-cache/``).
The YAML names the data file by absolute path (``dataset_path: json``,
``dataset_kwargs.data_files``): lm-eval resolves relative ``data_files`` against the current
directory, not the YAML's. Tasks are loaded with ``TaskManager(include_path=folder,
include_defaults=False)``, which skips indexing lm-eval's thousands of built-in tasks.

Held-out sets: the first ``per_source`` documents of each training source's test split (in
split order), each cut to at most ``HELDOUT_MAX_CHARS`` characters at a whitespace boundary
(a few windows of context per document; whole Shakespeare plays would dominate the
evaluation's time without telling more), scored with ``loglikelihood_rolling`` as bits per byte.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import yaml

from commonforge.errors import InputError
from evals.benchmarks import BENCHMARKS, BenchmarkArchive, benchmark, chance

HELDOUT_PREFIX = "heldout_"
HELDOUT_MAX_CHARS = 4000  # characters of each held-out document scored (about 1,000 tokens)
DATASETS_CACHE = "datasets-cache"  # the `datasets` library's cache of the items, inside the task folder


@dataclass(frozen=True)
class EvalSet:
    """One evaluation task's items, in evaluation order."""

    name: str  # the task name, e.g. "hellaswag" or "heldout_sotu"
    shape: str  # "choice", "contexts", "lastword" or "rolling" (see evals.benchmarks)
    items: tuple[dict, ...]
    metrics: tuple[str, ...]  # lm-eval metric names, headline first
    license: str | None = None  # the benchmark data's license (None: the training data's own)

    @property
    def chance(self) -> float | None:
        return chance(self.shape, list(self.items))

    @property
    def ids(self) -> list[str]:
        return [it["id"] for it in self.items]


def benchmark_set(archive: BenchmarkArchive, name: str, limit: int | None) -> EvalSet:
    b = benchmark(name)
    return EvalSet(b.name, b.shape, tuple(archive.items(name, limit)), b.metrics, b.license)


def heldout_name(source: str, dataset: str | None = None) -> str:
    return f"{HELDOUT_PREFIX}{dataset}_{source}" if dataset else f"{HELDOUT_PREFIX}{source}"


def heldout_sets(documents: Iterable[dict], per_source: int, *, dataset: str | None = None,
                 max_chars: int = HELDOUT_MAX_CHARS) -> list[EvalSet]:
    """Held-out bits-per-byte sets: the first ``per_source`` documents of each source, in order.

    ``documents`` are split documents (``{"id", "source", "text"}``); ``dataset`` goes into
    the task name when a recipe trains on several datasets (source ids are unique only within one).
    """
    chosen: dict[str, list[dict]] = {}
    for doc in documents:
        picked = chosen.setdefault(doc["source"], [])
        if len(picked) < per_source:
            picked.append({"id": doc["id"], "text": _cut(doc["text"], max_chars)})
    return [EvalSet(heldout_name(src, dataset), "rolling", tuple(items), ("bits_per_byte",))
            for src, items in sorted(chosen.items()) if items]


def _cut(text: str, max_chars: int) -> str:
    """At most ``max_chars`` characters, ending at a whitespace boundary where there is one."""
    if len(text) <= max_chars:
        return text
    head = text[:max_chars]
    cut = max(head.rfind(" "), head.rfind("\n"))
    return head[:cut] if cut > max_chars // 2 else head


def is_known_task(name: str) -> bool:
    return name in BENCHMARKS or name.startswith(HELDOUT_PREFIX)


# --- lm-eval task configs -----------------------------------------------------------------


def lastword_results(doc: dict, results: list) -> dict:
    """LAMBADA: bits per byte of the last word (its leading space included) and greedy accuracy.

    ``results[0]`` is lm-eval's ``(loglikelihood in nats, is_greedy)`` of the continuation.
    ``bits_per_byte`` is aggregated as -sum(ll) / sum(bytes) / ln 2 (lm-eval's aggregation).
    """
    ll, is_greedy = results[0]
    return {"bits_per_byte": (ll, len(doc["continuation"].encode("utf-8"))), "acc": int(is_greedy)}


def _metric(name: str) -> dict:
    if name == "bits_per_byte":
        return {"metric": name, "aggregation": "bits_per_byte", "higher_is_better": False}
    return {"metric": name, "aggregation": "mean", "higher_is_better": True}


def task_config(s: EvalSet, data_file: Path) -> dict:
    """The lm-eval YAML config of one set, reading ``data_file`` (absolute)."""
    config: dict = {
        "task": s.name,
        "dataset_path": "json",
        # The datasets cache stays beside the data (never in ~/.cache, whatever HF_HOME says).
        "dataset_kwargs": {"data_files": {"test": str(data_file.resolve())},
                           "cache_dir": str((data_file.parent / DATASETS_CACHE).resolve())},
        "test_split": "test",
        "num_fewshot": 0,
        "metric_list": [_metric(m) for m in s.metrics],
        "metadata": {"version": 1},
    }
    if s.shape == "choice":
        # The choices are OLMo's continuations with their leading space: no extra delimiter.
        config.update(output_type="multiple_choice", doc_to_text="query", doc_to_choice="choices",
                      doc_to_target="gold", target_delimiter="")
    elif s.shape == "contexts":
        # lm-eval's "multiple inputs": doc_to_text gives the gold index, the choices are contexts.
        config.update(output_type="multiple_choice", doc_to_text="gold", doc_to_choice="contexts",
                      doc_to_target="continuation", target_delimiter="")
    elif s.shape == "lastword":
        config.update(output_type="loglikelihood", doc_to_text="context", doc_to_target="continuation",
                      target_delimiter="")
    elif s.shape == "rolling":
        config.update(output_type="loglikelihood_rolling", doc_to_text="", doc_to_target="text")
    else:
        raise ValueError(f"unknown item shape {s.shape!r}")
    return config


def write_tasks(sets: list[EvalSet], folder: Path) -> Path:
    """Write each set's JSON lines and YAML config into ``folder`` (replacing what was there)."""
    import shutil

    folder.mkdir(parents=True, exist_ok=True)
    for old in [*folder.glob("*.yaml"), *folder.glob("*.jsonl")]:
        old.unlink()
    shutil.rmtree(folder / DATASETS_CACHE, ignore_errors=True)
    names = [s.name for s in sets]
    if len(set(names)) != len(names):
        raise InputError(f"a task is listed twice: {', '.join(sorted({n for n in names if names.count(n) > 1}))}")
    for s in sets:
        if not s.items:
            raise InputError(f"task {s.name} has no items to evaluate", hint="the task's data is empty")
        data = "".join(json.dumps(it, ensure_ascii=False, sort_keys=True) + "\n" for it in s.items).encode("utf-8")
        data_file = folder / f"{s.name}-{hashlib.sha256(data).hexdigest()[:16]}.jsonl"
        data_file.write_bytes(data)
        text = yaml.safe_dump(task_config(s, data_file), sort_keys=False, allow_unicode=True)
        if s.shape == "lastword":
            text += "process_results: !function evals.tasks.lastword_results\n"
        (folder / f"{s.name}.yaml").write_text(text, encoding="utf-8")
    return folder


def load_tasks(folder: Path, names: list[str]) -> dict:
    """lm-eval's task dict (``{"tasks": {name: Task}, "groups": ..., "group_map": ...}``) for the
    configs in ``folder``; lm-eval's built-in tasks are never indexed."""
    from lm_eval.tasks import TaskManager

    manager = TaskManager(include_path=str(folder), include_defaults=False)
    missing = [n for n in names if n not in manager.all_tasks]
    if missing:
        raise InputError(f"no task config for {', '.join(missing)} in {folder}")
    return manager.load(list(names))
