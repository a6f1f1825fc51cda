"""The data-policy check against a registry holding tiny-local: statistics, overlap, personal data, binary."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from contributions.datapolicy import PHONE, check_data_policy, redact_email
from contributions.report import CheckInput
from pipelines.sources import path_digest
from tests.contributions.texts import PROSE
from tests.helpers import REPO, sample, snapshot, write_yaml

TINY = "registry/local_sources/tiny-local"


@pytest.fixture
def root(tmp_path) -> Path:
    """A forge whose registry holds dataset/tiny-local@1 (entry and local files, copied)."""
    root = tmp_path / "repo"
    shutil.copytree(REPO / "registry/entries/datasets/tiny-local", root / "registry/entries/datasets/tiny-local")
    shutil.copytree(REPO / TINY, root / TINY)
    return root


def contribute(root: Path, files: dict[str, bytes], name: str = "shore", version: str = "1") -> CheckInput:
    """An added dataset with one local source, the directory of ``files``, pinned by its digest."""
    folder = root / "registry" / "local_sources" / f"{name}-{version}"
    for rel, data in files.items():
        folder.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(data)
    entry = sample("dataset")
    entry.update(name=name, version=version)
    entry["sources"][0].update(path=folder.relative_to(root).as_posix(), sha256=path_digest(folder))
    rel = f"registry/entries/datasets/{name}/{version}.yaml"
    write_yaml(root / rel, entry)
    return CheckInput(root=root, ref=f"dataset/{name}@{version}", path=rel, cache=root.parent / "cache")


def own_prose() -> dict[str, bytes]:
    return {f"doc_{i}.txt": text.encode() for i, text in enumerate(PROSE)}


def run(root: Path, inp: CheckInput):
    before = snapshot(root)
    result = check_data_policy(inp)
    assert snapshot(root) == before, "the check changed the repository"
    return result


def test_new_text_passes_with_its_statistics(root):
    result = run(root, contribute(root, own_prose()))
    assert result.outcome == "passed", result.problems
    stats = result.details["statistics"]
    lengths = sorted(len(t.strip()) for t in PROSE)
    assert (stats["documents"], stats["characters"], stats["median_characters"]) == (3, sum(lengths), lengths[1])
    assert stats["words"] == sum(len(t.split()) for t in PROSE)
    assert stats["sources"]["texts"]["documents"] == 3
    overlap = result.details["overlap"]
    assert overlap["fraction"] == 0 and overlap["compared_with"] == {"dataset/tiny-local@1": 48}
    assert "3 documents" in result.summary and "overlap with 1 existing dataset(s) 0%" in result.summary


def test_a_dataset_that_is_mostly_an_existing_one_is_refused_with_the_overlap(root):
    chapters = sorted((root / TINY / "moby-dick").glob("chapter_*.txt"))[:6]
    files = {p.name: p.read_bytes() for p in chapters}
    near = chapters[2].name  # a near, not exact, copy: five words changed
    files[near] = files[near].replace(b" the ", b" a ", 5)
    files["mine.txt"] = PROSE[0].encode()
    result = run(root, contribute(root, files))
    assert result.outcome == "failed"
    (p,) = result.problems
    assert "of the dataset duplicates documents already in the registry (over the limit of 50%; mostly " \
           "dataset/tiny-local@1: 6 of 7 documents at MinHash similarity >= 0.8)" in p.message
    overlap = result.details["overlap"]
    assert overlap["documents_fraction"] == pytest.approx(6 / 7, abs=1e-4) and overlap["fraction"] > 0.95
    assert {e["of"] for e in overlap["examples"]} <= {f"moby-dick/{c.name}" for c in chapters}
    assert any(e["document"] == f"texts/{near}" and 0.8 <= e["similarity"] < 1 for e in overlap["examples"])
    assert p.fix.startswith("contribute only what dataset/tiny-local@1 lacks")


def test_a_new_version_of_the_same_dataset_may_repeat_it(root):
    files = {p.name: p.read_bytes() for p in sorted((root / TINY / "sotu").glob("*.txt"))}
    result = run(root, contribute(root, files, name="tiny-local", version="2"))
    assert result.outcome == "passed", result.problems
    assert result.details["overlap"]["by_dataset"]["dataset/tiny-local@1"] == {
        "documents": 12, "characters": result.details["statistics"]["characters"], "fraction": 1.0, "counted": False}


def test_personal_data_is_counted_redacted_and_refused_above_the_limit(root):
    contacts = "".join(f"Write to clerk{i}@parish-records.example.org or call +44 20 7946 {i:04d}.\n" for i in range(12))
    result = run(root, contribute(root, {"a.txt": (PROSE[0] + contacts).encode(), "b.txt": PROSE[1].encode()}))
    assert result.outcome == "failed"
    (p,) = result.problems
    assert p.message.startswith("personal data: 12 e-mail address(es) and 12 phone number(s) in 1 documents "
                                "(over the limit of 20), e.g. c***@p***.org (texts/a.txt)")
    assert "clerk0@" not in p.message and "7946 0000" not in p.message
    few = run(root, contribute(root, {"a.txt": (PROSE[0] + contacts.splitlines()[0]).encode()}, name="few"))
    assert few.outcome == "passed" and few.details["personal_data"]["emails"] == 1
    assert redact_email("jane.doe@mail.example.com") == "j***@m***.com"
    # Years, verse numbers and prices are not phone numbers.
    assert not PHONE.search("In 1790-1791 the debt was 75,463,476 dollars; Psalm 119:105; 1611.")


def test_binary_content_is_refused(root):
    result = run(root, contribute(root, {**own_prose(), "blob.txt": b"\x00\x01\x02" * 200 + PROSE[2].encode()}))
    assert result.outcome == "failed"
    (p,) = result.problems
    assert p.message.startswith("1 of 4 documents are not text: texts/blob.txt: binary: holds NUL characters")
    assert result.details["statistics"]["documents"] == 3
