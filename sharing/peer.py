"""The read-only HTTP peer (issue 14 item 1): any forge serves what it has; the client trusts none of it.

    GET  /v1/info                  {"api": 1, "forge": "commonforge", "version", "log": {"origin"} | null}
    GET  /v1/index                 {"api": 1, "files": [{"path", "sha256", "size"}, ...]}: registry/ files
    GET  /v1/files/registry/...    one file of the index (ETag "<sha256>", Range)
    GET  /v1/blobs/<sha256>        one store object (ETag "<sha256>", Accept-Ranges, Range -> 206 / 416)
    GET  /v1/log/checkpoint        the transparency log's checkpoint (text/plain), 404 when no log
    GET  /v1/log/tile/...          its C2SP tlog-tiles files (application/octet-stream)
    GET  /v1/peers                 {"api": 1, "peers": [url, ...]}
    (HEAD on every path; the contract is /tmp/cf/PEER_API.md, mirrored in docs by whoever wires the CLI)

    app = create_app(root, store, log_dir)          # tests, embedding
    serve(root, store, log_dir, port=8470)          # blocking; what `commonforge peer serve` runs

Why it can be exposed at all: nothing it answers is trusted by the client (digests, signatures, the
policy and the log decide), so the server's job is only not to leak and not to fall over:

- **Read-only.** GET and HEAD only (405 otherwise); a request announcing a body (Content-Length > 0
  or any Transfer-Encoding) gets 413 before any byte of it is read. There is no write endpoint.
- **Nothing outside what it means to serve.** Paths are walked one segment at a time with
  ``openat(O_NOFOLLOW)`` from the forge root, the store or the log directory, so ``..``, absolute
  paths, backslashes, NUL, dot-names and *any* symlink (planted in registry/, the store or the log,
  even swapped in mid-request) are 404. registry/'s own Python code (``*.py``, ``__pycache__``) and
  dot-files (temporaries) are neither listed nor served: a mirror must never copy code from a peer.
- **Never a whole blob in memory.** Files stream from the open descriptor in 1 MiB ``pread``s; one
  ``Range: bytes=a-b | a- | -n`` gives 206 with Content-Range, anything else in Range (several
  ranges, garbage, past the end) 416. ``If-None-Match`` with the ETag gives 304.
- **One client cannot starve the others.** A token bucket per client IP (429 + Retry-After); at
  most ``max_connections_per_client`` connections per IP (more are closed at accept); request
  headers must be complete within ``header_timeout`` seconds of a connection (or of the end of the
  previous response) — uvicorn itself has no such timer, so a slowloris client would otherwise hold
  its connections, and with them ``limit_concurrency``, forever; headers are capped at 16 KiB
  (``h11_max_incomplete_event_size``); idle keep-alive connections close after 5 s.
- **Loopback unless asked.** It binds 127.0.0.1; another host is allowed (there is nothing to
  write) but logged as a warning, since everything in the registry and store becomes public.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import logging
import math
import os
import re
import stat
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from commonforge import __version__
from commonforge.errors import InputError
from commonforge.settings import is_loopback
from registry.schema import RECORD_SUFFIXES

log = logging.getLogger(__name__)

API = 1
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8470
DEFAULT_RATE = 50.0  # requests per second per client IP, sustained
DEFAULT_BURST = 200  # requests a client may make at once (a pull asks for many ranges in a row)
DEFAULT_CONCURRENCY = 256  # connections + in-flight requests before uvicorn answers 503
DEFAULT_PER_CLIENT = 32  # open connections per client IP
DEFAULT_HEADER_TIMEOUT = 10.0  # seconds for a request's headers to arrive
KEEP_ALIVE_S = 5
MAX_HEADER_BYTES = 16 << 10
CHUNK = 1 << 20  # bytes per read while streaming

_DIGEST = re.compile(r"^[0-9a-f]{64}$")
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")
_CODE_SUFFIXES = (".py", ".pyc", ".pyo")


class PeerError(Exception):
    """An HTTP error answered as ``{"error", "hint"}``."""

    def __init__(self, status: int, error: str, hint: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(error)
        self.status, self.error, self.hint, self.headers = status, error, hint, headers or {}

    def response(self) -> JSONResponse:
        return JSONResponse({"error": self.error, "hint": self.hint}, status_code=self.status, headers=self.headers)


def _not_found(what: str) -> PeerError:
    return PeerError(404, f"{what} is not served here",
                     "ask /v1/index for the files this peer has (blobs by their 64-hex sha256)")


# --- opening files without ever following a symlink -------------------------------------------


def servable_segment(name: str) -> bool:
    """A path segment this peer may list or serve: no traversal, no dot-name, no Python code."""
    return (bool(name) and name not in (".", "..") and not name.startswith(".") and "\\" not in name
            and "\x00" not in name and name != "__pycache__" and not name.endswith(_CODE_SUFFIXES))


def open_inside(base: Path, segments: Sequence[str]) -> int:
    """A read-only descriptor of the regular file ``base/seg/.../seg``, opened one segment at a time
    with O_NOFOLLOW relative to the previous directory (so no symlink anywhere below ``base`` is
    followed, even one swapped in between two checks); OSError when it is not such a file."""
    if not segments:
        raise FileNotFoundError(errno.ENOENT, "empty path")
    fd = os.open(base, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for seg in segments[:-1]:
            nxt = os.open(seg, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
            os.close(fd)
            fd = nxt
        leaf = os.open(segments[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, dir_fd=fd)
    finally:
        os.close(fd)
    if not stat.S_ISREG(os.fstat(leaf).st_mode):  # a FIFO or device would block or never end
        os.close(leaf)
        raise IsADirectoryError(errno.EISDIR, "not a regular file")
    return leaf


def _split(path: str) -> list[str]:
    return path.split("/")


def _hash_fd(fd: int) -> str:
    h, offset = hashlib.sha256(), 0
    while chunk := os.pread(fd, CHUNK, offset):
        h.update(chunk)
        offset += len(chunk)
    return h.hexdigest()


class HashCache:
    """sha256 of files by (device, inode, size, mtime, ctime): the index and ETags never re-hash an unchanged file."""

    def __init__(self) -> None:
        self._known: dict[tuple[int, int], tuple[tuple[int, int, int], str]] = {}
        self._lock = threading.Lock()

    def digest(self, fd: int) -> str:
        st = os.fstat(fd)
        ident, version = (st.st_dev, st.st_ino), (st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        with self._lock:
            hit = self._known.get(ident)
        if hit is not None and hit[0] == version:
            return hit[1]
        digest = _hash_fd(fd)
        with self._lock:
            if len(self._known) > 100_000:
                self._known.clear()
            self._known[ident] = (version, digest)
        return digest


# --- the rate limit -------------------------------------------------------------------------------


class TokenBucket:
    """Per-client token buckets: ``rate`` requests per second sustained, ``burst`` at once."""

    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        if rate <= 0 or burst < 1:
            raise InputError(f"a rate limit of {rate}/s with a burst of {burst} admits nothing",
                             hint="give a positive rate (requests per second) and a burst of at least 1")
        self.rate, self.burst, self.clock = float(rate), float(burst), clock
        self._buckets: dict[str, tuple[float, float]] = {}  # client -> (tokens, when)

    def take(self, client: str) -> float:
        """0.0 when the request may go ahead, else the seconds until it could."""
        now = self.clock()
        tokens, when = self._buckets.get(client, (self.burst, now))
        tokens = min(self.burst, tokens + (now - when) * self.rate)
        if tokens >= 1.0:
            self._buckets[client] = (tokens - 1.0, now)
            wait = 0.0
        else:
            self._buckets[client] = (tokens, now)
            wait = (1.0 - tokens) / self.rate
        if len(self._buckets) > 10_000:  # forget clients whose bucket has refilled: bounded memory
            full = self.burst / self.rate
            self._buckets = {c: v for c, v in self._buckets.items() if now - v[1] < full}
        return wait


# --- responses ----------------------------------------------------------------------------------


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The one byte range ``header`` asks for, as (first, last) inclusive; None for no Range.

    Raises PeerError 416 for anything else: several ranges, a malformed one, or one past the end
    (a client that asked for part of a blob must never be sent all of it)."""
    if header is None:
        return None
    unsatisfiable = PeerError(416, f"the range {header[:80]!r} cannot be served from {size} bytes",
                              "ask for one range: bytes=FIRST-LAST, bytes=FIRST- or bytes=-SUFFIX, inside the size",
                              {"Content-Range": f"bytes */{size}"})
    m = _RANGE.match(header.strip())
    if not m or (not m.group(1) and not m.group(2)):
        raise unsatisfiable
    first_s, last_s = m.groups()
    if not first_s:  # suffix: the last n bytes
        n = int(last_s)
        if n == 0 or size == 0:
            raise unsatisfiable
        return max(0, size - n), size - 1
    first = int(first_s)
    last = size - 1 if not last_s else min(int(last_s), size - 1)
    if first >= size or (last_s and int(last_s) < first):
        raise unsatisfiable
    return first, last


