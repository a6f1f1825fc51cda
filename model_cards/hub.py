"""The Hugging Face card metadata: license ids, evaluation datasets, the ``model-index``.

A card's YAML front matter is what the Hub (and ``huggingface_hub.ModelCard``) reads:
``license`` must be one of the Hub's lowercase ids (an SPDX expression the Hub has no id
for becomes ``other`` plus a ``license_name``), and ``model-index`` lists every evaluation
result as task / dataset / metrics. Our results differ by variant (full precision or a
quantized variant) and subset (all items, or only those without training-data overlap);
the model-index has one model entry, so both are named in each metric's ``name``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from registry.schema import EvaluationRecord, TaskResult, spdx_ids

# The Hub's license ids for the SPDX ids our entries use (the Hub lowercases SPDX ids;
# a few it names differently). Anything else becomes `other` with a license_name.
HUB_LICENSES: dict[str, str] = {
    s.lower(): s.lower()
    for s in (
        "Apache-2.0", "MIT", "CC0-1.0", "CC-BY-2.0", "CC-BY-2.5", "CC-BY-3.0", "CC-BY-4.0",
        "CC-BY-SA-3.0", "CC-BY-SA-4.0", "CC-BY-NC-2.0", "CC-BY-NC-3.0", "CC-BY-NC-4.0",
        "CC-BY-ND-4.0", "CC-BY-NC-ND-3.0", "CC-BY-NC-ND-4.0", "CC-BY-NC-SA-2.0", "CC-BY-NC-SA-3.0",
        "CC-BY-NC-SA-4.0", "BSD-2-Clause", "BSD-3-Clause", "BSD-3-Clause-Clear", "BSL-1.0",
        "AFL-3.0", "Artistic-2.0", "ECL-2.0", "EPL-1.0", "EPL-2.0", "EUPL-1.1", "EUPL-1.2",
        "AGPL-3.0", "GPL-2.0", "GPL-3.0", "LGPL-2.1", "LGPL-3.0", "ISC", "MPL-2.0", "OFL-1.1",
        "OSL-3.0", "PostgreSQL", "NCSA", "Unlicense", "Zlib", "WTFPL", "CDLA-Sharing-1.0",
        "CDLA-Permissive-1.0", "CDLA-Permissive-2.0", "LPPL-1.3c", "MS-PL",
    )
} | {"pddl-1.0": "pddl", "odbl-1.0": "odbl", "odc-by-1.0": "odc-by", "etalab-2.0": "etalab-2.0"}


def hub_license(expression: str) -> str | None:
    """The Hub's id for a single-license SPDX expression, or None (then: `other`)."""
    ids = spdx_ids(expression)
    if len(ids) != 1:
        return None
    key = next(iter(ids)).lower()
    key = key.removesuffix("-only")  # GPL-3.0-only is the Hub's gpl-3.0
    return HUB_LICENSES.get(key)


def license_slug(expression: str) -> str:
    """An id-like name for an SPDX expression the Hub has no id for: "cc0-1.0-and-mit"."""
    return re.sub(r"[^a-z0-9.]+", "-", expression.lower()).strip("-")


def license_fields(expression: str) -> dict[str, str]:
    """``license`` (and ``license_name`` where the Hub needs one) for a model card."""
    hub = hub_license(expression)
    return {"license": hub} if hub else {"license": "other", "license_name": license_slug(expression)}


def dataset_licenses(expression: str) -> str | list[str]:
    """A dataset card's ``license``: the Hub takes a list, one id per license in the expression."""
    out = []
    for sid in sorted(spdx_ids(expression), key=str.lower):
        hub = hub_license(sid)
        out.append(hub or "other")
    out = sorted(set(out), key=out.index)
    return out[0] if len(out) == 1 else out


# --- evaluation tasks -------------------------------------------------------------------


@dataclass(frozen=True)
class TaskInfo:
    """What an lm-eval task evaluates on, in the Hub's terms."""

    title: str  # a reader's name, e.g. "ARC (Easy)"
    dataset_type: str  # the dataset's id, e.g. "allenai/ai2_arc"
    config: str | None = None
    split: str | None = None
    kind: str = "multiple choice"  # how lm-eval scores it: "multiple choice", "next word", "held-out text"


# The tasks our recipes name, with lm-eval's dataset, config and scored split.
TASKS: dict[str, TaskInfo] = {
    "lambada": TaskInfo("LAMBADA", "lambada", None, "test", "next word"),
    "lambada_openai": TaskInfo("LAMBADA (OpenAI)", "EleutherAI/lambada_openai", "default", "test", "next word"),
    "lambada_standard": TaskInfo("LAMBADA (standard)", "cimec/lambada", None, "test", "next word"),
    "hellaswag": TaskInfo("HellaSwag", "Rowan/hellaswag", None, "validation"),
    "piqa": TaskInfo("PIQA", "baber/piqa", None, "validation"),
    "arc_easy": TaskInfo("ARC (Easy)", "allenai/ai2_arc", "ARC-Easy", "test"),
    "arc_challenge": TaskInfo("ARC (Challenge)", "allenai/ai2_arc", "ARC-Challenge", "test"),
    "winogrande": TaskInfo("WinoGrande", "allenai/winogrande", "winogrande_xl", "validation"),
    "sciq": TaskInfo("SciQ", "allenai/sciq", None, "test"),
    "boolq": TaskInfo("BoolQ", "aps/super_glue", "boolq", "validation"),
}

METRIC_TITLES: dict[str, str] = {
    "acc": "accuracy",
    "acc_norm": "length-normalized accuracy",
    "perplexity": "perplexity",
    "word_perplexity": "word perplexity",
    "byte_perplexity": "byte perplexity",
    "bits_per_byte": "bits per byte",
    "exact_match": "exact match",
    "f1": "F1",
    "mcc": "Matthews correlation",
}


def task_info(task: str) -> TaskInfo:
    if task in TASKS:
        return TASKS[task]
    if task.startswith("heldout_"):  # the evaluate stage's bits per byte on one source's test documents
        source = task.removeprefix("heldout_")
        return TaskInfo(f"held-out test documents of source {source}", task, None, "test", "held-out text")
    return TaskInfo(task, task, None, None, "other")


def metric_title(metric: str) -> str:
    return METRIC_TITLES.get(metric, metric.replace("_", " "))


def variant_title(variant: str) -> str:
    return "full precision" if variant == "full" else variant


def result_label(r: TaskResult) -> str:
    """The metric's name in the model-index: metric, variant and (if not all items) subset."""
    parts = [metric_title(r.metric), variant_title(r.variant)]
    if r.subset != "all":
        parts.append(f"{r.subset} subset")
    return f"{parts[0]} ({', '.join(parts[1:])})"


def model_index(model_name: str, evaluation: EvaluationRecord) -> list[dict[str, Any]]:
    """The ``model-index`` of a card: one result per task, one metric per recorded TaskResult.

    Values are the record's floats unrounded, so the index and the record agree exactly.
    """
    by_task: dict[str, list[TaskResult]] = {}
    for r in evaluation.results:
        by_task.setdefault(r.task, []).append(r)
    results = []
    for task, rows in by_task.items():
        info = task_info(task)
        dataset: dict[str, Any] = {"name": info.title, "type": info.dataset_type}
        if info.config:
            dataset["config"] = info.config
        if info.split:
            dataset["split"] = info.split
        results.append({
            "task": {"type": "text-generation", "name": "Text Generation"},
            "dataset": dataset,
            "metrics": [{"type": r.metric, "value": r.value, "name": result_label(r)} for r in rows],
        })
    return [{"name": model_name, "results": results}] if results else []
