"""sharing/logsource.py: a real log directory (trust.log.operator) served over a real HTTP server on
loopback under /v1/log/, verified by the real monitor like a directory: copies agree, a forked log
served by a peer is an equivocation (exit 3), truncated and oversize tiles are refused naming the
tile's URL, and a peer that stalls on a tile hits the timeout."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest

from sharing.fetch import PeerError, PeerUnavailable
from sharing.logsource import http_source
from tests.sharing.test_fetch import serve
from trust.log import note, tiles
from trust.log.client import ClientState
from trust.log.merkle import LogError
from trust.log.monitor import EXIT_EQUIVOCATION, EXIT_OK, EXIT_PROBLEM, monitor
from trust.log.operator import LogOperator

ORIGIN = "forge.example/log"

Tamper = Callable[[str, bytes], bytes | None]  # (path under /v1/log/, bytes) -> bytes to send (None: as is)


@contextmanager
def serve_log(directory: Path, tamper: Tamper | None = None) -> Iterator[str]:
    """The log directory's files at ``<url>/v1/log/...``, as a peer serves them (404 for the rest)."""

    def handle(h: BaseHTTPRequestHandler) -> None:
        relative = h.path.removeprefix("/v1/log/")
        path = directory / relative
        if not h.path.startswith("/v1/log/") or ".." in relative or not path.is_file():
            h.send_response(404)
            h.send_header("Content-Length", "0")
            h.end_headers()
            return
        data = path.read_bytes()
        if tamper is not None and (changed := tamper(relative, data)) is not None:
            data = changed
        h.send_response(200)
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)

    with serve(handle) as url:
        yield url


@pytest.fixture(scope="module")
def signer() -> note.Signer:
    return note.parse_signer(note.generate_key(ORIGIN)[0])


def operated(directory: Path, signer: note.Signer, entries: list[bytes]) -> LogOperator:
    op = LogOperator(directory, ORIGIN, signer)
    op.append(entries)
    return op


def statements(start: int, stop: int) -> list[bytes]:
    return [f"statement {i}".encode() for i in range(start, stop)]


def test_a_peer_log_and_a_directory_agree_and_a_lagging_mirror_is_proved_consistent(
    tmp_path: Path, signer: note.Signer
) -> None:
    op = operated(tmp_path / "log", signer, statements(0, 200))
    old = tmp_path / "old"
    shutil.copytree(op.directory, old, ignore=shutil.ignore_patterns(".lock"))
    op.append(statements(200, 300))  # across a tile boundary: full tiles, partials, a level-1 tile
    with serve_log(op.directory) as url:
        source = http_source(url, timeout=2)
        assert source.name == url and source.tree.size == 300
        report = monitor([source, op.directory, old], signer.verifier(), state=ClientState(tmp_path / "s.json"))
        assert report.exit_code() == EXIT_OK, report.lines()
        assert [r.size for r in report.sources] == [300, 300, 200]
        assert report.sources[0].root == report.sources[1].root
        assert len(report.new_entries) == 300 and report.entries[299] == (299, b"statement 299")
        # Read through the inherited TileLog code, over HTTP: entries and proofs.
        assert source.tree.read_entry(257) == b"statement 257"  # type: ignore[attr-defined]


def test_attack_a_peer_serving_a_forked_log_is_an_equivocation(tmp_path: Path, signer: note.Signer) -> None:
    honest = operated(tmp_path / "honest", signer, statements(0, 5))
    forked = operated(tmp_path / "forked", signer, [b"statement 0", b"statement 1", b"REWRITTEN", b"x", b"y"])
    with serve_log(forked.directory) as url:
        report = monitor([honest.directory, http_source(url, timeout=2)], signer.verifier(),
                         state=ClientState(tmp_path / "s.json"))
    assert report.exit_code() == EXIT_EQUIVOCATION
    (eq,) = report.equivocations
    assert eq.sources == (str(honest.directory), url)
    assert eq.notes == (honest.checkpoint_note(), forked.checkpoint_note())  # the peer's signed note is evidence
    assert report.accepted is None


def test_attack_a_truncated_or_oversize_tile_is_refused_naming_the_peer(tmp_path: Path, signer: note.Signer) -> None:
    op = operated(tmp_path / "log", signer, statements(0, 5))
    tile = tiles.tile_path(0, 0, 5)
    with serve_log(op.directory, lambda rel, data: data[:-7] if rel == tile else None) as url:
        report = monitor([http_source(url, timeout=2), op.directory], signer.verifier())
        assert report.exit_code() == EXIT_PROBLEM and not report.equivocations
        (problem,) = report.problems
        assert problem.source == url
        assert f"{url}/v1/log/{tile} is truncated: 153 bytes, a tile of 5 hashes has 160" in problem.message
        assert report.accepted is not None and report.accepted.size == 5  # the good copy still counts
    with serve_log(op.directory, lambda rel, data: data + b"\0" * 1_000_000 if rel == tile else None) as url:
        source = http_source(url, timeout=2)
        with pytest.raises(PeerError, match=f"peer {url} declared 1,000,160 bytes for v1/log/{tile}, expected at most 160"):
            source.tree.root()
        report = monitor([source], signer.verifier())
        assert report.exit_code() == EXIT_PROBLEM and f"peer {url}" in report.problems[0].message
    # An oversize entry bundle is cut at max_tile_bytes.
    bundle = tiles.tile_path("entries", 0, 5)
    with serve_log(op.directory, lambda rel, data: data * 100 if rel == bundle else None) as url:
        with pytest.raises(PeerError, match=f"peer {url} declared .* bytes for v1/log/{bundle}, expected at most 4,096"):
            list(http_source(url, timeout=2, max_tile_bytes=4096).tree.entries())


def test_attack_a_missing_tile_and_a_slow_tile(tmp_path: Path, signer: note.Signer) -> None:
    op = operated(tmp_path / "log", signer, statements(0, 5))
    tile = tiles.tile_path(0, 0, 5)
    (tmp_path / "gappy").mkdir()
    shutil.copy(op.directory / "checkpoint", tmp_path / "gappy" / "checkpoint")
    with serve_log(tmp_path / "gappy") as url:
        with pytest.raises(LogError, match=f"{url}/v1/log/{tile} is missing \\(404\\)"):
            http_source(url, timeout=2).tree.root()

    def stall(rel: str, data: bytes) -> bytes | None:
        if rel == tile:
            time.sleep(3)
        return None

    started = time.monotonic()
    with serve_log(op.directory, stall) as url:
        report = monitor([http_source(url, timeout=1)], signer.verifier())
    assert time.monotonic() - started < 2.5
    assert report.exit_code() == EXIT_PROBLEM
    assert f"peer {url}" in report.problems[0].message and "took longer than the 1 s deadline" in report.problems[0].message
    with pytest.raises(PeerUnavailable, match="cannot be reached"):
        http_source(url, timeout=1)  # the server is gone