async def _stream(handle: Any, first: int, length: int) -> AsyncIterator[bytes]:
    """``length`` bytes from ``first``, a chunk at a time; closes the file when done or cancelled."""
    try:
        offset, end = first, first + length
        while offset < end:
            chunk = await run_in_threadpool(os.pread, handle.fileno(), min(CHUNK, end - offset), offset)
            if not chunk:  # the file shrank under us: end short, the client's digest check catches it
                break
            offset += len(chunk)
            yield chunk
    finally:
        handle.close()


def file_response(request: Request, fd: int, etag: str, media_type: str, cache: str) -> Response:
    """A streamed (or HEAD, 304, 206) response for an open descriptor, which it takes ownership of."""
    handle = os.fdopen(fd, "rb", buffering=0)
    try:
        size = os.fstat(fd).st_size
        headers = {"ETag": f'"{etag}"', "Accept-Ranges": "bytes", "Cache-Control": cache}
        if_none = request.headers.get("if-none-match")
        if if_none is not None and (if_none.strip() == "*" or f'"{etag}"' in [t.strip() for t in if_none.split(",")]):
            handle.close()
            return Response(status_code=304, headers=headers)
        span = parse_range(request.headers.get("range"), size)
    except BaseException:
        handle.close()
        raise
    status, first, length = 200, 0, size
    if span is not None:
        status, first, length = 206, span[0], span[1] - span[0] + 1
        headers["Content-Range"] = f"bytes {span[0]}-{span[1]}/{size}"
    headers["Content-Length"] = str(length)
    if request.method == "HEAD":
        handle.close()
        return Response(status_code=status, headers=headers, media_type=media_type)
    return StreamingResponse(_stream(handle, first, length), status_code=status, headers=headers,
                             media_type=media_type)


