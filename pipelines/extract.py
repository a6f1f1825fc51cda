"""From a verified artifact to documents: safe unpacking, then text per ``Extract.format``.

    members = read_members(artifact, source)          # sorted, in memory, only what `include` names
    docs = extract_documents(source, artifact)        # [Document(id, source, text)], sorted by id

Unpacking reads archive members into memory; nothing is written to disk. Supported artifacts:
zip (wheels), tar / tar.gz / tgz / tar.xz / tar.bz2 (sdists, npm), .deb (an ``ar`` archive
whose ``data.tar.*`` is read as a tar), a plain file, a local directory. A member is read
only when its normalized path matches one of the source's ``include`` globs and none of its
``exclude`` globs (``*`` and ``?`` stay within one path segment, ``**/`` spans directories).
An archive holding a member whose path escapes (absolute, ``..``) is refused as a whole;
an included member that is a link or device is refused; each member is limited to
``extract.max_file_bytes`` and all members of an artifact together to ``max_total_bytes``.

Text per format:

* ``text``: each member decoded with ``extract.encoding`` (undecodable bytes: InputError).
* ``python-string``: the .py member parsed with :mod:`ast` (never imported or executed); the
  text is the string constant assigned to ``extract.variable`` at module level, or, when the
  value is a call (``bible = Bible(Version.KJV, "...", ...)``), its only string-constant
  positional argument.
* ``rdata``: an R lazy-load database, ``<x>.rdx`` + ``<x>.rdb`` (both must be included).
  The rdx is gzip'd R serialization of the index (object name -> offset, length in the rdb);
  each rdb entry is a 4-byte big-endian length then zlib'd R serialization of the object. Each
  selected object (``extract.objects``, default all; sorted by name) must be a character
  vector; its elements are the text's lines (NA: empty line). Parsed with the ``rdata`` package.

Then per text: ``split`` (each match of the multiline regex starts a new document; text
before the first match becomes a document only when it has at least
``PREAMBLE_MIN_CHARS`` characters), then the ``strip`` regexes on each piece. Splitting comes
first because a strip pattern may remove the very markers the split needs (the KJV's verse
numbers mark its chapters). Document ids are ``<source id>/<member path>`` and, when the source
splits, ``#NNNN`` (1-based, zero-padded so ids sort in text order); an rdata object's member
path is ``<database path without .rdx>/<object>``.
"""

from __future__ import annotations

import ast
import gzip
import io
import os
import re
import stat
import struct
import tarfile
import warnings
import zipfile
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path, PurePosixPath
from typing import IO

from commonforge.errors import InputError
from registry.schema import Extract, Source

MAX_TOTAL_BYTES = 1 << 30  # all included members of one artifact together (1 GiB)
PREAMBLE_MIN_CHARS = 500  # text before the first split match is a document only from this size

_TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.xz", ".txz", ".tar.bz2", ".tbz2")


@dataclass(frozen=True)
class Member:
    path: str  # normalized POSIX path inside the artifact, e.g. "package/data/chapter_1.txt"
    data: bytes


@dataclass(frozen=True)
class Document:
    id: str  # "<source id>/<member path>[#NNNN]"
    source: str  # the source id
    text: str


# --- globs and paths --------------------------------------------------------------------


@lru_cache(maxsize=256)
def glob_regex(pattern: str) -> re.Pattern[str]:
    """Compile an include/exclude glob: ``*``/``?``/``[...]`` within a segment, ``**`` across them."""
    out, i = [], 0
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith("**/", i):
            out.append("(?:[^/]+/)*")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif c == "*":
            out.append("[^/]*")
            i += 1
        elif c == "?":
            out.append("[^/]")
            i += 1
        elif c == "[" and "]" in pattern[i + 2 :]:
            j = pattern.index("]", i + 2)
            body = pattern[i + 1 : j]
            if body.startswith("!"):
                body = "^" + body[1:]
            out.append(f"[{body.replace(chr(92), chr(92) * 2)}]")
            i = j + 1
        else:
            out.append(re.escape(c))
            i += 1
    return re.compile("".join(out) + r"\Z")


