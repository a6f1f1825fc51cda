"""The pinned-sources check on small local sources: a clean one passes, each bad input fails with its message."""

from __future__ import annotations

import gzip
import io
import tarfile
from pathlib import Path

import yaml

from contributions.report import CheckInput
from contributions.sources_check import check_sources, text_problem
from pipelines.sources import path_digest
from tests.contributions.texts import PROSE
from tests.helpers import sample, snapshot, write_yaml


def make_dataset(root: Path, name: str = "shore", files: dict[str, bytes] | None = None, *,
                 source: dict | None = None, **fields) -> CheckInput:
    """A dataset entry with one local source (a directory of ``files``) pinned by its real digest."""
    folder = root / "registry" / "local_sources" / name
    if files is None:
        files = {f"doc_{i}.txt": text.encode() for i, text in enumerate(PROSE)}
    for rel, data in files.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(data)
    entry = sample("dataset")
    entry.update(name=name, **fields)
    entry["sources"][0].update({"path": f"registry/local_sources/{name}", "sha256": path_digest(folder), **(source or {})})
    rel = f"registry/entries/datasets/{name}/1.yaml"
    write_yaml(root / rel, entry)
    return CheckInput(root=root, ref=f"dataset/{name}@1", path=rel, cache=root.parent / "cache")