# --- the app --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sources:
    """What this peer serves, each resolved once at start (the configured paths may be symlinks; nothing under them)."""

    root: Path
    store: Path
    log_dir: Path | None


@dataclass(frozen=True)
class Private:
    """What a peer never serves: the entries, records and statements of private releases (fine-tunes
    on their owner's data), and the store objects only they use."""

    prefixes: tuple[str, ...]  # "registry/entries/models/<name>/<version>." for each private release
    blobs: frozenset[str]

    def hides(self, rel: str) -> bool:
        return rel.startswith(self.prefixes)


def private_parts(root: Path) -> Private:
    """Read every model entry under ``root``; one that cannot be read is hidden too (fail closed)."""
    import yaml

    models = root / "registry" / "entries" / "models"
    prefixes, private, public = [], set(), set()
    for path in sorted(models.glob("*/*.yaml")) if models.is_dir() else ():
        if path.name.removesuffix(".yaml").rsplit(".", 1)[-1] in RECORD_SUFFIXES:
            continue  # a record (<version>.provenance.yaml, ...), not an entry
        try:
            entry = yaml.safe_load(path.read_text(encoding="utf-8"))
            manifest = entry["manifest"]
            digests = {a["sha256"] for a in manifest["artifacts"]}
            hidden = manifest.get("private") is True
        except Exception:  # noqa: BLE001 - an entry the peer cannot read is never served
            digests, hidden = set(), True
        if hidden:
            prefixes.append(f"{path.relative_to(root).as_posix()[: -len('yaml')]}")
            private |= digests
        else:
            public |= digests
    return Private(tuple(prefixes), frozenset(private - public))


