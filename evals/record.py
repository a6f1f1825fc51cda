"""The evaluation results document (``build/models/<recipe>/eval/results.json``) and its record.

results.json holds exactly the fields of :class:`registry.schema.EvaluationRecord` except
``schema_version``, ``release_digest`` and ``evaluated_at``: what does not depend on which
release it is filed under or when it ran, so a rebuild writes the same bytes. The release step
adds those three with :func:`to_record`.
"""

from __future__ import annotations

import json
from pathlib import Path

from commonforge.errors import InputError
from registry.schema import ContaminationResult, EvaluationRecord, TaskResult

RECORD_ONLY = ("schema_version", "release_digest", "evaluated_at")
FIELDS = tuple(f for f in EvaluationRecord.model_fields if f not in RECORD_ONLY)


def results_document(harness: str, results: list[TaskResult], contamination: list[ContaminationResult],
                     limits: dict[str, int]) -> dict:
    doc = {
        "harness": harness,
        "results": [r.model_dump(mode="json") for r in results],
        "contamination": [c.model_dump(mode="json") for c in contamination],
        "limits": dict(sorted(limits.items())),
    }
    assert tuple(sorted(doc)) == tuple(sorted(FIELDS)), "results.json must mirror EvaluationRecord"
    return doc


def dumps(doc: dict) -> bytes:
    """Stable bytes: sorted keys, two-space indent, a final newline."""
    return json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False).encode("utf-8") + b"\n"


def load_results(path: Path) -> dict:
    if not path.is_file():
        raise InputError(f"{path} does not exist", hint="run the evaluate stage first (dvc repro evaluate@<recipe>)")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as err:
        raise InputError(f"{path} is not valid JSON ({err})", hint="re-run the evaluate stage") from None
    if not isinstance(doc, dict) or sorted(doc) != sorted(FIELDS):
        found = sorted(doc) if isinstance(doc, dict) else type(doc).__name__
        raise InputError(f"{path} has fields {found}, expected {sorted(FIELDS)}", hint="re-run the evaluate stage")
    return doc


def to_record(doc: dict, release_digest: str, evaluated_at: str) -> EvaluationRecord:
    """The EvaluationRecord of a results document, filed under ``release_digest``."""
    return EvaluationRecord.model_validate(
        {**doc, "release_digest": release_digest, "evaluated_at": evaluated_at})
