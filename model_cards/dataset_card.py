"""The dataset card's content: a dataset entry and its build statistics, as a typed context.

    context = dataset_card_context(dataset, stats, models=["model/forge-small@1.0.0 (draft)"])

The card follows the entry's datasheet (Gebru et al.'s sections) and adds what the build
measured: documents, words and bytes per source and split, what cleaning and deduplication
dropped, the pinned sources with their digests and licenses, and the models trained on it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import yaml

from model_cards import hub
from model_cards import text as fmt
from model_cards.text import Table
from registry.schema import Dataset, DatasetBuild

SPLITS = ("train", "validation", "test")


@dataclass(frozen=True)
class DatasetCardContext:
    card_data: str
    title: str
    ref: str
    description: str
    facts: Table
    datasheet: dict[str, str]
    splits: Table | None
    per_source: Table | None
    dropped: Table | None
    duplicates: int | None
    stats_note: str | None
    sources: Table
    source_notes: list[tuple[str, str]]
    attributions: list[tuple[str, str, str]]  # (source title, license, attribution)
    processing: Table
    models: list[str]
    license: str
    license_note: str


def _size_category(n: int) -> str:
    for limit, label in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if n < limit:
            return label
    return "1M<n<10M"


def _artifact(s) -> str:
    if s.kind in ("pypi", "npm", "debian"):
        return f"`{s.package}@{s.version}` ({s.kind}: `{s.file}`)"
    if s.kind == "url":
        return f"{s.url}" + (f" (`{s.file}`)" if s.file else "")
    return f"`{s.path}` (in the repository)"


def dataset_card_context(dataset: Dataset, stats: Mapping[str, Any] | None = None, *,
                         models: Sequence[str] = (), splits: DatasetBuild | None = None) -> DatasetCardContext:
    """The dataset card's content; ``splits`` (from a release's manifest) stands in for missing stats."""
    split_info: dict[str, Mapping] = {}
    if stats and stats.get("splits"):
        split_info = dict(stats["splits"])
    elif splits is not None:
        split_info = {k: v.model_dump() for k, v in splits.splits.items()}
    data: dict[str, Any] = {"license": hub.dataset_licenses(dataset.license), "language": list(dataset.language),
                            "pretty_name": dataset.title}
    if split_info:
        data["size_categories"] = [_size_category(sum(int(v["documents"]) for v in split_info.values()))]
    data["task_categories"] = ["text-generation"]
    data["tags"] = ["commonforge", "pinned-sources"]

    facts = [("dataset", f"`{dataset.ref}`"), ("license", dataset.license),
             ("languages", ", ".join(dataset.language)), ("sources", str(len(dataset.sources)))]
    split_table = None
    if split_info:
        total_docs = sum(int(v["documents"]) for v in split_info.values())
        total_bytes = sum(int(v["bytes"]) for v in split_info.values())
        facts.append(("size after cleaning", f"{total_docs:,} documents, {fmt.size(total_bytes)} of UTF-8 text"))
        split_table = Table.of(("split", "documents", "text", "sha256 of the split"), [
            (s, fmt.integer(split_info[s]["documents"]), fmt.size(split_info[s]["bytes"]), f"`{split_info[s]['sha256']}`")
            for s in SPLITS if s in split_info])

    per_source = dropped = None
    duplicates = None
    note = None
    if stats:
        rows, drop_rows = [], []
        for sid, info in stats.get("sources", {}).items():
            for s in SPLITS:
                c = info.get("splits", {}).get(s)
                if c:
                    rows.append((sid, s, fmt.integer(c["documents"]), fmt.integer(c["words"]),
                                 fmt.integer(c["characters"]), fmt.size(c["bytes"])))
            d, inp, kept = info.get("dropped", {}), info.get("input", {}), info.get("kept", {})
            drop_rows.append((sid, fmt.integer(inp.get("documents")), fmt.integer(d.get("short")),
                              fmt.integer(d.get("exact_duplicate")), fmt.integer(d.get("near_duplicate")),
                              fmt.integer(kept.get("documents"))))
        per_source = Table.of(("source", "split", "documents", "words", "characters", "text"), rows) if rows else None
        dropped = Table.of(("source", "documents extracted", f"dropped: under {dataset.processing.min_chars} characters",
                            "dropped: exact duplicates", "dropped: near duplicates", "kept"), drop_rows) if drop_rows else None
        duplicates = len(stats.get("duplicates", []))
    else:
        note = (f"Per-source statistics are a build output (build/datasets/{dataset.name}/stats.json, written by "
                f"`dvc repro prepare@{dataset.name}`) that was not available when this card was rendered.")
        if split_info:
            note += " The split sizes above come from a release's build manifest."

    sources = Table.of(("source", "kind", "artifact", "sha256", "license"), [
        (f"{s.id}: {s.title}", s.kind, _artifact(s), f"`{s.sha256}`", s.license) for s in dataset.sources])
    source_notes = [(s.id, fmt.paragraph(s.notes)) for s in dataset.sources if s.notes]
    attributions = [(s.title, s.license, fmt.paragraph(s.attribution)) for s in dataset.sources if s.attribution]
    p = dataset.processing
    processing = Table.of(("step", "setting"), [
        ("Unicode normalization", p.normalize),
        ("minimum document length", f"{p.min_chars} characters after cleaning"),
        ("exact deduplication", "yes (case-folded text)" if p.dedup.exact else "no"),
        ("near deduplication", f"MinHash, {p.dedup.shingle}-word shingles, {p.dedup.num_perm} hash functions, "
                               f"Jaccard >= {p.dedup.threshold:g}" if p.dedup.near else "no"),
        ("split", f"whole documents by a seeded hash of their id (seed {p.split.seed}): "
                  f"{p.split.validation:.0%} validation, {p.split.test:.0%} test, the rest train"),
    ])
    ds = dataset.datasheet
    license_note = ("Redistributing this dataset (or the prepared splits) must keep the attributions above."
                    if attributions else "No source's license asks for an attribution text; keep the license "
                    "notices of the sources when you redistribute them.")
    return DatasetCardContext(
        card_data=yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=4096).strip(),
        title=dataset.title,
        ref=dataset.ref,
        description=fmt.paragraph(dataset.description),
        facts=Table.of(("about", "value"), facts),
        datasheet={k: fmt.paragraph(getattr(ds, k)) for k in
                   ("motivation", "composition", "collection", "preprocessing", "uses", "limitations", "maintenance")},
        splits=split_table,
        per_source=per_source,
        dropped=dropped,
        duplicates=duplicates,
        stats_note=note,
        sources=sources,
        source_notes=source_notes,
        attributions=attributions,
        processing=processing,
        models=list(models),
        license=dataset.license,
        license_note=license_note,
    )
