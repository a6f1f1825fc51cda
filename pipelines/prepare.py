"""Stage ``prepare``: raw documents to cleaned, deduplicated train/validation/test splits.

    python -m pipelines.prepare dataset/literary-pd@1

Reads ``build/datasets/<name>/raw.jsonl`` (written by ``fetch`` for the same ref), then, with
the entry's ``processing`` settings:

1. cleans each text (:mod:`pipelines.textclean`) and drops what is shorter than ``min_chars``;
2. drops exact, then near duplicates, keeping the document with the smaller id
   (:mod:`pipelines.dedup`);
3. assigns each whole document to a split by a seeded hash of its id: ``u`` is the first 8 bytes
   of ``sha256(f"{seed}:{id}")`` as a big-endian integer over 2**64, in [0, 1); validation when
   ``u < validation``, test when ``u < validation + test``, train otherwise. A document's split
   never depends on the other documents, so adding a source moves nothing.

Writes under ``build/datasets/<name>/``:

* ``splits/{train,validation,test}.jsonl``: canonical JSON lines ``{"id", "source", "text"}``
  sorted by id (the same line format as ``raw.jsonl``). These bytes are what is digested.
* ``hf/``: the same splits as a Hugging Face ``DatasetDict.save_to_disk`` folder, for
  convenience. Its metadata holds random fingerprints: never take a digest over it.
* ``stats.json``: the dataset ref, the split digests ``{"splits": {split: {"sha256",
  "documents", "bytes"}}}`` (sha256 of the split's .jsonl file; bytes = UTF-8 bytes of text;
  the shape of :class:`registry.schema.SplitDigest`), per source the documents, bytes,
  characters and words per split and the documents dropped as short / exact / near duplicate,
  and the list of dropped duplicates with what they duplicate.

Running it twice gives byte-identical splits and stats.json. Later stages import
:func:`read_split` and :func:`split_digests`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from commonforge import settings
from commonforge.errors import BuildError, IntegrityError, NotFoundError
from pipelines.dedup import find_duplicates
from pipelines.fetch import document_line
from pipelines.manifest import SPLITS, dataset_outputs, split_path
from pipelines.stage import stage_cli
from pipelines.textclean import clean_text, is_short
from registry.catalog import Registry
from registry.digest import sha256_file
from registry.fsutil import atomic_write_text, atomic_writer, fsync_dir
from registry.schema import SplitDigest, SplitSpec

log = logging.getLogger(__name__)



def split_of(doc_id: str, spec: SplitSpec) -> str:
    """The split of one document: a seeded hash of its id mapped to [0, 1) (see the module docstring)."""
    u = int.from_bytes(hashlib.sha256(f"{spec.seed}:{doc_id}".encode()).digest()[:8], "big") / 2**64
    if u < spec.validation:
        return "validation"
    if u < spec.validation + spec.test:
        return "test"
    return "train"


def _counts(texts: list[str]) -> dict[str, int]:
    return {
        "documents": len(texts),
        "bytes": sum(len(t.encode("utf-8")) for t in texts),
        "characters": sum(len(t) for t in texts),
        "words": sum(len(t.split()) for t in texts),
    }


def _read_raw(path: Path) -> list[dict]:
    if not path.is_file():
        raise BuildError(f"{path} is missing", hint="run the fetch stage first (dvc repro, or python -m pipelines.fetch REF)")
    docs = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            try:
                doc = json.loads(line)
                docs.append({"id": doc["id"], "source": doc["source"], "text": doc["text"]})
            except (ValueError, KeyError, TypeError):
                raise BuildError(f"{path}:{n}: not a document line", hint="run the fetch stage again") from None
    ids = [d["id"] for d in docs]
    if ids != sorted(set(ids)):
        raise BuildError(f"{path}: ids are not unique and sorted", hint="run the fetch stage again")
    return docs


def _save_hf(out: Path, splits: dict[str, list[dict]]) -> None:
    """``out/hf`` as a DatasetDict folder, replaced as a whole (never half-written)."""
    import datasets

    datasets.disable_progress_bars()
    features = datasets.Features(
        {"id": datasets.Value("string"), "source": datasets.Value("string"), "text": datasets.Value("string")}
    )
    dd = datasets.DatasetDict(
        {
            name: datasets.Dataset.from_dict({k: [d[k] for d in docs] for k in ("id", "source", "text")}, features=features)
            for name, docs in splits.items()
        }
    )
    target = out / "hf"
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-hf-", dir=out))
    try:
        dd.save_to_disk(str(tmp / "hf"))
        old = tmp / "old"
        if target.exists():
            target.rename(old)
        (tmp / "hf").rename(target)
        fsync_dir(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main(ref: str, root: Path) -> dict:
    """Clean, deduplicate and split ``ref``'s raw documents; returns the stats written."""
    settings.apply(root)
    dataset = Registry(root).dataset(ref)
    proc = dataset.processing
    out = dataset_outputs(root, dataset.name).dir
    fetched = out / "fetch.json"
    if not fetched.is_file() or json.loads(fetched.read_text(encoding="utf-8")).get("dataset") != dataset.ref:
        raise BuildError(f"{out} holds no fetch of {dataset.ref}", hint=f"run python -m pipelines.fetch {dataset.ref} first")
    raw = _read_raw(out / "raw.jsonl")
    source_ids = [s.id for s in dataset.sources]
    unknown = sorted({d["source"] for d in raw} - set(source_ids))
    if unknown:
        raise BuildError(f"raw.jsonl names sources {unknown} that {dataset.ref} does not have", hint="run fetch again")

    dropped = {sid: {"short": 0, "exact_duplicate": 0, "near_duplicate": 0} for sid in source_ids}
    inputs: dict[str, list[str]] = {sid: [] for sid in source_ids}
    kept: list[dict] = []
    from tqdm import tqdm

    for doc in tqdm(raw, desc="clean", unit="doc", leave=False, disable=not sys.stderr.isatty()):
        inputs[doc["source"]].append(doc["text"])
        text = clean_text(doc["text"])
        if is_short(text, proc.min_chars):
            dropped[doc["source"]]["short"] += 1
            continue
        kept.append({**doc, "text": text})

    dupes = find_duplicates([(d["id"], d["text"]) for d in kept], proc.dedup, progress=sys.stderr.isatty())
    gone = {d.id for d in dupes}
    source_of = {d["id"]: d["source"] for d in kept}
    for d in dupes:
        dropped[source_of[d.id]][f"{d.kind}_duplicate"] += 1
    kept = [d for d in kept if d["id"] not in gone]

    splits: dict[str, list[dict]] = {name: [] for name in SPLITS}
    for doc in kept:  # already sorted by id
        splits[split_of(doc["id"], proc.split)].append(doc)

    split_dir = out / "splits"
    digests = {}
    for name, docs in splits.items():
        path = split_dir / f"{name}.jsonl"
        with atomic_writer(path, "wb") as f:
            for doc in docs:
                f.write(document_line(doc))
        digests[name] = SplitDigest(
            sha256=sha256_file(path), documents=len(docs), bytes=sum(len(d["text"].encode("utf-8")) for d in docs)
        ).model_dump(mode="json")
    _save_hf(out, splits)

    per_source = {}
    for sid in source_ids:
        by_split = {name: _counts([d["text"] for d in splits[name] if d["source"] == sid]) for name in SPLITS}
        per_source[sid] = {
            "input": _counts(inputs[sid]),
            "dropped": dropped[sid],
            "splits": by_split,
            "kept": _counts([d["text"] for name in SPLITS for d in splits[name] if d["source"] == sid]),
        }
    stats = {
        "dataset": dataset.ref,
        "processing": proc.model_dump(mode="json"),
        "splits": digests,
        "sources": per_source,
        "duplicates": [{"id": d.id, "of": d.of, "kind": d.kind, "similarity": d.similarity} for d in dupes],
    }
    atomic_write_text(out / "stats.json", json.dumps(stats, indent=2, sort_keys=True, ensure_ascii=False) + "\n")
    for name in SPLITS:
        log.info("%s: %d documents, %d bytes", name, digests[name]["documents"], digests[name]["bytes"])
    return stats