def selected(path: str, include: Iterable[str], exclude: Iterable[str] = ()) -> bool:
    return any(glob_regex(p).match(path) for p in include) and not any(glob_regex(p).match(path) for p in exclude)


def normalize_member(name: str, artifact: str) -> str:
    """A member name as a clean relative POSIX path; absolute paths and ``..`` are refused."""
    if "\x00" in name or "\\" in name:
        raise InputError(f"{artifact}: member {name!r} has a NUL or backslash in its name",
                         hint="the archive is malformed or hostile; it is not unpacked")
    if name.startswith("/") or re.match(r"^[A-Za-z]:", name):
        raise InputError(f"{artifact}: member {name!r} has an absolute path",
                         hint="the archive would write outside its directory; it is not unpacked")
    parts = [p for p in PurePosixPath(name).parts if p not in ("", ".")]
    if ".." in parts:
        raise InputError(f"{artifact}: member {name!r} escapes the archive with '..'",
                         hint="the archive would write outside its directory; it is not unpacked")
    return "/".join(parts)


class _Budget:
    """Per-member and per-artifact size limits, checked before and while reading."""

    def __init__(self, artifact: str, per_member: int, total: int) -> None:
        self.artifact, self.per_member, self.total, self.used = artifact, per_member, total, 0

    def check_declared(self, path: str, size: int) -> None:
        if size > self.per_member:
            raise InputError(
                f"{self.artifact}: member {path} is {size} bytes, over the limit of {self.per_member}",
                hint="raise extract.max_file_bytes in the entry if the file is really meant to be that large",
            )

    def read(self, path: str, stream: IO[bytes]) -> bytes:
        data = stream.read(self.per_member + 1)
        self.check_declared(path, len(data))
        self.used += len(data)
        if self.used > self.total:
            raise InputError(
                f"{self.artifact}: included members exceed {self.total} bytes together",
                hint="narrow `include`, or split the source",
            )
        return data


# --- readers ----------------------------------------------------------------------------


def _kind(path: Path) -> str:
    name = path.name.lower()
    if path.is_dir():
        return "dir"
    if name.endswith((".whl", ".zip")):
        return "zip"
    if name.endswith(_TAR_SUFFIXES):
        return "tar"
    if name.endswith(".deb"):
        return "deb"
    return "file"


def _tar_members(tf: tarfile.TarFile, artifact: str, source: Source, budget: _Budget) -> Iterator[Member]:
    for info in tf:
        path = normalize_member(info.name, artifact)
        if info.isdir() or not selected(path, source.include, source.exclude):
            continue  # a directory holds no text of its own (a glob such as `**` matches it too)
        if not info.isreg():
            what = "link" if info.issym() or info.islnk() else "device or fifo"
            raise InputError(f"{artifact}: included member {path} is a {what}",
                             hint="only regular files are read; narrow `include` to skip it")
        budget.check_declared(path, info.size)
        f = tf.extractfile(info)
        assert f is not None
        yield Member(path, budget.read(path, f))


def _read_tar(fileobj: io.BufferedIOBase, artifact: str, source: Source, budget: _Budget) -> Iterator[Member]:
    try:
        with tarfile.open(fileobj=fileobj, mode="r:*") as tf:
            yield from _tar_members(tf, artifact, source, budget)
    except (tarfile.TarError, EOFError, zlib.error, OSError) as err:
        raise InputError(f"{artifact}: not a readable tar archive ({err})",
                         hint="the artifact is damaged; delete it from the cache and fetch again") from None


def _read_zip(path: Path, artifact: str, source: Source, budget: _Budget) -> Iterator[Member]:
    try:
        zf = zipfile.ZipFile(path)
    except zipfile.BadZipFile as err:
        raise InputError(f"{artifact}: not a readable zip archive ({err})") from None
    with zf:
        infos = zf.infolist()
        for info in infos:  # refuse escapes anywhere in the archive before reading anything
            normalize_member(info.filename, artifact)
        for info in infos:
            path_ = normalize_member(info.filename, artifact)
            if info.is_dir() or not selected(path_, source.include, source.exclude):
                continue
            file_type = stat.S_IFMT(info.external_attr >> 16)  # 0 when the writer set no Unix mode
            if file_type and file_type != stat.S_IFREG:
                raise InputError(f"{artifact}: included member {path_} is a link or special file",
                                 hint="only regular files are read; narrow `include` to skip it")
            budget.check_declared(path_, info.file_size)
            with zf.open(info) as f:
                yield Member(path_, budget.read(path_, f))


