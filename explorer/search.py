"""Full-text search over a dataset split: a SQLite FTS5 index built once per split digest.

    index = DocumentIndex.open(split_file, cache_dir)     # builds <cache_dir>/fts-v1-<sha256>.sqlite once
    page = index.search('"white whale" ship', page=1, per_page=10)
    page.total, page.hits[0].id, page.hits[0].snippet
    index.document("moby-dick/chapter_10.txt").text

The index is derived data: keyed by the sha256 of the split's JSON-lines bytes, written to a
temporary file and renamed into place (two sessions building it at once both rename the same
result), opened read-only afterwards. Queries are built from the user's words and quoted
phrases, each quoted for FTS5, so no input is a syntax error. Pages are fetched with LIMIT /
OFFSET; a document's text is read only when it is opened, and shown a slice at a time.
"""

from __future__ import annotations

import json
import re
import sqlite3
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from registry.digest import sha256_file
from registry.fsutil import temporary_file

INDEX_FORMAT = "fts-v1"
_HIT_START, _HIT_END = "\x02", "\x03"
_PHRASE = re.compile(r'"([^"]*)"')
_WORD = re.compile(r"[\w'’-]+\*?", re.UNICODE)


@dataclass(frozen=True)
class Hit:
    id: str
    source: str
    chars: int
    snippet: str  # plain text; matched terms between \x02 and \x03


@dataclass(frozen=True)
class SearchPage:
    query: str
    fts_query: str  # what was sent to FTS5 ("" = browsing in id order)
    total: int
    page: int
    per_page: int
    hits: tuple[Hit, ...]
    seconds: float

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.per_page))


@dataclass(frozen=True)
class Document:
    id: str
    source: str
    text: str


def fts_query(text: str) -> str:
    """FTS5 MATCH syntax for what a user typed: quoted phrases and words, all required.

    ``"white whale" ship*`` -> ``"white whale" AND "ship"*``. Every term is double-quoted, so
    FTS5 operators and punctuation in the input are taken literally.
    """
    terms = []
    for phrase in _PHRASE.findall(text):
        words = _WORD.findall(phrase)
        if words:
            terms.append('"' + " ".join(w.rstrip("*") for w in words).replace('"', "") + '"')
    rest = _PHRASE.sub(" ", text)
    for word in _WORD.findall(rest):
        prefix = word.endswith("*")
        word = word.rstrip("*").strip("'’-")
        if word:
            terms.append(f'"{word}"' + ("*" if prefix else ""))
    return " AND ".join(terms)


def index_path(cache_dir: Path, sha256: str) -> Path:
    return Path(cache_dir) / f"{INDEX_FORMAT}-{sha256}.sqlite"


def build_index(split_file: Path, target: Path) -> int:
    """Write the index of one split's JSON lines to ``target`` (atomically); returns the document count."""
    with temporary_file(target.parent) as staged:
        staged.file.close()  # SQLite writes the file by name
        con = sqlite3.connect(staged.path)
        try:
            con.executescript("""
                PRAGMA journal_mode = OFF;
                PRAGMA synchronous = OFF;
                CREATE TABLE docs (rowid INTEGER PRIMARY KEY, id TEXT UNIQUE NOT NULL, source TEXT NOT NULL,
                                   chars INTEGER NOT NULL, text TEXT NOT NULL);
                CREATE INDEX docs_source ON docs (source, id);
                CREATE VIRTUAL TABLE fts USING fts5(text, content='docs', content_rowid='rowid',
                                                    tokenize='unicode61 remove_diacritics 2');
                CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
            """)
            n = 0
            batch = []
            with open(split_file, encoding="utf-8") as f:
                for line in f:
                    if not line.strip():
                        continue
                    doc = json.loads(line)
                    n += 1
                    batch.append((n, doc["id"], doc.get("source", ""), len(doc["text"]), doc["text"]))
                    if len(batch) >= 256:
                        con.executemany("INSERT INTO docs VALUES (?, ?, ?, ?, ?)", batch)
                        batch.clear()
            con.executemany("INSERT INTO docs VALUES (?, ?, ?, ?, ?)", batch)
            con.execute("INSERT INTO fts (rowid, text) SELECT rowid, text FROM docs")
            con.execute("INSERT INTO fts (fts) VALUES ('optimize')")
            con.execute("INSERT INTO meta VALUES ('documents', ?)", (str(n),))
            con.commit()
        finally:
            con.close()
        staged.move_into_place(target, mode=0o644)
    return n