# --- for later stages -------------------------------------------------------------------


def split_digests(root: Path, dataset_name: str) -> dict[str, SplitDigest]:
    """The split digests recorded in ``stats.json``, each checked against its .jsonl file now."""
    stats_path = dataset_outputs(root, dataset_name).stats
    if not stats_path.is_file():
        raise NotFoundError(
            str(stats_path), hint=f"prepare the dataset first: dvc repro prepare@{dataset_name}"
        )
    recorded = json.loads(stats_path.read_text(encoding="utf-8"))["splits"]
    out = {}
    for name in SPLITS:
        digest = SplitDigest.model_validate(recorded[name])
        path = split_path(root, dataset_name, name)
        actual = sha256_file(path) if path.is_file() else "(missing)"
        if actual != digest.sha256:
            raise IntegrityError(str(path), digest.sha256, actual, hint=f"re-run dvc repro prepare@{dataset_name}")
        out[name] = digest
    return out


def read_split(root: Path, dataset_name: str, split: str) -> Iterator[dict]:
    """Documents ``{"id", "source", "text"}`` of one split, in id order.

    Does not verify: call :func:`split_digests` (or compare with a recorded digest) first.
    """
    path = split_path(root, dataset_name, split)
    if not path.is_file():
        raise NotFoundError(str(path), hint=f"prepare the dataset first: dvc repro prepare@{dataset_name}")
    with open(path, encoding="utf-8") as f:
        for line in f:
            yield json.loads(line)


def cli(argv: list[str] | None = None) -> None:
    stage_cli("prepare", __doc__, main, argv, kind="dataset")


if __name__ == "__main__":
    cli()