def _ar_entries(data: bytes, artifact: str) -> Iterator[tuple[str, bytes]]:
    """Entries of a (System V / GNU) ``ar`` archive, the container format of a .deb."""
    if not data.startswith(b"!<arch>\n"):
        raise InputError(f"{artifact}: not a Debian package (no ar header)")
    pos = 8
    while pos + 60 <= len(data):
        header = data[pos : pos + 60]
        if header[58:60] != b"`\n":
            raise InputError(f"{artifact}: damaged ar header at byte {pos}")
        name = header[:16].decode("ascii", "replace").strip().rstrip("/")
        try:
            size = int(header[48:58].decode("ascii").strip())
        except ValueError:
            raise InputError(f"{artifact}: damaged ar header at byte {pos}") from None
        start = pos + 60
        if start + size > len(data):
            raise InputError(f"{artifact}: ar member {name} is truncated")
        yield name, data[start : start + size]
        pos = start + size + (size & 1)  # members are 2-byte aligned


def _read_deb(path: Path, artifact: str, source: Source, budget: _Budget) -> Iterator[Member]:
    for name, payload in _ar_entries(path.read_bytes(), artifact):
        if name.startswith("data.tar"):
            if name.endswith(".zst"):
                raise InputError(f"{artifact}: {name} is zstd-compressed, which Python cannot read",
                                 hint="pin a package built with xz or gzip compression")
            yield from _read_tar(io.BytesIO(payload), artifact, source, budget)
            return
    raise InputError(f"{artifact}: no data.tar member", hint="the artifact is not a Debian binary package")


def _read_dir(path: Path, artifact: str, source: Source, budget: _Budget) -> Iterator[Member]:
    for dirpath, dirnames, filenames in os.walk(path, followlinks=False):
        dirnames.sort()
        for name in sorted(filenames) + [d for d in dirnames if (Path(dirpath) / d).is_symlink()]:
            f = Path(dirpath) / name
            rel = f.relative_to(path).as_posix()
            if not selected(rel, source.include, source.exclude):
                continue
            if f.is_symlink() or not f.is_file():
                raise InputError(f"{artifact}: included file {rel} is a link or special file",
                                 hint="a local source holds regular files only")
            budget.check_declared(rel, f.stat().st_size)
            with open(f, "rb") as fh:
                yield Member(rel, budget.read(rel, fh))


def read_members(artifact: Path, source: Source, *, max_total_bytes: int = MAX_TOTAL_BYTES) -> list[Member]:
    """The included members of a *verified* artifact, sorted by path, read into memory."""
    label = artifact.name
    budget = _Budget(label, source.extract.max_file_bytes, max_total_bytes)
    kind = _kind(artifact)
    if kind == "dir":
        members = list(_read_dir(artifact, label, source, budget))
    elif kind == "zip":
        members = list(_read_zip(artifact, label, source, budget))
    elif kind == "tar":
        with open(artifact, "rb") as f:
            members = list(_read_tar(f, label, source, budget))
    elif kind == "deb":
        members = list(_read_deb(artifact, label, source, budget))
    else:
        members = []
        if selected(artifact.name, source.include, source.exclude):
            budget.check_declared(artifact.name, artifact.stat().st_size)
            with open(artifact, "rb") as f:
                members = [Member(artifact.name, budget.read(artifact.name, f))]
    paths = [m.path for m in members]
    dupes = sorted({p for p in paths if paths.count(p) > 1})
    if dupes:
        raise InputError(f"{label}: members stored twice: {', '.join(dupes)}",
                         hint="the archive is ambiguous; it is not used")
    if not members:
        raise InputError(f"source {source.id}: no file in {label} matches include {source.include}",
                         hint="check the globs against the artifact's listing")
    return sorted(members, key=lambda m: m.path)


