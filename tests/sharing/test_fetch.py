"""sharing/fetch.py against real HTTP servers on loopback that misbehave on purpose: tampered,
truncated, endless and dripping bodies, redirect loops and redirects off the peer, a dropped
connection resumed with Range, and a multi-peer download with one peer down and one lying.
Every case checks what is left on disk: the destination only when verified, nothing else."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from sharing.fetch import (
    Peer,
    PeerError,
    PeerUnavailable,
    Timeouts,
    blob_path,
    download,
    download_from,
    get_bytes,
    get_json,
    partial_path,
)

FAST = Timeouts(connect=1.0, read=1.0, total=2.0, min_rate=10 << 20)
BLOB = os.urandom(100_000)
SHA = hashlib.sha256(BLOB).hexdigest()

Handler = Callable[[BaseHTTPRequestHandler], None]


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # a dripping handler must not hold the test up at shutdown


@contextmanager
def serve(handle: Handler) -> Iterator[str]:
    """A real HTTP server on 127.0.0.1 whose every GET runs ``handle``; yields its base URL."""

    class H(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            try:
                handle(self)
            except (BrokenPipeError, ConnectionResetError):  # the client stopped reading: as it should
                pass

        def log_message(self, *args: object) -> None:
            pass

    server = _Server(("127.0.0.1", 0), H)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def send_blob(h: BaseHTTPRequestHandler, data: bytes) -> None:
    """Serve ``data`` as the peer API does: 200, or 206 for a single ``Range``."""
    wanted = h.headers.get("Range")
    if wanted:
        a, _, b = wanted.removeprefix("bytes=").partition("-")
        start, end = int(a), int(b) if b else len(data) - 1
        h.send_response(206)
        h.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
        body = data[start : end + 1]
    else:
        h.send_response(200)
        body = data
    h.send_header("Content-Length", str(len(body)))
    h.end_headers()
    h.wfile.write(body)


def free_port() -> int:
    """A port nothing listens on (bound, then closed): a peer that is down."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def left(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


# --- a malicious or broken peer ------------------------------------------------------------------


def test_attack_a_tampered_blob_is_refused_and_nothing_lands(tmp_path: Path) -> None:
    tampered = bytearray(BLOB)
    tampered[50_000] ^= 1
    with serve(lambda h: send_blob(h, bytes(tampered))) as url:
        with pytest.raises(PeerError, match=f"peer {url} sent blob {SHA[:12]}… whose sha256 is") as err:
            download(url + blob_path(SHA), tmp_path / "blob", SHA, len(BLOB), timeouts=FAST)
    assert err.value.peer == url and err.value.exit_code == 1
    assert left(tmp_path) == []  # no destination, and no partial: its bytes cannot be trusted


