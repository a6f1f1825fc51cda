"""The data-policy check: what an added dataset holds, whether the forge has it already, personal data.

    result = check_data_policy(CheckInput(root, "dataset/psalms@1", "registry/entries/datasets/psalms/1.yaml",
                                          base_root=base, cache=cache))

The dataset's text is read as the sources check reads it (:func:`contributions.sources_check.dataset_documents`)
and cleaned as the build's prepare stage cleans it (short documents dropped), then:

* **statistics**, per source and in all: documents, characters, words, UTF-8 bytes, mean and
  median document length, and the duplicates *within* the dataset that the build will drop
  (:func:`pipelines.dedup.find_duplicates` with the entry's own ``processing.dedup``);
* **near duplicates of the registry's existing datasets**, with the project's MinHash
  (:mod:`pipelines.dedup`: the entry's shingle size and number of hash functions, LSH banding,
  then the estimated Jaccard similarity) plus exact matches of the normalized text. A new
  document duplicates an existing one at a similarity of ``near_threshold`` or more (default: the
  entry's ``processing.dedup.threshold``, 0.8 unless it says otherwise). The **overlap** is the
  larger of the fraction of documents and the fraction of characters that duplicate an existing
  document; above ``max_overlap`` (default **0.5**) the dataset is refused: it is mostly one the
  forge has, and belongs there as a new version or not at all. Earlier versions of the *same*
  dataset are compared and reported but never refuse it (a new version repeats its predecessor).
  "Existing" means the datasets of the base checkout (else those of the head that this change
  does not add: option ``added_refs``), or the refs in option ``compare_with``. Their documents
  come from the prepared build outputs (``build/datasets/<name>/splits``, digests checked)
  where those are of the same ref, else from their sources: local ones, or the download cache;
  a dataset whose sources are not cached is listed under ``details["overlap"]["not_compared"]``
  and in the summary, never silently;
* **personal data** heuristics: e-mail addresses and phone numbers (international ``+CC`` numbers
  and North American ``(NNN) NNN-NNNN`` forms, 9-15 digits; bare digit runs such as years are
  never counted), reported with counts and a few redacted examples (``j***@e***.org``,
  ``+** *** *** **67``), refused above ``max_personal_data`` matches in all (default **20**);
  public-domain text rarely holds any, so a handful is reported for a reviewer to look at and a
  directory's worth is refused;
* **non-text content** (:func:`contributions.sources_check.text_problem`: binary, lossily
  decoded, base64/hex data) is refused, whatever its amount.

Options (``CheckInput.options``): ``max_overlap`` (float, 0.5), ``near_threshold`` (float, the
entry's dedup threshold), ``max_personal_data`` (int, 20), ``compare_with`` (list of dataset refs),
``added_refs`` (set by the engine). The existing datasets' documents are memoized per process
(:func:`existing_documents`); comparing with literary-pd (21 MB) and austen (4 MB) from the
download cache costs about 10 s on 2 cores.
Nothing is written.
"""

from __future__ import annotations

import hashlib
import json
import re
import statistics
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from commonforge.errors import ForgeError
from contributions.report import CheckInput, CheckResult, Problem
from contributions.sources_check import (
    EXAMPLES,
    cleaned_documents,
    dataset_documents,
    default_cache,
    first_line,
    load_dataset,
    text_problem,
)
from pipelines.dedup import MinHasher, find_duplicates, lsh_bands, normalized
from pipelines.extract import Document
from registry.refs import Ref
from registry.schema import Dataset, DedupSpec

NAME = "data policy"
MAX_OVERLAP = 0.5  # fraction of documents or characters duplicating existing datasets
MAX_PERSONAL_DATA = 20  # e-mail addresses and phone numbers together
SPLITS = ("train", "validation", "test")