# --- text per format --------------------------------------------------------------------


def _decode(member: Member, encoding: str) -> str:
    try:
        return member.data.decode(encoding)
    except UnicodeDecodeError as err:
        raise InputError(
            f"{member.path}: not valid {encoding} (byte {err.start}: {member.data[err.start:err.start + 4]!r})",
            hint="set extract.encoding to the file's real encoding, or exclude the file",
        ) from None
    except LookupError:
        raise InputError(f"unknown encoding {encoding!r}", hint="use a Python codec name, e.g. utf-8 or latin-1") from None


def python_string(member: Member, variable: str, encoding: str = "utf-8") -> str:
    """The string constant assigned to ``variable`` in a Python file, read with ast (never run)."""
    source = _decode(member, encoding)
    try:
        tree = ast.parse(source, filename=member.path)
    except SyntaxError as err:
        raise InputError(f"{member.path}: not parseable Python ({err.msg}, line {err.lineno})") from None
    value = None
    for node in tree.body:  # the last module-level assignment wins, as it would at run time
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == variable for t in node.targets):
            value = node.value
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.target.id == variable:
            value = node.value
    if value is None:
        raise InputError(f"{member.path}: no module-level assignment to {variable!r}",
                         hint="set extract.variable to the name the text is assigned to")
    if isinstance(value, ast.Constant) and isinstance(value.value, str):
        return value.value
    if isinstance(value, ast.Call):
        strings = [a.value for a in value.args if isinstance(a, ast.Constant) and isinstance(a.value, str)]
        if len(strings) == 1:
            return strings[0]
    raise InputError(
        f"{member.path}: {variable!r} is not a string constant (nor a call with exactly one string argument)",
        hint="point extract.variable at the assignment that holds the text",
    )


def _r_parse(data: bytes, what: str):
    import rdata

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "Unknown file type: assumed RDS": expected for bare serializations
            return rdata.conversion.convert(rdata.parser.parse_data(data))
    except Exception as err:  # the parser raises assorted errors on malformed input
        raise InputError(f"{what}: not a readable R serialization ({type(err).__name__}: {err})") from None


def _bounded_zlib(data: bytes, limit: int, what: str) -> bytes:
    d = zlib.decompressobj()
    try:
        out = d.decompress(data, limit + 1)
    except zlib.error as err:
        raise InputError(f"{what}: damaged zlib stream ({err})") from None
    if len(out) > limit:
        raise InputError(f"{what}: decompresses to more than {limit} bytes",
                         hint="raise extract.max_file_bytes if the object is really that large")
    return out


def _rdb_entry(blob: bytes, compressed: object, limit: int, what: str) -> bytes:
    """Decompress one lazy-load DB entry (R's lazyLoadDBfetch: zlib, or typed for bzip2/xz)."""
    if len(blob) < 5:
        raise InputError(f"{what}: truncated entry")
    (length,) = struct.unpack(">I", blob[:4])
    if length > limit:
        raise InputError(f"{what}: {length} bytes uncompressed, over the limit of {limit}",
                         hint="raise extract.max_file_bytes if the object is really that large")
    if compressed in (True, 1):
        return _bounded_zlib(blob[4:], limit, what)
    kind, body = blob[4:5], blob[5:]  # compress = 2 or 3: a type byte follows the length
    if kind == b"0":
        return body[:limit]
    if kind == b"Z":
        return _bounded_zlib(body, limit, what)
    import bz2
    import lzma

    try:
        if kind == b"2":
            return bz2.BZ2Decompressor().decompress(body, limit)
        if kind == b"X":
            return lzma.LZMADecompressor().decompress(body, limit)
    except (OSError, lzma.LZMAError, ValueError) as err:
        raise InputError(f"{what}: damaged compressed entry ({err})") from None
    raise InputError(f"{what}: unknown lazy-load compression {kind!r}")