class DocumentIndex:
    """A read-only view of one split's index. Cheap to keep: it holds a path, not a connection."""

    def __init__(self, path: Path, sha256: str, documents: int, sources: tuple[str, ...], build_seconds: float) -> None:
        self.path = path
        self.sha256 = sha256
        self.documents = documents
        self.sources = sources
        self.build_seconds = build_seconds  # 0 when the index was already there

    @classmethod
    def open(cls, split_file: Path, cache_dir: Path, *, sha256: str | None = None) -> DocumentIndex:
        """The index of ``split_file``, building it first if this digest has none yet."""
        digest = sha256 or sha256_file(split_file)
        target = index_path(cache_dir, digest)
        seconds = 0.0
        if not target.is_file():
            started = time.perf_counter()
            try:
                build_index(split_file, target)
            except OSError:
                # A read-only cache folder: fall back to the system's temporary folder.
                target = index_path(Path(tempfile.gettempdir()) / "commonforge-explorer", digest)
                if not target.is_file():
                    build_index(split_file, target)
            seconds = time.perf_counter() - started
        with cls._connect(target) as con:
            documents = int(con.execute("SELECT value FROM meta WHERE key = 'documents'").fetchone()[0])
            sources = tuple(r[0] for r in con.execute("SELECT DISTINCT source FROM docs ORDER BY source"))
        return cls(target, digest, documents, sources, seconds)

    @staticmethod
    def _connect(path: Path) -> sqlite3.Connection:
        # A connection per call: Streamlit serves each session from its own thread.
        return sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)

    def search(self, query: str = "", *, page: int = 1, per_page: int = 10, source: str | None = None) -> SearchPage:
        started = time.perf_counter()
        match = fts_query(query)
        page = max(1, int(page))
        offset = (page - 1) * per_page
        src_sql, src_args = (" AND d.source = ?", [source]) if source else ("", [])
        con = self._connect(self.path)
        try:
            if match:
                total = con.execute(
                    f"SELECT count(*) FROM fts JOIN docs d ON d.rowid = fts.rowid WHERE fts MATCH ?{src_sql}",
                    [match, *src_args]).fetchone()[0]
                rows = con.execute(
                    "SELECT d.id, d.source, d.chars, snippet(fts, 0, char(2), char(3), ' … ', 24) "
                    f"FROM fts JOIN docs d ON d.rowid = fts.rowid WHERE fts MATCH ?{src_sql} "
                    "ORDER BY rank LIMIT ? OFFSET ?", [match, *src_args, per_page, offset]).fetchall()
            else:
                where = " WHERE d.source = ?" if source else ""
                total = con.execute(f"SELECT count(*) FROM docs d{where}", src_args).fetchone()[0]
                rows = con.execute(
                    f"SELECT d.id, d.source, d.chars, substr(d.text, 1, 240) FROM docs d{where} "
                    "ORDER BY d.id LIMIT ? OFFSET ?", [*src_args, per_page, offset]).fetchall()
        except sqlite3.OperationalError:
            total, rows = 0, []  # a query FTS5 still refuses (should not happen: every term is quoted)
        finally:
            con.close()
        hits = tuple(Hit(r[0], r[1], int(r[2]), r[3]) for r in rows)
        return SearchPage(query, match, int(total), page, per_page, hits, time.perf_counter() - started)

    def document(self, doc_id: str) -> Document | None:
        con = self._connect(self.path)
        try:
            row = con.execute("SELECT id, source, text FROM docs WHERE id = ?", (doc_id,)).fetchone()
        finally:
            con.close()
        return Document(*row) if row else None


_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|~<>$:])")


def escape_markdown(text: str) -> str:
    """Text that Streamlit's Markdown shows as typed (no emphasis, links, LaTeX or :shortcodes:)."""
    return _MD_SPECIAL.sub(r"\\\1", text)


def markdown_snippet(snippet: str) -> str:
    """A snippet as Markdown: everything escaped, matches in bold, on one line."""
    text = escape_markdown(" ".join(snippet.split()))
    return text.replace(_HIT_START, "**").replace(_HIT_END, "**")


def text_pages(text: str, size: int = 6000) -> list[str]:
    """A long document cut into pages of about ``size`` characters, at paragraph or word breaks."""
    pages, start = [], 0
    while start < len(text):
        end = min(len(text), start + size)
        if end < len(text):
            cut = text.rfind("\n\n", start + size // 2, end)
            if cut == -1:
                cut = text.rfind(" ", start + size // 2, end)
            if cut != -1:
                end = cut + 1
        pages.append(text[start:end])
        start = end
    return pages or [""]