EMAIL = re.compile(r"(?<![\w.+-])[A-Za-z0-9][A-Za-z0-9._%+-]*@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
                   r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*\.[A-Za-z]{2,24}\b")
PHONE = re.compile(
    r"(?<![\w+])(?:"
    r"\+\d{1,3}(?:[ .-]?\(?\d{1,4}\)?){2,5}"  # +44 20 7946 0958, +1-555-123-4567
    r"|\(\d{3}\)[ .-]?\d{3}[ .-]\d{4}"  # (555) 123-4567
    r"|\d{3}[.-]\d{3}[.-]\d{4}"  # 555-123-4567, 555.123.4567
    r")(?![\w])"
)


# --- statistics -----------------------------------------------------------------------------


def text_statistics(texts: list[str]) -> dict[str, Any]:
    """Documents, characters, words, bytes, and the mean and median length in characters."""
    lengths = [len(t) for t in texts]
    return {
        "documents": len(texts),
        "characters": sum(lengths),
        "words": sum(len(t.split()) for t in texts),
        "bytes": sum(len(t.encode("utf-8")) for t in texts),
        "mean_characters": round(statistics.fmean(lengths), 1) if lengths else 0,
        "median_characters": statistics.median(lengths) if lengths else 0,
        "min_characters": min(lengths, default=0),
        "max_characters": max(lengths, default=0),
    }


# --- personal data --------------------------------------------------------------------------


def redact_email(address: str) -> str:
    local, _, domain = address.partition("@")
    labels = domain.split(".")
    return f"{local[0]}***@{labels[0][0]}***.{labels[-1]}"


def redact_phone(number: str) -> str:
    digits = sum(c.isdigit() for c in number)
    seen = 0
    out = []
    for c in number:
        if c.isdigit():
            seen += 1
            out.append(c if seen > digits - 2 else "*")
        else:
            out.append(c)
    return "".join(out)


def personal_data(docs: list[Document]) -> dict[str, Any]:
    """Counts of e-mail addresses and phone numbers, and a few redacted examples with their documents."""
    counts: Counter[str] = Counter()
    examples: list[dict[str, str]] = []
    documents: set[str] = set()
    for d in docs:
        found = [("email", redact_email(m.group())) for m in EMAIL.finditer(d.text)]
        for m in PHONE.finditer(d.text):
            if 9 <= sum(c.isdigit() for c in m.group()) <= 15:
                found.append(("phone", redact_phone(m.group())))
        for kind, shown in found:
            counts[kind] += 1
            documents.add(d.id)
            if len(examples) < EXAMPLES:
                examples.append({"kind": kind, "document": d.id, "example": shown})
    return {"emails": counts["email"], "phones": counts["phone"], "documents": len(documents), "examples": examples}


# --- near duplicates of existing datasets ---------------------------------------------------


@dataclass(frozen=True)
class Match:
    document: str  # the new document
    dataset: str  # the existing dataset's ref
    of: str  # the existing document's id
    similarity: float  # 1.0 for an exact match


class ExistingIndex:
    """MinHash signatures (with LSH buckets) and exact keys of the existing datasets' documents."""

    def __init__(self, spec: DedupSpec, threshold: float) -> None:
        self.hasher = MinHasher(spec.num_perm, spec.shingle)
        self.threshold, self.num_perm = threshold, spec.num_perm
        self.bands, self.rows = lsh_bands(threshold, spec.num_perm)
        self.buckets: list[dict[bytes, list[int]]] = [{} for _ in range(self.bands)]
        self.exact: dict[bytes, int] = {}
        self.names: list[tuple[str, str]] = []  # (dataset ref, document id)
        self.sigs: list[np.ndarray] = []

    def _keys(self, sig: np.ndarray) -> list[bytes]:
        return [sig[i * self.rows : (i + 1) * self.rows].tobytes() for i in range(self.bands)]

    def add(self, ref: str, doc_id: str, text: str, *, near: bool = True) -> None:
        """Index one existing document: its exact key always, its signature only when ``near``."""
        self.exact.setdefault(hashlib.sha256(normalized(text).encode("utf-8")).digest(), len(self.names))
        sig = self.hasher.signature(text) if near else None
        index = len(self.names)
        self.names.append((ref, doc_id))
        self.sigs.append(sig if sig is not None else np.zeros(0, dtype=np.uint32))
        if sig is not None:
            for band, key in zip(self.buckets, self._keys(sig)):
                band.setdefault(key, []).append(index)

    def match(self, doc_id: str, text: str) -> Match | None:
        """The existing document ``text`` duplicates (exactly, else the most similar at or above the threshold)."""
        hit = self.exact.get(hashlib.sha256(normalized(text).encode("utf-8")).digest())
        if hit is not None:
            return Match(doc_id, *self.names[hit], 1.0)
        sig = self.hasher.signature(text)
        if sig is None:
            return None
        candidates = sorted({j for band, key in zip(self.buckets, self._keys(sig)) for j in band.get(key, ())})
        best, best_sim = -1, 0.0
        for j in candidates:
            sim = float(np.count_nonzero(self.sigs[j] == sig)) / self.num_perm
            if sim > best_sim:
                best, best_sim = j, sim
        if best >= 0 and best_sim >= self.threshold:
            return Match(doc_id, *self.names[best], round(best_sim, 4))
        return None


def _built_documents(root: Path, dataset: Dataset) -> list[Document] | None:
    """The prepared splits of ``dataset`` under ``root/build`` when they are of this very ref and intact."""
    from pipelines.prepare import read_split, split_digests

    stats = root / "build" / "datasets" / dataset.name / "stats.json"
    try:
        if json.loads(stats.read_text(encoding="utf-8")).get("dataset") != dataset.ref:
            return None
        split_digests(root, dataset.name)  # every split's sha256 against stats.json
        return [Document(d["id"], d["source"], d["text"]) for s in SPLITS for d in read_split(root, dataset.name, s)]
    except (OSError, ValueError, KeyError, ForgeError):
        return None


def existing_refs(inp: CheckInput, dataset: Dataset) -> tuple[Path, tuple[str, ...]]:
    """The checkout holding the existing datasets (the base, else the head) and the refs compared with."""
    from registry.catalog import Registry

    root = (inp.base_root or inp.root).resolve()
    refs = inp.options.get("compare_with")
    if refs is None:
        # Without a base checkout, the other entries this change adds are not "existing" either.
        new = {dataset.ref, *(inp.options.get("added_refs") or ())}
        refs = [str(r) for r in Registry(root).refs("dataset") if str(r) not in new]
    return root, tuple(str(r) for r in refs)


@lru_cache(maxsize=2)
def existing_documents(root: Path, refs: tuple[str, ...], cache: Path,
                       ) -> tuple[tuple[tuple[str, tuple[Document, ...]], ...], tuple[tuple[str, str], ...]]:
    """``(((ref, documents), ...), ((ref, why not compared), ...))`` of the existing datasets.

    Documents come as prepared (build outputs) or as extracted, not cleaned: MinHash words and the
    exact key ignore case, punctuation and whitespace, which is most of what cleaning changes.
    Memoized per process: several datasets of one pull request read literary-pd's 21 MB once.
    """
    from registry.catalog import Registry

    registry = Registry(root)
    found: list[tuple[str, tuple[Document, ...]]] = []
    missing: list[tuple[str, str]] = []
    for ref in refs:
        try:
            other = registry.dataset(ref)
            built = _built_documents(root, other)
            docs = built if built is not None else dataset_documents(other, root, cache, cached_only=True)
        except ForgeError as err:
            missing.append((ref, first_line(err)))
            continue
        found.append((ref, tuple(docs)))
    return tuple(found), tuple(missing)


def overlap(inp: CheckInput, dataset: Dataset, docs: list[Document]) -> dict[str, Any]:
    """How much of ``docs`` duplicates the existing datasets' documents (see the module docstring)."""
    spec = dataset.processing.dedup
    threshold = float(inp.options.get("near_threshold", spec.threshold))
    root, refs = existing_refs(inp, dataset)
    existing, missing_pairs = existing_documents(root, refs, default_cache(inp).resolve())
    missing = dict(missing_pairs)
    index = ExistingIndex(spec, threshold)
    # Only an existing document that shares a shingle with the new text can be near it (its
    # Jaccard similarity with every new document is 0 otherwise): the others get no signature.
    ours = [index.hasher.shingles(d.text) for d in docs]
    new_shingles = np.unique(np.concatenate(ours)) if ours else np.zeros(0, dtype=np.uint64)  # sorted

    def shares_a_shingle(text: str) -> bool:
        # Binary search in the sorted new shingles (np.isin would sort both arrays for every document).
        theirs = index.hasher.shingles(text)
        if not len(theirs) or not len(new_shingles):
            return False
        at = np.minimum(np.searchsorted(new_shingles, theirs), len(new_shingles) - 1)
        return bool((new_shingles[at] == theirs).any())

    compared: dict[str, int] = {}
    for ref, found in existing:
        for d in found:
            index.add(ref, d.id, d.text, near=shares_a_shingle(d.text))
        compared[ref] = len(found)
    matches = [m for d in docs if (m := index.match(d.id, d.text)) is not None]
    name = dataset.name
    # Earlier versions of the same dataset are reported, never held against it.
    counted = [m for m in matches if Ref.parse(m.dataset).name != name]
    chars = {d.id: len(d.text) for d in docs}
    total_chars = sum(chars.values()) or 1
    doc_fraction = len({m.document for m in counted}) / (len(docs) or 1)
    char_fraction = sum(chars[m.document] for m in counted) / total_chars
    by_dataset: dict[str, dict[str, Any]] = {}
    for m in matches:
        entry = by_dataset.setdefault(m.dataset, {"documents": 0, "characters": 0})
        entry["documents"] += 1
        entry["characters"] += chars[m.document]
    for ref, entry in by_dataset.items():
        entry["fraction"] = round(entry["documents"] / (len(docs) or 1), 4)
        entry["counted"] = Ref.parse(ref).name != name
    return {
        "fraction": round(max(doc_fraction, char_fraction), 4),
        "documents_fraction": round(doc_fraction, 4),
        "characters_fraction": round(char_fraction, 4),
        "threshold": threshold,
        "compared_with": compared,
        "not_compared": missing,
        "by_dataset": by_dataset,
        "examples": [{"document": m.document, "dataset": m.dataset, "of": m.of, "similarity": m.similarity}
                     for m in matches[:EXAMPLES]],
    }


# --- the check ------------------------------------------------------------------------------


def check_data_policy(inp: CheckInput) -> CheckResult:
    """Statistics, overlap with the registry, personal data and non-text content of an added dataset."""
    if not inp.ref.startswith("dataset/"):
        return CheckResult.skipped(NAME, f"{inp.ref} adds no data (the data policy applies to datasets)")
    try:
        dataset, entry = load_dataset(inp)
    except ForgeError as err:
        return CheckResult.skipped(NAME, f"the entry does not load, so its data was not read: {first_line(err)}")
    try:
        raw = dataset_documents(dataset, inp.root, default_cache(inp))
    except ForgeError as err:
        return CheckResult.skipped(NAME, f"the sources do not extract (see the sources check): {first_line(err)}")
    max_overlap = float(inp.options.get("max_overlap", MAX_OVERLAP))
    max_personal = int(inp.options.get("max_personal_data", MAX_PERSONAL_DATA))
    problems: list[Problem] = []

    binary = [(d.id, why) for d in raw if (why := text_problem(d.text))]
    if binary:
        problems.append(Problem(
            f"{len(binary)} of {len(raw)} documents are not text: "
            + "; ".join(f"{doc_id}: {why}" for doc_id, why in binary[:EXAMPLES]),
            fix="the forge takes natural-language text only: exclude those files from the source",
            path=entry.path, line=entry.line("sources")))
    not_text = {doc_id for doc_id, _ in binary}  # cleaning would hide it (control characters go)
    kept = [d for d in cleaned_documents(dataset, raw) if d.id not in not_text]
    stats = text_statistics([d.text for d in kept])
    stats["extracted_documents"] = len(raw)
    stats["short_documents_dropped"] = len(raw) - len(binary) - len(kept)
    stats["sources"] = {s.id: text_statistics([d.text for d in kept if d.source == s.id]) for s in dataset.sources}
    internal = find_duplicates([(d.id, d.text) for d in kept], dataset.processing.dedup)
    stats["duplicates_within"] = {"exact": sum(d.kind == "exact" for d in internal),
                                  "near": sum(d.kind == "near" for d in internal)}
    if not kept:
        problems.append(Problem(f"no document of at least {dataset.processing.min_chars} characters remains after cleaning",
                                fix="check the sources' include and extract settings", path=entry.path,
                                line=entry.line("processing")))
        return CheckResult.failed(NAME, "the dataset holds no usable text", problems, statistics=stats)

    found = overlap(inp, dataset, kept)
    if found["fraction"] > max_overlap:
        worst = max((r for r, e in found["by_dataset"].items() if e["counted"]),
                    key=lambda r: found["by_dataset"][r]["documents"])
        problems.append(Problem(
            f"{found['fraction']:.0%} of the dataset duplicates documents already in the registry "
            f"(over the limit of {max_overlap:.0%}; mostly {worst}: {found['by_dataset'][worst]['documents']} of "
            f"{len(kept)} documents at MinHash similarity >= {found['threshold']})",
            fix=f"contribute only what {worst} lacks (exclude the duplicated files), or propose a new version of {worst}",
            path=entry.path, line=entry.line("sources")))

    pii = personal_data(kept)
    if pii["emails"] + pii["phones"] > max_personal:
        shown = ", ".join(f"{e['example']} ({e['document']})" for e in pii["examples"])
        problems.append(Problem(
            f"personal data: {pii['emails']} e-mail address(es) and {pii['phones']} phone number(s) in "
            f"{pii['documents']} documents (over the limit of {max_personal}), e.g. {shown}",
            fix="remove the personal data from the source (or exclude those files) before pinning it",
            path=entry.path, line=entry.line("sources")))

    details = {"statistics": stats, "overlap": found, "personal_data": pii,
               "binary_documents": [doc_id for doc_id, _ in binary]}
    summary = (f"{stats['documents']} documents, {stats['characters']:,} characters, {stats['words']:,} words "
               f"(mean {stats['mean_characters']:,.0f}, median {stats['median_characters']:,.0f} characters); "
               f"overlap with {len(found['compared_with'])} existing dataset(s) {found['fraction']:.0%} "
               f"(limit {max_overlap:.0%}); personal data: {pii['emails']} e-mail, {pii['phones']} phone")
    if found["not_compared"]:
        summary += f"; not compared (sources not cached): {', '.join(found['not_compared'])}"
    if problems:
        return CheckResult.failed(NAME, summary, problems, **details)
    return CheckResult.passed(NAME, summary, **details)