def _index(src: Sources, hashes: HashCache) -> list[dict[str, Any]]:
    registry = src.root / "registry"
    hidden = private_parts(src.root)
    try:
        if not stat.S_ISDIR(os.lstat(registry).st_mode):
            return []
    except OSError:
        return []
    files = []
    for folder, dirs, names in os.walk(registry, followlinks=False):
        dirs[:] = sorted(d for d in dirs if servable_segment(d))
        rel_dir = Path(folder).relative_to(src.root).as_posix()
        for name in sorted(names):
            if not servable_segment(name):
                continue
            rel = f"{rel_dir}/{name}"
            if hidden.hides(rel):
                continue
            try:
                fd = open_inside(src.root, _split(rel))
            except OSError:
                continue  # a symlink, a FIFO, or gone since the walk
            try:
                files.append({"path": rel, "sha256": hashes.digest(fd), "size": os.fstat(fd).st_size})
            finally:
                os.close(fd)
    return sorted(files, key=lambda f: f["path"])


def _log_origin(src: Sources) -> str | None:
    if src.log_dir is None:
        return None
    try:
        fd = open_inside(src.log_dir, ["checkpoint"])
    except OSError:
        return None
    try:
        first = os.pread(fd, 4096, 0).split(b"\n", 1)[0]
    finally:
        os.close(fd)
    try:
        origin = first.decode("utf-8").strip()
    except UnicodeDecodeError:
        return None
    return origin or None