def test_attack_a_truncated_body_is_refused_leaving_only_a_partial_to_resume(tmp_path: Path) -> None:
    def half(h: BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.send_header("Content-Length", str(len(BLOB)))  # promises all of it, sends half, hangs up
        h.end_headers()
        h.wfile.write(BLOB[:40_000])
        h.wfile.flush()
        h.close_connection = True

    with serve(half) as url:
        with pytest.raises(PeerUnavailable, match=f"peer {url} dropped the connection"):
            download(url + blob_path(SHA), tmp_path / "blob", SHA, len(BLOB), timeouts=FAST, resume=False)
        assert left(tmp_path) == []
        with pytest.raises(PeerUnavailable, match=f"peer {url}"):
            download(url + blob_path(SHA), tmp_path / "blob", SHA, len(BLOB), timeouts=FAST)
    assert left(tmp_path) == [partial_path(tmp_path / "blob", SHA).name]
    assert partial_path(tmp_path / "blob", SHA).read_bytes() == BLOB[:40_000]


def test_attack_an_oversize_or_endless_body_is_cut_off_at_the_limit(tmp_path: Path) -> None:
    written = []

    def endless(h: BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.end_headers()  # no Content-Length: the body ends when the server closes, i.e. never
        n = 0
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            h.wfile.write(b"x" * 4096)
            n += 4096
            written.append(n)

    started = time.monotonic()
    with serve(endless) as url:
        with pytest.raises(PeerError, match=f"peer {url} sent more than 100,000 bytes for blob {SHA[:12]}"):
            download(url + blob_path(SHA), tmp_path / "blob", SHA, len(BLOB), timeouts=FAST)
        with pytest.raises(PeerError, match=f"peer {url} sent more than 1,000 bytes for /v1/index"):
            get_json(url + "/v1/index", 1000, timeouts=FAST)
    assert time.monotonic() - started < 3  # stopped reading at once, not at the deadline
    assert left(tmp_path) == []

    def declared(h: BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.send_header("Content-Length", str(2 * len(BLOB)))
        h.end_headers()
        h.wfile.write(BLOB + BLOB)

    with serve(declared) as url:
        with pytest.raises(PeerError, match=f"peer {url} declared 200,000 bytes for blob {SHA[:12]}…, expected at most"):
            download(url + blob_path(SHA), tmp_path / "blob", SHA, len(BLOB), timeouts=FAST)
    assert left(tmp_path) == []


@pytest.mark.parametrize("where", ["headers", "body"])
def test_attack_slowloris_a_byte_a_second_hits_the_total_deadline(tmp_path: Path, where: str) -> None:
    """Each byte arrives well within the read timeout (1 s), so only the total deadline (2 s) ends it."""
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n"

    def drip(h: BaseHTTPRequestHandler) -> None:
        if where == "body":
            h.wfile.write(head)
        for byte in (head if where == "headers" else BLOB)[:20]:
            h.wfile.write(bytes([byte]))
            h.wfile.flush()
            time.sleep(0.5)

    slow = Timeouts(connect=1.0, read=1.0, total=2.0, min_rate=1 << 30)
    started = time.monotonic()
    with serve(drip) as url:
        with pytest.raises(PeerUnavailable, match=f"peer {url} took longer than the 2 s deadline"):
            download(url + blob_path(SHA), tmp_path / "blob", SHA, len(BLOB), timeouts=slow, resume=False)
    assert 1.8 < time.monotonic() - started < 3.5
    assert left(tmp_path) == []


def test_attack_a_redirect_loop_and_a_redirect_off_the_peer_are_never_followed(tmp_path: Path) -> None:
    asked: list[str] = []

    def redirect(h: BaseHTTPRequestHandler) -> None:
        asked.append(h.path)
        h.send_response(302)
        h.send_header("Location", h.path if h.path.startswith("/v1/blobs") else "http://203.0.113.9/steal")
        h.send_header("Content-Length", "0")
        h.end_headers()

    with serve(redirect) as url:
        with pytest.raises(PeerError, match=f"redirect loop: {url}/v1/blobs/{SHA} redirects to itself"):
            download(url + blob_path(SHA), tmp_path / "blob", SHA, len(BLOB), timeouts=FAST)
        with pytest.raises(PeerError, match=f"redirected {url}/v1/index to another host, http://203.0.113.9/steal"):
            get_bytes(url + "/v1/index", 1000, timeouts=FAST)
    assert asked == [blob_path(SHA), "/v1/index"]  # one request each: nothing followed
    assert left(tmp_path) == []


def test_resume_after_a_dropped_connection_continues_with_range_and_is_byte_exact(tmp_path: Path) -> None:
    ranges: list[str | None] = []

    def flaky(h: BaseHTTPRequestHandler) -> None:
        ranges.append(h.headers.get("Range"))
        if len(ranges) == 1:  # the first time: half the blob, then the connection drops
            h.send_response(200)
            h.send_header("Content-Length", str(len(BLOB)))
            h.end_headers()
            h.wfile.write(BLOB[:60_000])
            h.wfile.flush()
            h.close_connection = True
            return
        send_blob(h, BLOB)

    seen: list[tuple[int, int]] = []
    dest = tmp_path / "blob"
    with serve(flaky) as url:
        with pytest.raises(PeerUnavailable):
            download(url + blob_path(SHA), dest, SHA, len(BLOB), timeouts=FAST)
        assert partial_path(dest, SHA).stat().st_size == 60_000 and not dest.exists()
        download(url + blob_path(SHA), dest, SHA, len(BLOB), timeouts=FAST, progress=lambda d, t: seen.append((d, t)))
    assert ranges == [None, "bytes=60000-"]
    assert dest.read_bytes() == BLOB and left(tmp_path) == ["blob"]
    assert seen[-1] == (len(BLOB), len(BLOB)) and seen[0][0] > 60_000  # progress counts the resumed bytes


def test_attack_a_wrong_content_range_on_resume_is_refused(tmp_path: Path) -> None:
    def lying_range(h: BaseHTTPRequestHandler) -> None:
        h.send_response(206)
        h.send_header("Content-Range", f"bytes 0-{len(BLOB) - 1}/{len(BLOB)}")  # not the range asked for
        h.send_header("Content-Length", str(len(BLOB)))
        h.end_headers()
        h.wfile.write(BLOB)

    dest = tmp_path / "blob"
    partial_path(dest, SHA).write_bytes(BLOB[:30_000])
    with serve(lying_range) as url:
        with pytest.raises(PeerError, match=f"peer {url} sent Content-Range 'bytes 0-99999/100000' for blob .*"
                                            f"asked for bytes 30000-99999/100000"):
            download(url + blob_path(SHA), dest, SHA, len(BLOB), timeouts=FAST)
    assert left(tmp_path) == []


# --- many peers ------------------------------------------------------------------------------------


def test_multi_peer_download_with_one_peer_down_and_one_lying_is_verified_and_names_the_liar(tmp_path: Path) -> None:
    lie = bytes(b ^ 0xFF for b in BLOB)  # every byte it sends is wrong, at the right length
    served: dict[str, int] = {"honest": 0, "liar": 0}

    def honest(h: BaseHTTPRequestHandler) -> None:
        served["honest"] += 1
        send_blob(h, BLOB)

    def liar(h: BaseHTTPRequestHandler) -> None:
        served["liar"] += 1
        send_blob(h, lie)

    down = f"http://127.0.0.1:{free_port()}"
    dest = tmp_path / "blob"
    with serve(honest) as good, serve(liar) as bad:
        peers = [Peer(u, timeouts=FAST) for u in (down, bad, good)]
        report = download_from(peers, blob_path, dest, SHA, len(BLOB), chunk=16_384)
    assert dest.read_bytes() == BLOB and left(tmp_path) == ["blob"]
    assert list(report.liars) == [bad] and report.liars[bad]  # the liar, with the ranges it lied about
    assert any(p == down and "cannot be reached" in m for p, m in report.failures)
    assert any(p == bad and f"peer {bad} sent blob {SHA[:12]}… bytes" in m for p, m in report.failures)
    assert served["liar"] > 0 and served["honest"] > 0  # the ranges were spread across both live peers


def test_multi_peer_download_when_every_peer_lies_leaves_nothing(tmp_path: Path) -> None:
    lie = bytes(b ^ 1 for b in BLOB)
    with serve(lambda h: send_blob(h, lie)) as a, serve(lambda h: send_blob(h, lie)) as b:
        with pytest.raises(PeerError, match=f"its whole copy does not hash to {SHA[:12]}") as err:
            download_from([a, b], blob_path, tmp_path / "blob", SHA, len(BLOB), chunk=30_000, timeouts=FAST)
    assert a in str(err.value) and b in str(err.value)
    assert left(tmp_path) == []


def test_a_multi_peer_download_interrupted_resumes_with_only_the_missing_ranges(tmp_path: Path) -> None:
    asked: list[str] = []

    def dying(h: BaseHTTPRequestHandler) -> None:
        asked.append(h.headers.get("Range", ""))
        start = int(h.headers["Range"].split("=")[1].split("-")[0])
        if start >= len(BLOB) // 2:  # the peer dies halfway through the blob
            h.send_response(503)
            h.send_header("Content-Length", "0")
            h.end_headers()
            return
        send_blob(h, BLOB)

    dest = tmp_path / "blob"
    with serve(dying) as peer:
        with pytest.raises(PeerUnavailable):
            download_from([Peer(peer, timeouts=FAST)], blob_path, dest, SHA, len(BLOB), chunk=16_384, resume=True)
    assert not dest.exists() and (tmp_path / ".blob.partial").is_file() and (tmp_path / ".blob.ranges").is_file()
    held = len(json.loads((tmp_path / ".blob.ranges").read_text()))
    assert held > 0
    again: list[str] = []

    def honest(h: BaseHTTPRequestHandler) -> None:
        again.append(h.headers.get("Range", ""))
        send_blob(h, BLOB)

    with serve(honest) as peer:
        download_from([Peer(peer, timeouts=FAST)], blob_path, dest, SHA, len(BLOB), chunk=16_384, resume=True)
    ranges = -(-len(BLOB) // 16_384)
    assert dest.read_bytes() == BLOB and len(again) == ranges - held  # only what the partial lacked
    assert left(tmp_path) == ["blob"]


def test_a_resumed_partial_that_was_tampered_with_is_repaired_not_trusted(tmp_path: Path) -> None:
    dest = tmp_path / "blob"
    partial = tmp_path / ".blob.partial"
    partial.write_bytes(bytes(len(BLOB)))  # zeros, claimed complete by a forged journal
    ranges = [(s, min(s + 16_384, len(BLOB)) - 1) for s in range(0, len(BLOB), 16_384)]
    (tmp_path / ".blob.ranges").write_text(json.dumps(ranges))
    with serve(lambda h: send_blob(h, BLOB)) as peer:
        download_from([Peer(peer, timeouts=FAST)], blob_path, dest, SHA, len(BLOB), chunk=16_384, resume=True)
    assert dest.read_bytes() == BLOB
