"""The document index: FTS5 queries from user input, paging, snippets, and speed on a large split."""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import pytest

from explorer.search import DocumentIndex, fts_query, index_path, markdown_snippet, text_pages


def write_split(path: Path, docs: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for d in docs:
            f.write(json.dumps(d, sort_keys=True, separators=(",", ":"), ensure_ascii=False) + "\n")
    return path


DOCS = [
    {"id": "a/1", "source": "a", "text": "Call me Ishmael. Some years ago, never mind how long precisely."},
    {"id": "a/2", "source": "a", "text": "The white whale swam past the ship; Queequeg watched the whale."},
    {"id": "b/1", "source": "b", "text": "Gentlemen of the Senate and House of Representatives: the Union is strong."},
    {"id": "b/2", "source": "b", "text": "Café society and the naïve whalers; AND OR NOT (near) \"quotes\"."},
]


@pytest.mark.parametrize("typed, query", [
    ("whale", '"whale"'),
    ('"white whale" ship', '"white whale" AND "ship"'),
    ("whal*", '"whal"*'),
    ("AND OR NOT (", '"AND" AND "OR" AND "NOT"'),
    ('"unclosed quote', '"unclosed" AND "quote"'),
    ("   ", ""),
    ("((*))", ""),
])
def test_fts_query_quotes_every_term(typed, query):
    assert fts_query(typed) == query


def test_search_pages_snippets_and_sources(tmp_path):
    index = DocumentIndex.open(write_split(tmp_path / "split.jsonl", DOCS), tmp_path / "cache")
    assert index.documents == 4 and index.sources == ("a", "b")
    assert index_path(tmp_path / "cache", index.sha256) == index.path
    page = index.search("whale")
    assert page.total == 1 and page.hits[0].id == "a/2"
    assert "\x02whale\x03" in page.hits[0].snippet
    assert index.search('"white whale" ship').total == 1
    assert index.search("whal*").total == 2  # whale, whalers
    assert index.search("cafe naive").hits[0].id == "b/2"  # diacritics folded
    assert index.search("AND OR NOT (").total == 1  # operators are words, never a syntax error
    assert index.search("zzyzx").total == 0
    browse = index.search("", per_page=3)
    assert browse.total == 4 and browse.pages == 2 and [h.id for h in browse.hits] == ["a/1", "a/2", "b/1"]
    assert [h.id for h in index.search("", page=2, per_page=3).hits] == ["b/2"]
    assert {h.id for h in index.search("the", source="b").hits} == {"b/1", "b/2"}
    assert index.document("a/1").text.startswith("Call me Ishmael")
    assert index.document("nope") is None


def test_index_is_built_once_per_digest(tmp_path):
    split = write_split(tmp_path / "split.jsonl", DOCS)
    first = DocumentIndex.open(split, tmp_path / "cache")
    again = DocumentIndex.open(split, tmp_path / "cache")
    assert first.build_seconds > 0 and again.build_seconds == 0 and again.path == first.path
    write_split(split, DOCS[:2])  # a re-prepared split has another digest, so another index
    changed = DocumentIndex.open(split, tmp_path / "cache")
    assert changed.sha256 != first.sha256 and changed.documents == 2
    assert not list((tmp_path / "cache").glob(".tmp-*"))


def test_markdown_snippet_escapes_and_bolds():
    md = markdown_snippet("a *b* [c](d) $x$ :ship: \x02hit\x03\nnext")
    assert md == r"a \*b\* \[c\]\(d\) \$x\$ \:ship\: **hit** next"


def test_text_pages_cut_long_documents_at_breaks():
    text = ("word " * 3000).strip()
    pages = text_pages(text, 1000)
    assert "".join(pages) == text and all(len(p) <= 1000 for p in pages) and len(pages) > 10
    assert text_pages("") == [""]


def test_a_large_split_stays_responsive(tmp_path):
    """~20 MB, like literary-pd's training split: indexed in seconds, searched in well under a second."""
    rng = random.Random(0)
    vocab = [f"w{i}" for i in range(5000)] + ["whale", "ship", "queequeg", "harpoon"]
    docs = [{"id": f"s/{i:05d}", "source": f"s{i % 4}",
             "text": " ".join(rng.choice(vocab) for _ in range(2500)) + (" the white whale" if i % 7 == 0 else "")}
            for i in range(1400)]
    split = write_split(tmp_path / "big.jsonl", docs)
    assert split.stat().st_size > 15_000_000
    started = time.perf_counter()
    index = DocumentIndex.open(split, tmp_path / "cache")
    build = time.perf_counter() - started
    assert build < 30, f"indexing took {build:.1f} s"
    for query in ("whale", '"the white whale"', "harpoon queequeg", "w1*", ""):
        started = time.perf_counter()
        page = index.search(query, page=3, per_page=10)
        took = time.perf_counter() - started
        assert took < 1.0, f"{query!r} took {took:.2f} s"
        assert page.total > 0 and len(page.hits) == 10
    print(f"\n[explorer] indexed {split.stat().st_size / 1e6:.0f} MB in {build:.1f} s")