class _Gate:
    """Pure ASGI middleware in front of every route: method, request body and rate limit, before any
    routing or reading (so a refused request costs no more than its headers)."""

    def __init__(self, app: Any, bucket: TokenBucket) -> None:
        self.app, self.bucket = app, bucket

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        refusal = self.check(scope)
        if refusal is not None:
            await refusal.response()(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def check(self, scope: dict) -> PeerError | None:
        client = (scope.get("client") or ("unknown", 0))[0]
        wait = self.bucket.take(client)
        if wait > 0:
            return PeerError(429, f"too many requests from {client}",
                             f"retry after {math.ceil(wait)} s; a pull spreads its requests over several peers",
                             {"Retry-After": str(max(1, math.ceil(wait)))})
        if scope["method"] not in ("GET", "HEAD"):
            return PeerError(405, f"{scope['method']} is not served: this peer is read-only",
                             "use GET or HEAD", {"Allow": "GET, HEAD"})
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length", b"0").strip()
        if b"transfer-encoding" in headers or length not in (b"", b"0"):
            return PeerError(413, "this peer accepts no request body",
                             "send GET or HEAD without a body", {"Connection": "close"})
        return None


def create_app(root: Path, store: Path, log_dir: Path | None = None, *, peers: Iterable[str] = (),
               rate: float = DEFAULT_RATE, burst: int = DEFAULT_BURST,
               clock: Callable[[], float] = time.monotonic) -> FastAPI:
    """The peer's ASGI app over the forge at ``root`` (its registry/), the ``store`` and the log copy."""
    src = Sources(Path(root).resolve(), Path(store).resolve(), Path(log_dir).resolve() if log_dir else None)
    known = list(dict.fromkeys(str(p).rstrip("/") for p in peers))
    for url in known:
        if not url.startswith(("http://", "https://")):
            raise InputError(f"the peer {url!r} is not an http(s) URL", hint="peers look like http://127.0.0.1:8470")
    hashes = HashCache()
    app = FastAPI(title="commonforge peer", docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(_Gate, bucket=TokenBucket(rate, burst, clock))
    app.state.sources = src

    @app.exception_handler(PeerError)
    async def _peer_error(request: Request, err: PeerError):
        return err.response()

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, err: StarletteHTTPException):
        if err.status_code == 404:
            return _not_found(f"the path {request.url.path[:200]!r}").response()
        if err.status_code == 405:
            return PeerError(405, "this peer is read-only", "use GET or HEAD", {"Allow": "GET, HEAD"}).response()
        return PeerError(err.status_code, str(err.detail), "see the peer API (sharing/peer.py)").response()

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, err: Exception):
        log.exception("unexpected error in %s", request.url.path)
        return PeerError(500, "internal error in the peer", "the peer's operator can read its log").response()

    def served_file(request: Request, base: Path, segments: list[str], what: str, media_type: str,
                    cache: str, etag: str | None = None) -> Response:
        if not all(servable_segment(s) for s in segments):
            raise _not_found(what)
        try:
            fd = open_inside(base, segments)
        except OSError:
            raise _not_found(what) from None
        try:
            tag = etag or hashes.digest(fd)
        except BaseException:
            os.close(fd)
            raise
        return file_response(request, fd, tag, media_type, cache)

    @app.api_route("/v1/info", methods=["GET", "HEAD"])
    def info():
        origin = _log_origin(src)
        return {"api": API, "forge": "commonforge", "version": __version__,
                "log": {"origin": origin} if origin else None}

    @app.api_route("/v1/index", methods=["GET", "HEAD"])
    def index():
        return {"api": API, "files": _index(src, hashes)}

    @app.api_route("/v1/files/{path:path}", methods=["GET", "HEAD"])
    def files(path: str, request: Request):
        segments = _split(path)
        if segments[0] != "registry" or len(segments) < 2 or private_parts(src.root).hides("/".join(segments)):
            raise _not_found(f"the file {path[:200]!r}")
        return served_file(request, src.root, segments, f"the file {path[:200]!r}", "application/octet-stream",
                           "no-cache")

    @app.api_route("/v1/blobs/{digest}", methods=["GET", "HEAD"])
    def blobs(digest: str, request: Request):
        if not _DIGEST.match(digest):
            raise PeerError(404, f"{digest[:80]!r} is not a sha256 digest",
                            "blobs are named by 64 lowercase hex characters")
        if digest in private_parts(src.root).blobs:
            raise _not_found(f"the blob {digest}")
        return served_file(request, src.store, ["sha256", digest[:2], digest[2:4], digest], f"the blob {digest}",
                           "application/octet-stream", "public, max-age=31536000, immutable", etag=digest)

    @app.api_route("/v1/log/checkpoint", methods=["GET", "HEAD"])
    def checkpoint(request: Request):
        if src.log_dir is None:
            raise _not_found("a transparency log")
        return served_file(request, src.log_dir, ["checkpoint"], "the log's checkpoint", "text/plain; charset=utf-8",
                           "no-cache")

    @app.api_route("/v1/log/tile/{path:path}", methods=["GET", "HEAD"])
    def tile(path: str, request: Request):
        if src.log_dir is None:
            raise _not_found("a transparency log")
        return served_file(request, src.log_dir, ["tile", *_split(path)], f"the log tile {path[:200]!r}",
                           "application/octet-stream", "no-cache")

    @app.api_route("/v1/peers", methods=["GET", "HEAD"])
    def peers_list():
        return {"api": API, "peers": known}

    return app


# --- the connection guard and the server ------------------------------------------------------------


