"""The pinned-sources check: every source of an added dataset fetched again, verified, unpacked, read.

    result = check_sources(CheckInput(root, "dataset/psalms@1", "registry/entries/datasets/psalms/1.yaml",
                                      cache=cache))

For each source, in entry order, with the project's own code (nothing here re-implements it):

1. **fetched in hash-checking mode** with :func:`pipelines.sources.fetch_source` (pip
   ``--require-hashes``, ``npm pack``, ``apt-get download``, HTTP GET; a local file or
   directory is re-digested where it is). The artifact's sha256 must equal the pin; a mismatch
   names both digests. From the download cache an artifact is verified again before use, so a
   cache hit is as good as a fresh download; option ``refetch`` asks the registry again;
2. its **size** is measured and compared with the size ``commonforge new`` recorded in the
   source's ``notes`` ("the artifact is 12,345 bytes"), where the entry records one;
3. its **members are read** with :func:`pipelines.extract.read_members` under extract.py's
   budgets: a member whose path leaves the archive (absolute, ``..``), a link or device among
   the included files, a file over ``extract.max_file_bytes`` or members together over
   ``max_total_bytes`` refuse the source; every ``include`` glob must match at least one file;
4. **archive bombs**: a tar or zip whose members (included or not) declare more than
   ``max_archive_bytes`` together is refused before anything is unpacked (the headers are
   counted one by one, so a huge skipped member is never decompressed), and one whose included
   files unpack to more than ``max_compression_ratio`` times its own size is refused after
   reading them within the caps (text compresses 3-5:1 with gzip or xz; 100:1 is a file of one
   repeated byte, not prose);
5. its **text is extracted** with :func:`pipelines.extract.extract_documents` (undecodable bytes
   name the file and the byte offset) and each document must be valid UTF-8 text, not binary
   (:func:`text_problem`: NUL or control characters, U+FFFD replacement characters, long
   base64/hex runs); after the build's cleaning (:func:`pipelines.textclean.clean_text`) the
   source must keep at least one document of ``processing.min_chars`` characters.

Options (``CheckInput.options``):

* ``refetch`` (default ``False``): fetch non-local sources into a fresh temporary cache, so the
  registry is asked again, instead of through the download cache;
* ``max_total_bytes`` (default ``pipelines.extract.MAX_TOTAL_BYTES``, 1 GiB): all included
  members of one artifact together;
* ``max_archive_bytes`` (default 4 GiB): what all members of a tar or zip may declare together;
* ``max_compression_ratio`` (default 100): included bytes per archive byte above which an
  archive is refused as a bomb.

The data-policy and contamination checks read a dataset's text through
:func:`dataset_documents` and :func:`cleaned_documents` here, so all three see the same bytes.
Nothing is written anywhere but the download cache (and only by ``fetch_source``).
"""

from __future__ import annotations

import re
import tarfile
import tempfile
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from commonforge.errors import FetchError, ForgeError, InputError, IntegrityError
from commonforge.units import human_bytes
from contributions.report import CheckInput, CheckResult, Problem
from pipelines.extract import MAX_TOTAL_BYTES, Document, extract_documents, glob_regex, read_members
from pipelines.sources import cache_path, fetch_source
from pipelines.textclean import clean_text, is_short
from registry.schema import Dataset, Source
from registry.yamlio import line_of, parse_yaml, validate_data

NAME = "sources"
MAX_COMPRESSION_RATIO = 100.0  # included bytes per archive byte (see the module docstring)
MAX_ARCHIVE_BYTES = 4 << 30  # what all members of an archive may declare together, included or not
_ARCHIVES = (".whl", ".zip", ".tar", ".tar.gz", ".tgz", ".tar.xz", ".txz", ".tar.bz2", ".tbz2", ".deb")
EXAMPLES = 5  # documents named per problem


# --- the entry, with line numbers ---------------------------------------------------------


@dataclass(frozen=True)
class EntryFile:
    """An entry's YAML as data plus its node tree, so problems can name the line of a field."""

    path: str  # repository-relative, as in the report
    data: Any
    node: yaml.Node | None

    def line(self, *loc: str | int) -> int | None:
        """1-based line of the field at ``loc`` (e.g. ``("sources", 0, "sha256")``); the nearest parent's
        line where the field is absent."""
        return line_of(self.node, loc)


def read_entry(inp: CheckInput) -> EntryFile:
    """The entry file of ``inp`` parsed strictly (duplicate keys refused); InputError when it cannot be."""
    path = inp.root / inp.path
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise InputError(f"{inp.path} does not exist in {inp.root}") from None
    except UnicodeDecodeError as err:
        raise InputError(f"{inp.path}: not UTF-8 text (byte {err.start})", hint="save the entry as UTF-8") from None
    data, node = parse_yaml(text, inp.path)
    return EntryFile(inp.path, data, node)