def rdata_texts(index: Member, db: Member, objects: list[str] | None, limit: int) -> list[tuple[str, str]]:
    """``[(object name, text)]`` from an R lazy-load database, sorted by object name."""
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(index.data)) as f:
            raw_index = f.read(limit + 1)
    except (OSError, EOFError) as err:
        raise InputError(f"{index.path}: not a gzip'd R index ({err})") from None
    parsed = _r_parse(raw_index, index.path)
    try:
        variables = {str(k): v for k, v in parsed["variables"].items()}
        flag = parsed.get("compressed", [True])
        compressed = flag[0].item() if hasattr(flag[0], "item") else flag[0]
    except (KeyError, TypeError, AttributeError, IndexError):
        raise InputError(f"{index.path}: not a lazy-load index (no `variables`)") from None
    wanted = sorted(variables) if objects is None else sorted(objects)
    missing = [o for o in wanted if o not in variables]
    if missing:
        raise InputError(f"{index.path}: no object {', '.join(missing)}",
                         hint=f"objects in this database: {', '.join(sorted(variables))}")
    out = []
    for name in wanted:
        offset, length = (int(x) for x in variables[name])
        what = f"{db.path}:{name}"
        if offset < 0 or length < 0 or offset + length > len(db.data):
            raise InputError(f"{what}: entry lies outside the database ({offset}+{length})")
        value = _r_parse(_rdb_entry(db.data[offset : offset + length], compressed, limit, what), what)
        try:
            lines = ["" if x is None or (isinstance(x, float) and x != x) else x for x in list(value)]
        except TypeError:
            lines = None
        if lines is None or not all(isinstance(x, str) for x in lines):
            raise InputError(f"{what}: not a character vector ({type(value).__name__})",
                             hint="list only text objects in extract.objects")
        out.append((name, "\n".join(str(x) for x in lines)))
    return out


def member_texts(members: list[Member], extract: Extract) -> list[tuple[str, str]]:
    """``[(member path, text)]`` per the extract format, sorted by path."""
    if extract.format == "text":
        return [(m.path, _decode(m, extract.encoding)) for m in members]
    if extract.format == "python-string":
        assert extract.variable is not None
        return [(m.path, python_string(m, extract.variable, extract.encoding)) for m in members]
    by_path = {m.path: m for m in members}
    out: list[tuple[str, str]] = []
    for m in members:
        if not m.path.endswith(".rdx"):
            continue
        stem = m.path[: -len(".rdx")]
        db = by_path.get(stem + ".rdb")
        if db is None:
            raise InputError(f"{m.path} has no {stem}.rdb beside it", hint="include both the .rdx and the .rdb")
        out.extend((f"{stem}/{name}", text) for name, text in rdata_texts(m, db, extract.objects, extract.max_file_bytes))
    if not out:
        raise InputError("no R lazy-load index (.rdx) among the included files", hint="include <x>.rdx and <x>.rdb")
    return sorted(out)


def split_text(text: str, pattern: str | None) -> list[str]:
    """Pieces of ``text``: each match of ``pattern`` starts one; a short preamble is dropped."""
    if not pattern:
        return [text]
    starts = [m.start() for m in re.finditer(pattern, text, re.MULTILINE)]
    if not starts:
        return [text]
    pieces = [text[a:b] for a, b in zip(starts, starts[1:] + [len(text)])]
    preamble = text[: starts[0]]
    if len(preamble.strip()) >= PREAMBLE_MIN_CHARS:
        pieces.insert(0, preamble)
    return pieces


def strip_text(text: str, patterns: list[str]) -> str:
    for pattern in patterns:
        text = re.sub(pattern, "", text, flags=re.MULTILINE)
    return text


def extract_documents(source: Source, artifact: Path, *, max_total_bytes: int = MAX_TOTAL_BYTES) -> list[Document]:
    """Documents of one source from its verified artifact, sorted by id."""
    members = read_members(artifact, source, max_total_bytes=max_total_bytes)
    docs = []
    for path, text in member_texts(members, source.extract):
        pieces = split_text(text, source.extract.split)
        for n, piece in enumerate(pieces, start=1):
            doc_id = f"{source.id}/{path}" + (f"#{n:04d}" if source.extract.split else "")
            docs.append(Document(doc_id, source.id, strip_text(piece, source.extract.strip)))
    return sorted(docs, key=lambda d: d.id)
