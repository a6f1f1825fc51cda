"""Cleaning, deduplication, the document-level split, and fetch + prepare end to end."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from commonforge.errors import IntegrityError
from pipelines import fetch, prepare
from pipelines.dedup import MinHasher, find_duplicates, lsh_bands
from pipelines.textclean import clean_text
from registry.schema import DedupSpec, SplitSpec

REPO = Path(__file__).resolve().parents[2]

# --- cleaning ---------------------------------------------------------------------------


def test_cleaning_normalizes_unicode_lines_and_spaces():
    raw = "Cafe\u0301  au   lait   \r\nsecond line\t\x02here  \r\r\n\n\n\n   third\u2028fourth\n\n"
    assert clean_text(raw) == "Café au lait\nsecond line here\n\nthird\nfourth"


def test_cleaning_removes_gutenberg_boilerplate_and_page_markers():
    raw = (
        "The Project Gutenberg EBook of Something, by Someone\n\nThis eBook is for the use of anyone.\n"
        "*** START OF THIS PROJECT GUTENBERG EBOOK SOMETHING ***\n\n"
        "CHAPTER I\n\nIt began [Page 12] well.\n\n[Page 13]\n\nIt ended.\n{14}\n"
        "End of the Project Gutenberg EBook of Something\n\n*** END OF THIS PROJECT GUTENBERG EBOOK ***\n"
        "Section 1. General Terms of Use and Redistributing Project Gutenberg-tm electronic works\n"
    )
    assert clean_text(raw) == "CHAPTER I\n\nIt began well.\n\nIt ended."
    plain = "A text that merely mentions Gutenberg's press in passing.\n\nAnd goes on."
    assert clean_text(plain) == plain


# --- deduplication ----------------------------------------------------------------------


def _essay(seed: int, words: int = 300) -> str:
    vocab = [f"w{(seed * 7919 + i * 104729) % 5003}" for i in range(words)]
    return " ".join(vocab)


def test_exact_and_near_duplicates_are_dropped_and_different_documents_kept():
    base = _essay(1)
    words = base.split()
    near = words.copy()
    for i in (10, 90, 170, 250):  # four words changed of 300
        near[i] = "changed"
    docs = sorted([
        ("a/original", base),
        ("b/exact", "  " + base.upper().replace(" ", "\n ") + "\n"),  # same text, other case and spacing
        ("c/near", " ".join(near)),
        ("d/different", _essay(2)),
        ("e/empty", ""),
    ])
    spec = DedupSpec()
    dupes = find_duplicates(docs, spec)
    assert [(d.id, d.of, d.kind) for d in dupes] == [("b/exact", "a/original", "exact"), ("c/near", "a/original", "near")]
    assert 0.8 <= dupes[1].similarity < 1.0
    assert find_duplicates(docs, spec) == dupes  # deterministic
    assert find_duplicates(docs, DedupSpec(near=False)) == dupes[:1]
    assert find_duplicates(docs, DedupSpec(exact=False, near=False)) == []


def test_minhash_estimates_jaccard_without_python_hash():
    hasher = MinHasher(num_perm=256, shingle=3)
    a, b = _essay(3, 400).split(), _essay(3, 400).split()
    b[200:] = _essay(4, 200).split()  # half the words replaced
    sa, sb = hasher.signature(" ".join(a)), hasher.signature(" ".join(b))

    def shingles(ws):
        return {tuple(ws[i : i + 3]) for i in range(len(ws) - 2)}

    true = len(shingles(a) & shingles(b)) / len(shingles(a) | shingles(b))
    assert abs(float((sa == sb).mean()) - true) < 0.08
    # The same signature in another interpreter (PYTHONHASHSEED differs): no salted hash() inside.
    code = "from pipelines.dedup import MinHasher; print(MinHasher(256, 3).signature('a b c d e f g').tolist())"
    other = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True,
                           env={**os.environ, "PYTHONHASHSEED": "12345"}).stdout
    assert json.loads(other) == hasher.signature("a b c d e f g").tolist()
    bands, rows = lsh_bands(0.8, 128)
    assert bands * rows <= 128 and 0.6 < (1 / bands) ** (1 / rows) < 0.9


# --- the split --------------------------------------------------------------------------


def test_split_is_by_whole_document_deterministic_and_seeded():
    ids = [f"src/doc-{i:04d}.txt" for i in range(2000)]
    spec = SplitSpec(seed=0, validation=0.05, test=0.05)
    first = {i: prepare.split_of(i, spec) for i in ids}
    assert first == {i: prepare.split_of(i, spec) for i in reversed(ids)}
    counts = {s: sum(1 for v in first.values() if v == s) for s in prepare.SPLITS}
    assert 60 <= counts["validation"] <= 140 and 60 <= counts["test"] <= 140
    u = int.from_bytes(hashlib.sha256(b"0:src/doc-0000.txt").digest()[:8], "big") / 2**64
    assert first["src/doc-0000.txt"] == ("validation" if u < 0.05 else "test" if u < 0.1 else "train")
    reseeded = {i: prepare.split_of(i, SplitSpec(seed=1)) for i in ids}
    assert sum(first[i] != reseeded[i] for i in ids) > 100


# --- fetch + prepare end to end ---------------------------------------------------------


@pytest.fixture
def tiny_root(tmp_path, monkeypatch):
    """A minimal checkout holding tiny-local@1 and its files; the environment is restored after."""
    root = tmp_path / "repo"
    for rel in ("registry/entries/datasets/tiny-local", "registry/local_sources/tiny-local"):
        shutil.copytree(REPO / rel, root / rel)
    (root / "pyproject.toml").write_text("")
    saved = dict(os.environ)
    monkeypatch.setenv("COMMONFORGE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    yield root
    os.environ.clear()
    os.environ.update(saved)


def _outputs(root: Path) -> dict[str, bytes]:
    out = root / "build" / "datasets" / "tiny-local"
    files = ["raw.jsonl", "fetch.json", "stats.json"] + [f"splits/{s}.jsonl" for s in prepare.SPLITS]
    return {f: (out / f).read_bytes() for f in files}


def test_fetch_and_prepare_tiny_local_twice_gives_identical_bytes_and_true_stats(tiny_root):
    ref = "dataset/tiny-local@1"
    fetch.main(ref, tiny_root)
    stats = prepare.main(ref, tiny_root)
    first = _outputs(tiny_root)
    shutil.rmtree(tiny_root / "build")
    fetch.main(ref, tiny_root)
    prepare.main(ref, tiny_root)
    assert _outputs(tiny_root) == first

    raw = [json.loads(line) for line in first["raw.jsonl"].decode().splitlines()]
    assert len(raw) == 48 and [d["id"] for d in raw] == sorted(d["id"] for d in raw)
    assert first["raw.jsonl"].splitlines()[0] == json.dumps(
        raw[0], sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    seen: dict[str, str] = {}
    for split in prepare.SPLITS:
        docs = list(prepare.read_split(tiny_root, "tiny-local", split))
        assert docs, f"{split} is empty"
        for d in docs:
            assert d["id"] not in seen, f"{d['id']} is in {seen.get(d['id'])} and {split}"
            seen[d["id"]] = split
        recorded = stats["splits"][split]
        assert recorded["sha256"] == hashlib.sha256(first[f"splits/{split}.jsonl"]).hexdigest()
        assert recorded["documents"] == len(docs)
        assert recorded["bytes"] == sum(len(d["text"].encode()) for d in docs)
        per_source = sum(s["splits"][split]["documents"] for s in stats["sources"].values())
        assert per_source == len(docs)
    assert len(seen) == 48 - sum(sum(s["dropped"].values()) for s in stats["sources"].values())

    digests = prepare.split_digests(tiny_root, "tiny-local")
    assert {k: v.sha256 for k, v in digests.items()} == {k: v["sha256"] for k, v in stats["splits"].items()}
    with open(tiny_root / "build/datasets/tiny-local/splits/test.jsonl", "ab") as f:
        f.write(b"\n")
    with pytest.raises(IntegrityError):
        prepare.split_digests(tiny_root, "tiny-local")

    import datasets

    hf = datasets.load_from_disk(str(tiny_root / "build/datasets/tiny-local/hf"))
    assert {s: hf[s].num_rows for s in prepare.SPLITS} == {s: digests[s].documents for s in prepare.SPLITS}


def test_stage_help_explains_each_stage():
    for module in ("pipelines.fetch", "pipelines.prepare"):
        out = subprocess.run([sys.executable, "-m", module, "--help"], cwd=REPO, capture_output=True,
                             text=True, check=True).stdout
        assert "dataset/<name>@<version>" in out
