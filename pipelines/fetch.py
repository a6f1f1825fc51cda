"""Stage ``fetch``: a dataset's pinned sources, verified, extracted to raw documents.

    python -m pipelines.fetch dataset/literary-pd@1

Fetches every source of the dataset entry (or reuses it from the sha256 download cache,
``COMMONFORGE_CACHE``; see :mod:`pipelines.sources`), verifies it against its pin, extracts its
documents (:mod:`pipelines.extract`) and writes, under ``build/datasets/<name>/``:

* ``raw.jsonl``: one document per line, sorted by id, each line the canonical JSON
  ``{"id", "source", "text"}`` (sorted keys, no spaces, UTF-8). The text is as extracted:
  cleaning is ``prepare``'s job.
* ``fetch.json``: the dataset ref and, per source, the artifact's sha256 and file, the number
  of documents and the UTF-8 bytes of their text.

Both are written atomically; nothing is written anywhere else (never into registry/entries).
The network is used only when an artifact is not in the cache yet.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from commonforge import settings
from commonforge.errors import BuildError
from pipelines.extract import Document, extract_documents
from pipelines.manifest import dataset_outputs
from pipelines.sources import artifact_name, fetch_source
from pipelines.stage import stage_cli
from registry.catalog import Registry
from registry.digest import canonical_json
from registry.fsutil import atomic_write_bytes, atomic_writer

log = logging.getLogger(__name__)


def document_line(doc: dict) -> bytes:
    """One canonical JSON line: ``{"id", "source", "text"}``, sorted keys, no spaces, UTF-8, ``\\n``."""
    record = {"id": doc["id"], "source": doc["source"], "text": doc["text"]}
    return json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8") + b"\n"


def main(ref: str, root: Path) -> Path:
    """Fetch, verify and extract every source of ``ref``; returns the ``raw.jsonl`` written."""
    s = settings.apply(root)
    dataset = Registry(root).dataset(ref)
    out = dataset_outputs(root, dataset.name).dir
    docs: list[Document] = []
    sources = {}
    for source in dataset.sources:
        artifact = fetch_source(source, root=root, cache=s.source_cache)
        found = extract_documents(source, artifact)
        log.info("%s: %d documents from %s", source.id, len(found), artifact.name)
        sources[source.id] = {
            "kind": source.kind,
            "artifact": source.path if source.kind == "local" else artifact_name(source),
            "sha256": source.sha256,
            "documents": len(found),
            "bytes": sum(len(d.text.encode("utf-8")) for d in found),
        }
        docs.extend(found)
    docs.sort(key=lambda d: d.id)
    ids = [d.id for d in docs]
    if len(set(ids)) != len(ids):
        raise BuildError(f"{ref}: two documents share an id", hint="source ids must be unique (the schema checks this)")
    raw = out / "raw.jsonl"
    with atomic_writer(raw, "wb") as f:
        for d in docs:
            f.write(document_line({"id": d.id, "source": d.source, "text": d.text}))
    atomic_write_bytes(out / "fetch.json", canonical_json({"dataset": dataset.ref, "sources": sources}) + b"\n")
    return raw


def cli(argv: list[str] | None = None) -> None:
    stage_cli("fetch", __doc__, main, argv, kind="dataset")


if __name__ == "__main__":
    cli()