def load_dataset(inp: CheckInput) -> tuple[Dataset, EntryFile]:
    """The dataset entry of ``inp``, validated; a ForgeError (the schema check's business) when it is not."""
    entry = read_entry(inp)
    return validate_data(Dataset, entry.data, inp.path, entry.node), entry


def first_line(err: ForgeError) -> str:
    return err.message.strip().splitlines()[0] if err.message.strip() else type(err).__name__


# --- fetching and reading -----------------------------------------------------------------


def default_cache(inp: CheckInput) -> Path:
    """``inp.cache``, else the checkout's configured download cache (``COMMONFORGE_CACHE``)."""
    if inp.cache is not None:
        return Path(inp.cache)
    from commonforge.settings import Settings

    return Settings.load(inp.root).source_cache


@contextmanager
def source_cache(inp: CheckInput) -> Iterator[Path]:
    """The download cache this check fetches through: a fresh temporary one with ``refetch`` (so the
    registry is asked again), else :func:`default_cache`."""
    if inp.options.get("refetch"):
        with tempfile.TemporaryDirectory(prefix="commonforge-refetch-") as tmp:
            yield Path(tmp)
        return
    yield default_cache(inp)


def is_available(source: Source, root: Path, cache: Path) -> bool:
    """Whether ``source`` can be read without the network: local, or already in the download cache."""
    if source.kind == "local":
        return True
    return cache_path(cache, source).is_file()


_RECORDED_SIZE = re.compile(r"\bthe artifact is ([0-9][0-9,]*) bytes\b")


def recorded_size(source: Source) -> int | None:
    """The artifact's size as ``commonforge new`` recorded it in the source's ``notes`` ("the artifact
    is 12,345 bytes"), None where the entry records none (the schema has no size field)."""
    m = _RECORDED_SIZE.search(source.notes or "")
    return int(m.group(1).replace(",", "")) if m else None


def declared_total(artifact: Path, limit: int) -> int | None:
    """Bytes all members of a tar or zip archive declare, counted header by header and stopped past
    ``limit``, so a bomb among the members that ``include`` skips is found without unpacking it
    (reading past a skipped tar member decompresses it). None for other artifacts, or where the
    archive does not parse (the reader then says why)."""
    name = artifact.name.lower()
    try:
        if name.endswith((".whl", ".zip")):
            with zipfile.ZipFile(artifact) as zf:
                return sum(i.file_size for i in zf.infolist())
        if name.endswith((".tar", ".tar.gz", ".tgz", ".tar.xz", ".txz", ".tar.bz2", ".tbz2")):
            total = 0
            with tarfile.open(artifact, mode="r:*") as tf:
                while (info := tf.next()) is not None:
                    total += info.size
                    if total > limit:
                        break
            return total
    except (OSError, EOFError, tarfile.TarError, zipfile.BadZipFile, zlib.error):
        return None
    return None


def artifact_size(path: Path) -> int:
    """Bytes of a file, or of every regular file under a directory."""
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())
    return path.stat().st_size


def is_archive(path: Path) -> bool:
    return path.is_file() and path.name.lower().endswith(_ARCHIVES)


@lru_cache(maxsize=16)
def _extract(artifact: str, source_json: str, max_total_bytes: int) -> tuple[Document, ...]:
    # Keyed by the source's JSON, which holds its sha256: the caller verified the artifact
    # against it just before, so the key names the content (three checks read the same text).
    source = Source.model_validate_json(source_json)
    return tuple(extract_documents(source, Path(artifact), max_total_bytes=max_total_bytes))


def extract(source: Source, artifact: Path, *, max_total_bytes: int = MAX_TOTAL_BYTES) -> list[Document]:
    """:func:`pipelines.extract.extract_documents` of a *verified* artifact, memoized per process."""
    return list(_extract(str(artifact), source.model_dump_json(), max_total_bytes))


def dataset_documents(dataset: Dataset, root: Path, cache: Path, *, cached_only: bool = False,
                      max_total_bytes: int = MAX_TOTAL_BYTES) -> list[Document]:
    """Every document of ``dataset``, verified and extracted, sorted by id.

    With ``cached_only`` a source that is neither local nor in the cache raises a FetchError
    instead of being downloaded (for the datasets a contribution is compared with).
    """
    docs: list[Document] = []
    for source in dataset.sources:
        if cached_only and not is_available(source, root, cache):
            raise FetchError(f"source {source.id} of {dataset.ref} is not in the download cache {cache}",
                             hint=f"prefetch it: python -m pipelines.sources prefetch {dataset.ref}")
        artifact = fetch_source(source, root=root, cache=cache)
        docs.extend(extract(source, artifact, max_total_bytes=max_total_bytes))
    return sorted(docs, key=lambda d: d.id)