def tarball(path: Path, members: dict[str, bytes]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path


def archive_source(root: Path, name: str, archive: Path, include: str = "texts/*.txt", **extract) -> CheckInput:
    """A dataset whose one local source is the archive file ``archive`` (inside ``root``)."""
    entry = sample("dataset")
    entry["name"] = name
    entry["sources"][0].update(path=archive.relative_to(root).as_posix(), sha256=path_digest(archive),
                               include=[include], extract={"format": "text", **extract})
    rel = f"registry/entries/datasets/{name}/1.yaml"
    write_yaml(root / rel, entry)
    return CheckInput(root=root, ref=f"dataset/{name}@1", path=rel, cache=root.parent / "cache")


def line_of(root: Path, inp: CheckInput, key: str) -> int:
    """1-based line of the first ``key:`` in the entry file."""
    lines = (root / inp.path).read_text().splitlines()
    return next(n for n, text in enumerate(lines, start=1) if text.strip().startswith(f"{key}:"))


def run(root: Path, inp: CheckInput):
    before = snapshot(root)
    result = check_sources(inp)
    assert snapshot(root) == before, "the check changed the repository"
    return result


def test_a_clean_local_source_passes_with_its_facts(tmp_path):
    root = tmp_path / "repo"
    inp = make_dataset(root)
    result = run(root, inp)
    assert result.outcome == "passed", result.problems
    facts = result.details["sources"]["texts"]
    assert facts["documents"] == 3 and facts["files"] == 3 and facts["kept_documents"] == 3
    assert facts["size"] == sum(len(p) for p in PROSE) and facts["sha256"] == path_digest(root / "registry/local_sources/shore")
    assert "3 documents" in result.summary


def test_a_wrong_sha256_fails_naming_both_digests_at_the_pin(tmp_path):
    root = tmp_path / "repo"
    inp = make_dataset(root, source={"sha256": "0" * 64})
    result = run(root, inp)
    assert result.outcome == "failed"
    (p,) = result.problems
    actual = path_digest(root / "registry/local_sources/shore")
    assert "digest mismatch" in p.message and "0" * 64 in p.message and actual in p.message
    assert (p.path, p.line) == (inp.path, line_of(root, inp, "sha256"))
    assert "pin the new digest" in p.fix


def test_a_source_that_cannot_be_fetched_fails_and_caches_nothing(tmp_path):
    root = tmp_path / "repo"
    inp = make_dataset(root)
    entry = yaml.safe_load((root / inp.path).read_text())
    source = entry["sources"][0]
    del source["path"]
    source.update(kind="url", url="http://127.0.0.1:9/shore.tar.gz")  # the discard port: nobody listens
    write_yaml(root / inp.path, entry)
    result = run(root, inp)
    assert result.outcome == "failed"
    (p,) = result.problems
    assert p.message.startswith("source texts cannot be fetched: GET http://127.0.0.1:9/shore.tar.gz")
    assert p.line == line_of(root, inp, "url")
    assert not any(inp.cache.rglob("*.tar.gz")), "a failed fetch left something in the cache"


def test_a_member_path_that_leaves_the_archive_refuses_the_source(tmp_path):
    root = tmp_path / "repo"
    archive = tarball(root / "registry" / "local_sources" / "evil.tar.gz",
                      {"texts/a.txt": PROSE[0].encode(), "../../outside.txt": b"gotcha\n"})
    result = run(root, archive_source(root, "evil", archive))
    assert result.outcome == "failed"
    (p,) = result.problems
    assert "member '../../outside.txt' escapes the archive with '..'" in p.message
    assert "not unpacked" in p.fix
    assert not (tmp_path / "outside.txt").exists()


def test_an_archive_bomb_is_refused_by_its_compression_ratio(tmp_path):
    root = tmp_path / "repo"
    # 16 MiB of one byte: under the per-file cap, but about 1000:1 in gzip.
    archive = tarball(root / "registry" / "local_sources" / "bomb.tar.gz", {"texts/a.txt": b"a" * (16 << 20)})
    assert archive.stat().st_size < 100_000
    result = run(root, archive_source(root, "bomb", archive))
    assert result.outcome == "failed"
    (p,) = result.problems
    assert "archive bomb" in p.message and "16.0 MiB" in p.message and "over the limit of 100:1" in p.message


def test_an_oversize_file_is_refused_before_it_is_read(tmp_path):
    root = tmp_path / "repo"
    inp = make_dataset(root, source={"extract": {"format": "text", "max_file_bytes": 200}})
    result = run(root, inp)
    assert result.outcome == "failed"
    (p,) = result.problems
    assert "member doc_0.txt is" in p.message and "over the limit of 200" in p.message
    assert "max_file_bytes" in p.fix and p.line == line_of(root, inp, "extract")


def test_text_that_is_not_utf8_is_refused_with_its_byte(tmp_path):
    root = tmp_path / "repo"
    inp = make_dataset(root, files={"latin.txt": PROSE[0].replace("harbour", "café").encode("latin-1")})
    result = run(root, inp)
    assert result.outcome == "failed"
    (p,) = result.problems
    assert "latin.txt: not valid utf-8 (byte" in p.message and "extract.encoding" in p.fix


def test_binary_content_is_refused(tmp_path):
    root = tmp_path / "repo"
    blob = gzip.compress(PROSE[1].encode() * 20)  # compressed bytes with a .txt name
    inp = make_dataset(root, files={"a.txt": PROSE[0].encode(), "b.txt": b"\x7fELF\x02\x01\x01" + b"\x00" * 400 + b"x"})
    result = run(root, inp)
    assert result.outcome == "failed"
    (p,) = result.problems
    assert "1 of 2 documents are not text" in p.message and "texts/b.txt: binary: holds NUL characters" in p.message
    assert text_problem(PROSE[0]) is None and text_problem(blob.decode("latin-1")) is not None


def test_an_include_glob_that_matches_nothing_is_named(tmp_path):
    root = tmp_path / "repo"
    inp = make_dataset(root, source={"include": ["*.txt", "chapters/*.md"]})
    result = run(root, inp)
    assert result.outcome == "failed"
    (p,) = result.problems
    assert "include pattern 'chapters/*.md' matches no file" in p.message


def test_a_size_other_than_the_scaffold_recorded_fails(tmp_path):
    root = tmp_path / "repo"
    inp = make_dataset(root, source={"notes": "Scaffolded by `commonforge new dataset`: the artifact is 1,234 bytes."})
    result = run(root, inp)
    assert result.outcome == "failed"
    (p,) = result.problems
    size = sum(len(t) for t in PROSE)
    assert p.message == f"source texts: the artifact is {size:,} bytes, the entry records 1,234"
    assert p.line == line_of(root, inp, "notes")
    assert result.details["sources"]["texts"]["recorded_size"] == 1234


def test_a_bomb_among_the_skipped_members_is_refused_before_unpacking(tmp_path):
    root = tmp_path / "repo"
    archive = tarball(root / "registry" / "local_sources" / "skipped.tar.gz",
                      {"texts/a.txt": PROSE[0].encode(), "data/zeros.bin": bytes(3 << 20)})
    inp = archive_source(root, "skipped", archive)
    inp = CheckInput(root=inp.root, ref=inp.ref, path=inp.path, cache=inp.cache, options={"max_archive_bytes": 1 << 20})
    result = run(root, inp)
    assert result.outcome == "failed"
    (p,) = result.problems
    assert "declare more than 1.0 MiB unpacked: an archive bomb" in p.message
