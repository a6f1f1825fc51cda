"""The read-only peer (sharing/peer.py) served for real: uvicorn on a free 127.0.0.1 port in a thread,
a real httpx client (and raw sockets where httpx would tidy the attack away), a small forge from
make_registry, blobs put into a real Store and a log written by the real LogOperator."""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from registry.store import Store
from sharing.peer import build_server
from tests.helpers import make_registry
from trust.log import note
from trust.log.operator import LogOperator

ORIGIN = "forge.example/log"
TIMEOUT = 2.0


@dataclass
class Peer:
    base: str
    root: Path
    store: Store
    log: Path
    blob: bytes
    digest: str


@dataclass
class Running:
    base: str
    port: int
    server: object
    thread: threading.Thread


def start(root: Path, store: Path, log_dir: Path | None, **kw) -> Running:
    started = threading.Event()
    where: dict[str, int] = {}

    def ready(host: str, port: int) -> None:
        where["port"] = port
        started.set()

    server = build_server(root, store, log_dir, port=0, on_started=ready, **kw)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    assert started.wait(10), "the peer did not start"
    return Running(f"http://127.0.0.1:{where['port']}", where["port"], server, thread)


def stop(running: Running) -> None:
    running.server.should_exit = True
    running.thread.join(10)


@pytest.fixture(scope="module")
def forge(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("peer")
    root = make_registry(tmp / "forge")
    (root / "registry" / "entries" / "models" / "sample" / "1.0.0.statements").mkdir()
    (root / "registry" / "entries" / "models" / "sample" / "1.0.0.statements" / "a.json").write_text('{"s": 1}\n')
    (root / "registry" / "store.py").write_text("print('code')\n")  # the package's code: never served
    (root / "registry" / ".tmp-half").write_text("partial\n")
    (root / "secret.txt").write_text("outside registry/\n")
    store = Store(tmp / "store")
    blob = os.urandom(3 * (1 << 20) + 12345)  # more than one streaming chunk
    digest, _ = store.put_bytes(blob)
    signer = note.parse_signer(note.generate_key(ORIGIN)[0])
    op = LogOperator(tmp / "log", ORIGIN, signer)
    op.append([f"statement {i}".encode() for i in range(300)])
    running = start(root, store.root, tmp / "log", peers=["http://127.0.0.1:8123"], rate=1000, burst=1000)
    yield Peer(running.base, root, store, tmp / "log", blob, digest)
    stop(running)


def get(peer: Peer, path: str, **kw) -> httpx.Response:
    return httpx.get(peer.base + path, timeout=TIMEOUT, **kw)


def raw(port: int, request: bytes, source: str = "127.0.0.1") -> bytes:
    """One request on a raw socket (so no client normalizes the path), the whole answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT, source_address=(source, 0)) as s:
        s.sendall(request)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
        return out


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


def test_index_lists_registry_files_with_their_digests_and_nothing_else(forge):
    r = get(forge, "/v1/index")
    assert r.status_code == 200
    body = r.json()
    assert body["api"] == 1
    on_disk = {p.relative_to(forge.root).as_posix(): p.read_bytes() for p in (forge.root / "registry").rglob("*")
               if p.is_file() and not p.name.endswith(".py") and not p.name.startswith(".")}
    listed = {f["path"]: f for f in body["files"]}
    assert set(listed) == set(on_disk) and len(on_disk) >= 5
    assert [f["path"] for f in body["files"]] == sorted(listed)
    for path, data in on_disk.items():
        assert listed[path]["sha256"] == hashlib.sha256(data).hexdigest()
        assert listed[path]["size"] == len(data)
    assert "registry/entries/models/sample/1.0.0.statements/a.json" in listed
    assert not any(p.endswith(".py") or "/." in p or not p.startswith("registry/") for p in listed)


def test_files_and_blobs_are_served_byte_exact_with_the_sha256_as_etag(forge):
    for f in get(forge, "/v1/index").json()["files"]:
        r = get(forge, "/v1/files/" + f["path"])
        assert r.status_code == 200 and r.content == (forge.root / f["path"]).read_bytes()
        assert r.headers["etag"] == f'"{f["sha256"]}"'
    r = get(forge, f"/v1/blobs/{forge.digest}")
    assert r.status_code == 200 and r.content == forge.blob
    assert r.headers["etag"] == f'"{forge.digest}"' and r.headers["accept-ranges"] == "bytes"
    assert r.headers["content-type"] == "application/octet-stream"
    assert get(forge, f"/v1/blobs/{forge.digest}", headers={"If-None-Match": f'"{forge.digest}"'}).status_code == 304
    head = httpx.head(f"{forge.base}/v1/blobs/{forge.digest}", timeout=TIMEOUT)
    assert head.status_code == 200 and head.content == b"" and int(head.headers["content-length"]) == len(forge.blob)
    missing = get(forge, "/v1/blobs/" + "0" * 64)
    assert missing.status_code == 404 and set(missing.json()) == {"error", "hint"}
    assert get(forge, "/v1/blobs/" + forge.digest.upper()).status_code == 404
    assert get(forge, "/v1/files/registry/store.py").status_code == 404  # code is never served
    assert get(forge, "/v1/files/registry/.tmp-half").status_code == 404


def test_single_ranges_give_206_and_unsatisfiable_ones_416(forge):
    url, size = f"/v1/blobs/{forge.digest}", len(forge.blob)
    cases = {"bytes=0-99": (0, 99), "bytes=-500": (size - 500, size - 1), f"bytes={size - 10}-": (size - 10, size - 1),
             "bytes=1048570-2097160": (1048570, 2097160), f"bytes=5-{size + 100}": (5, size - 1)}
    for header, (first, last) in cases.items():
        r = get(forge, url, headers={"Range": header})
        assert r.status_code == 206, header
        assert r.content == forge.blob[first:last + 1], header
        assert r.headers["content-range"] == f"bytes {first}-{last}/{size}"
    for header in (f"bytes={size}-", "bytes=10-5", "bytes=-0", "bytes=0-1,5-6", "items=0-1", "bytes=-"):
        r = get(forge, url, headers={"Range": header})
        assert r.status_code == 416, header
        assert r.headers["content-range"] == f"bytes */{size}"
    path = "registry/entries/datasets/sample/1.yaml"
    r = get(forge, "/v1/files/" + path, headers={"Range": "bytes=0-9"})
    assert r.status_code == 206 and r.content == (forge.root / path).read_bytes()[:10]


def test_traversal_and_symlinks_are_refused(forge, tmp_path):
    port = int(forge.base.rsplit(":", 1)[1])
    for target in (b"/v1/files/registry/../secret.txt", b"/v1/files/registry/%2e%2e/secret.txt",
                   b"/v1/files/registry/entries/%2e%2e/%2e%2e/secret.txt", b"/v1/files//etc/passwd",
                   b"/v1/files/%2fetc%2fpasswd", b"/v1/files/registry%2f..%2fsecret.txt",
                   b"/v1/files/registry/..%5csecret.txt", b"/v1/files/registry/%00", b"/v1/files/secret.txt",
                   b"/v1/log/tile/../checkpoint", b"/v1/blobs/../../etc/passwd"):
        answer = raw(port, b"GET " + target + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert status_of(answer) in (404, 400), target
        assert b"outside registry" not in answer and b"root:" not in answer, target
    # A symlink planted in registry/ (to a file and to a folder outside), and a blob that is a symlink.
    outside = tmp_path / "outside.txt"
    outside.write_text("not for peers\n")
    link, folder = forge.root / "registry" / "leak.yaml", forge.root / "registry" / "leakdir"
    link.symlink_to(outside)
    folder.symlink_to(tmp_path)
    fake = "ab" * 32
    planted = forge.store.object_path(fake)
    planted.parent.mkdir(parents=True, exist_ok=True)
    planted.symlink_to(outside)
    try:
        assert get(forge, "/v1/files/registry/leak.yaml").status_code == 404
        assert get(forge, "/v1/files/registry/leakdir/outside.txt").status_code == 404
        assert get(forge, f"/v1/blobs/{fake}").status_code == 404
        listed = [f["path"] for f in get(forge, "/v1/index").json()["files"]]
        assert not any("leak" in p for p in listed)
    finally:
        link.unlink()
        folder.unlink()
        planted.unlink()


def test_requests_with_a_body_and_writes_are_refused(forge):
    r = httpx.request("GET", forge.base + "/v1/info", content=b"x" * 100, timeout=TIMEOUT)
    assert r.status_code == 413 and "no request body" in r.json()["error"]
    assert httpx.post(forge.base + "/v1/index", content=b"{}", timeout=TIMEOUT).status_code == 405
    assert httpx.put(forge.base + "/v1/files/registry/x.yaml", content=b"a", timeout=TIMEOUT).status_code == 405
    port = int(forge.base.rsplit(":", 1)[1])
    chunked = raw(port, b"GET /v1/info HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
    assert status_of(chunked) == 413


def test_info_peers_and_the_log_are_served(forge):
    info = get(forge, "/v1/info").json()
    assert info["api"] == 1 and info["forge"] == "commonforge" and info["log"] == {"origin": ORIGIN}
    assert get(forge, "/v1/peers").json() == {"api": 1, "peers": ["http://127.0.0.1:8123"]}
    r = get(forge, "/v1/log/checkpoint")
    assert r.status_code == 200 and r.content == (forge.log / "checkpoint").read_bytes()
    assert r.headers["content-type"].startswith("text/plain")
    tiles = [p for p in (forge.log / "tile").rglob("*") if p.is_file()]
    assert any("entries" in p.parts for p in tiles) and len(tiles) >= 3
    for p in tiles:
        rel = p.relative_to(forge.log / "tile").as_posix()
        r = get(forge, "/v1/log/tile/" + rel)
        assert r.status_code == 200 and r.content == p.read_bytes(), rel
        assert r.headers["content-type"] == "application/octet-stream"


def test_a_peer_without_a_log_says_so(tmp_path):
    root = make_registry(tmp_path / "forge")
    running = start(root, tmp_path / "store", None)
    try:
        assert httpx.get(running.base + "/v1/info", timeout=TIMEOUT).json()["log"] is None
        assert httpx.get(running.base + "/v1/log/checkpoint", timeout=TIMEOUT).status_code == 404
        assert httpx.get(running.base + "/v1/peers", timeout=TIMEOUT).json() == {"api": 1, "peers": []}
    finally:
        stop(running)


def test_a_client_over_its_rate_gets_429_and_the_others_are_still_served(tmp_path):
    root = make_registry(tmp_path / "forge")
    running = start(root, tmp_path / "store", None, rate=1.0, burst=5)
    try:
        request = b"GET /v1/peers HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        answers = [raw(running.port, request, source="127.0.0.3") for _ in range(8)]
        codes = [status_of(a) for a in answers]
        assert codes[:5] == [200] * 5 and 429 in codes[5:]
        limited = next(a for a in answers if status_of(a) == 429)
        assert b"retry-after: 1" in limited.lower()
        assert httpx.get(running.base + "/v1/peers", timeout=TIMEOUT).status_code == 200  # another client
    finally:
        stop(running)


def test_a_slowloris_client_does_not_stop_others_and_is_cut_off(tmp_path):
    root = make_registry(tmp_path / "forge")
    running = start(root, tmp_path / "store", None, limit_concurrency=16, max_connections_per_client=4,
                    header_timeout=1.0, rate=1000, burst=1000)
    slow: list[socket.socket] = []
    try:
        for _ in range(24):  # more than limit_concurrency: without the per-client cap, everyone would get 503
            s = socket.socket()
            s.settimeout(TIMEOUT)
            s.bind(("127.0.0.2", 0))
            s.connect(("127.0.0.1", running.port))
            s.sendall(b"GET /v1/index HTTP/1.1\r\n")
            slow.append(s)
        connected = time.monotonic()
        for _ in range(2):  # dribble a header byte a second
            for s in slow:
                try:
                    s.sendall(b"X"[:1])
                except OSError:
                    pass
            began = time.monotonic()
            r = httpx.get(running.base + "/v1/info", timeout=TIMEOUT)
            assert r.status_code == 200 and time.monotonic() - began < TIMEOUT
            time.sleep(0.5)
        # The header timeout (1 s) has closed every dribbling connection by now (a timeout here is one left open).
        time.sleep(max(0.0, connected + 1.3 - time.monotonic()))
        closed = 0
        for s in slow:
            s.settimeout(0.2)
            try:
                closed += s.recv(1024) == b""
            except ConnectionResetError:
                closed += 1
            except TimeoutError:
                pass
        assert closed == len(slow)
    finally:
        for s in slow:
            s.close()
        stop(running)


def test_a_host_beyond_loopback_is_warned_about(tmp_path, caplog):
    root = make_registry(tmp_path / "forge")
    with caplog.at_level(logging.WARNING, logger="sharing.peer"):
        build_server(root, tmp_path / "store", None, host="127.0.0.1", port=0)
        assert not caplog.records
        build_server(root, tmp_path / "store", None, host="0.0.0.0", port=0)
    assert any("0.0.0.0" in r.getMessage() and "network" in r.getMessage() for r in caplog.records)