def guarded_protocol(header_timeout: float, per_client: int) -> type:
    """uvicorn's h11 protocol with what it lacks against slowloris: request headers must be complete
    within ``header_timeout`` seconds of the connection (or of the previous response), and one
    client IP holds at most ``per_client`` connections (more are closed as they are accepted)."""
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    open_per_client: dict[str, int] = {}

    class GuardedH11Protocol(H11Protocol):
        _header_timer: asyncio.TimerHandle | None = None
        _counted: str | None = None

        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            client = self.client[0] if self.client else "unknown"
            if open_per_client.get(client, 0) >= per_client:
                log.warning("peer: refused a connection from %s (%d open)", client, per_client)
                transport.close()
                return
            open_per_client[client] = open_per_client.get(client, 0) + 1
            self._counted = client
            self._arm()

        def _arm(self) -> None:
            self._disarm()
            self._header_timer = self.loop.call_later(header_timeout, self._headers_too_slow)

        def _disarm(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _headers_too_slow(self) -> None:
            self._header_timer = None
            if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
                self.transport.close()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self.conn.their_state is not h11.IDLE:
                self._disarm()  # the headers are in

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._arm()  # the next request's headers get the same time

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            if self._counted is not None:
                left = open_per_client.get(self._counted, 1) - 1
                if left > 0:
                    open_per_client[self._counted] = left
                else:
                    open_per_client.pop(self._counted, None)
                self._counted = None
            super().connection_lost(exc)

    return GuardedH11Protocol


def build_server(root: Path, store: Path, log_dir: Path | None, *, host: str = DEFAULT_HOST,
                 port: int = DEFAULT_PORT, peers: Iterable[str] = (), rate: float = DEFAULT_RATE,
                 burst: int = DEFAULT_BURST, limit_concurrency: int = DEFAULT_CONCURRENCY,
                 max_connections_per_client: int = DEFAULT_PER_CLIENT,
                 header_timeout: float = DEFAULT_HEADER_TIMEOUT,
                 on_started: Callable[[str, int], None] | None = None, log_level: str = "warning"):
    """The uvicorn server, not yet running (``.run()`` blocks; set ``.should_exit`` to stop it from another thread).

    ``port=0`` picks a free port, reported to ``on_started(host, port)``."""
    import uvicorn

    if not is_loopback(host):
        log.warning("peer: binding %s serves this forge's registry, store and log to the network "
                    "(read-only); bind 127.0.0.1 to keep it on this machine", host)
    app = create_app(root, store, log_dir, peers=peers, rate=rate, burst=burst)
    config = uvicorn.Config(
        app, host=host, port=port, log_level=log_level, access_log=False, lifespan="off",
        http=guarded_protocol(header_timeout, max_connections_per_client), ws="none",
        limit_concurrency=limit_concurrency, timeout_keep_alive=KEEP_ALIVE_S,
        h11_max_incomplete_event_size=MAX_HEADER_BYTES, timeout_graceful_shutdown=5, server_header=False,
    )

    class _Server(uvicorn.Server):
        async def startup(self, sockets=None) -> None:
            await super().startup(sockets)
            if self.started and on_started is not None:
                bound_host, bound_port = self.servers[0].sockets[0].getsockname()[:2]
                on_started(bound_host, bound_port)

    return _Server(config)


def serve(root: Path, store: Path, log_dir: Path | None, *, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT,
          peers: Iterable[str] = (), rate: float = DEFAULT_RATE, burst: int = DEFAULT_BURST,
          limit_concurrency: int = DEFAULT_CONCURRENCY, max_connections_per_client: int = DEFAULT_PER_CLIENT,
          header_timeout: float = DEFAULT_HEADER_TIMEOUT, on_started: Callable[[str, int], None] | None = None,
          log_level: str = "warning") -> None:
    """Run the peer until interrupted (blocking): what `commonforge peer serve` runs."""
    build_server(root, store, log_dir, host=host, port=port, peers=peers, rate=rate, burst=burst,
                 limit_concurrency=limit_concurrency, max_connections_per_client=max_connections_per_client,
                 header_timeout=header_timeout, on_started=on_started, log_level=log_level).run()