def cleaned_documents(dataset: Dataset, docs: list[Document]) -> list[Document]:
    """The documents as the build's prepare stage keeps them: cleaned, and at least ``min_chars`` long
    (before deduplication, which a contribution's own checks report rather than apply)."""
    out = []
    for d in docs:
        text = clean_text(d.text)
        if not is_short(text, dataset.processing.min_chars):
            out.append(Document(d.id, d.source, text))
    return out


# --- what is not text -----------------------------------------------------------------------

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0e-\x1f\x7f-\x84\x86-\x9f]")  # C0/C1 controls but \t \n \f \r, NEL
MAX_CONTROL_FRACTION = 0.01  # one stray U+0002 in a State of the Union address is fine; 1 % is binary
MAX_REPLACEMENT_FRACTION = 0.001  # U+FFFD: bytes someone decoded lossily before packaging
MAX_BLOB_FRACTION = 0.5  # of the characters in base64/hex-looking runs of 200 or more
_BLOB = re.compile(r"[A-Za-z0-9+/=]{200,}")  # base64, hex, minified data: no spaces or punctuation in 200 characters


def text_problem(text: str) -> str | None:
    """Why ``text`` is not natural-language text (binary, lossily decoded, encoded data), or None."""
    if not text:
        return None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        return f"not valid UTF-8 (an unpaired surrogate at character {err.start})"
    if "\x00" in text:
        return f"binary: holds NUL characters (first at character {text.index(chr(0))})"
    controls = len(_CONTROL.findall(text))
    if controls > MAX_CONTROL_FRACTION * len(text):
        return f"binary: {controls} control characters in {len(text)} ({controls / len(text):.1%})"
    replacements = text.count("\ufffd")
    if replacements > MAX_REPLACEMENT_FRACTION * len(text):
        return f"{replacements} U+FFFD replacement characters: the text was decoded lossily before it was packaged"
    blob = sum(m.end() - m.start() for m in _BLOB.finditer(text))
    if blob > MAX_BLOB_FRACTION * len(text):
        return f"not prose: {blob / len(text):.0%} of it is unbroken runs of letters and digits (base64, hex or data?)"
    return None


# --- the check ------------------------------------------------------------------------------


def _problem_for(err: ForgeError, source: Source, index: int, entry: EntryFile) -> Problem:
    """A Problem from a ForgeError raised while fetching or reading ``source``, at the line it concerns."""
    at = ("sources", index)
    if isinstance(err, IntegrityError):
        line = entry.line(*at, "sha256")
        message = f"source {source.id}: {err.message}"
    elif isinstance(err, FetchError):
        line = entry.line(*at, {"url": "url", "local": "path"}.get(source.kind, "package"))
        message = f"source {source.id} cannot be fetched: {err.message}"
    else:
        msg = err.message
        if "max_file_bytes" in (err.hint or "") or "decompresses to more than" in msg:
            line = entry.line(*at, "extract")
        elif "encoding" in (err.hint or "") or "not valid" in msg:
            line = entry.line(*at, "extract")
        elif "does not exist" in msg:
            line = entry.line(*at, "path")
        elif "matches include" in msg:
            line = entry.line(*at, "include")
        else:
            line = entry.line(*at)
        message = msg if msg.startswith(f"source {source.id}") else f"source {source.id}: {msg}"
    return Problem(message, fix=err.hint, path=entry.path, line=line)


def _check_source(source: Source, index: int, dataset: Dataset, entry: EntryFile, inp: CheckInput,
                  cache: Path) -> tuple[list[Problem], dict[str, Any]]:
    at = ("sources", index)
    max_total = int(inp.options.get("max_total_bytes", MAX_TOTAL_BYTES))
    max_ratio = float(inp.options.get("max_compression_ratio", MAX_COMPRESSION_RATIO))
    facts: dict[str, Any] = {"kind": source.kind, "sha256": source.sha256}
    try:
        artifact = fetch_source(source, root=inp.root, cache=cache)
    except ForgeError as err:
        return [_problem_for(err, source, index, entry)], facts
    size = artifact_size(artifact)
    facts.update(artifact=source.path if source.kind == "local" else artifact.name, size=size)
    problems: list[Problem] = []
    pinned_size = recorded_size(source)
    facts["recorded_size"] = pinned_size
    if pinned_size is not None and pinned_size != size:
        problems.append(Problem(f"source {source.id}: the artifact is {size:,} bytes, the entry records {pinned_size:,}",
                                fix="the artifact differs from the one scaffolded: check it, then fix the pin and the "
                                "note in a new version",
                                path=entry.path, line=entry.line(*at, "notes")))
    max_archive = int(inp.options.get("max_archive_bytes", MAX_ARCHIVE_BYTES))
    declared = declared_total(artifact, max_archive) if is_archive(artifact) else None
    if declared is not None and declared > max_archive:
        problems.append(Problem(
            f"source {source.id}: the members of {artifact.name} ({human_bytes(size)}) declare more than "
            f"{human_bytes(max_archive)} unpacked: an archive bomb, or an artifact far too large to check",
            fix="pin an artifact that holds the text and little else",
            path=entry.path, line=entry.line(*at)))
        return problems, facts
    try:
        members = read_members(artifact, source, max_total_bytes=max_total)
    except ForgeError as err:
        return [*problems, _problem_for(err, source, index, entry)], facts
    included = sum(len(m.data) for m in members)
    facts.update(files=len(members), included_bytes=included)
    for j, pattern in enumerate(source.include):
        rx = glob_regex(pattern)
        if not any(rx.match(m.path) for m in members):
            problems.append(Problem(f"source {source.id}: include pattern {pattern!r} matches no file in {artifact.name}",
                                    fix="fix the glob against the artifact's listing, or remove it",
                                    path=entry.path, line=entry.line(*at, "include", j)))
    if is_archive(artifact) and size and included / size > max_ratio:
        problems.append(Problem(
            f"source {source.id}: {artifact.name} is {human_bytes(size)} but its included files unpack to "
            f"{human_bytes(included)} ({included / size:.0f}:1, over the limit of {max_ratio:.0f}:1): "
            "that is the shape of an archive bomb, not of text",
            fix="pin an artifact of real text; text compresses about 3-5:1",
            path=entry.path, line=entry.line(*at, "include")))
        return problems, facts
    try:
        docs = extract(source, artifact, max_total_bytes=max_total)
    except ForgeError as err:
        return [*problems, _problem_for(err, source, index, entry)], facts
    bad = [(d.id, why) for d in docs if (why := text_problem(d.text))]
    if bad:
        examples = "; ".join(f"{doc_id}: {why}" for doc_id, why in bad[:EXAMPLES])
        problems.append(Problem(
            f"source {source.id}: {len(bad)} of {len(docs)} documents are not text ({examples})",
            fix="exclude those files (`exclude:`), or extract the text from them before pinning",
            path=entry.path, line=entry.line(*at, "include")))
    kept = cleaned_documents(dataset, docs)
    text_bytes = sum(len(d.text.encode("utf-8")) for d in docs)
    facts.update(documents=len(docs), empty_documents=sum(1 for d in docs if not d.text.strip()),
                 text_bytes=text_bytes, kept_documents=len(kept))
    if not bad and not kept:
        problems.append(Problem(
            f"source {source.id}: no document is at least {dataset.processing.min_chars} characters after cleaning "
            f"({len(docs)} extracted, {text_bytes} bytes of text)",
            fix="check include/extract (split may cut the text too finely), or lower processing.min_chars",
            path=entry.path, line=entry.line(*at, "extract")))
    return problems, facts


def check_sources(inp: CheckInput) -> CheckResult:
    """Fetch every source of the added dataset again and verify it, its files and its text (module docstring)."""
    if not inp.ref.startswith("dataset/"):
        return CheckResult.skipped(NAME, f"{inp.ref} has no pinned sources (only datasets do)")
    try:
        dataset, entry = load_dataset(inp)
    except ForgeError as err:
        return CheckResult.skipped(NAME, f"the entry does not load, so its sources were not fetched: {first_line(err)}")
    problems: list[Problem] = []
    failing: list[str] = []
    sources: dict[str, dict[str, Any]] = {}
    with source_cache(inp) as cache:
        for i, source in enumerate(dataset.sources):
            found, facts = _check_source(source, i, dataset, entry, inp, cache)
            problems += found
            failing += [source.id] if found else []
            sources[source.id] = facts
    documents = sum(f.get("documents", 0) for f in sources.values())
    text_bytes = sum(f.get("text_bytes", 0) for f in sources.values())
    if problems:
        return CheckResult.failed(NAME, f"{len(problems)} problem(s) with source(s) {', '.join(failing)}", problems,
                                  sources=sources)
    return CheckResult.passed(
        NAME, f"{len(sources)} source(s) fetched and verified against their sha256: {documents} documents, "
        f"{human_bytes(text_bytes)} of UTF-8 text", sources=sources, documents=documents, text_bytes=text_bytes)
