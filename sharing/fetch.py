"""A hardened HTTP client for untrusted peers: every byte bounded, every wait bounded, nothing unverified lands.

A peer (sharing/peer.py, docs: the peer API v1) may be slow, broken or malicious. This module is the
only place the forge reads from one, so the defences live here once:

- **sizes**: every read has a limit (``max_bytes``, or a blob's ``expected_size``); a declared
  Content-Length above it is refused before the body is read, and a body that runs past it stops at
  the first byte over (never buffered, never written). Content-Encoding other than identity is refused
  (no decompression bombs); bodies are read raw.
- **time**: connect and per-read timeouts, and a **total deadline per request** enforced inside every
  socket read and write (:class:`_DeadlineBackend`), so a peer that sends a byte a second
  (slowloris), in the headers or the body, is cut off when the deadline passes, not never.
- **redirects**: never followed. A 3xx is an error naming where it pointed (a loop when it points
  back at the URL asked for, another host when it leaves the peer).
- **digests**: a blob is hashed (sha256) as it streams into a temp file, which becomes the
  destination (atomic rename, fsync) only when size and digest match.
- **no proxies from the environment** (trust_env off): the client talks to the peers named, only.

Errors: :class:`PeerError` (a VerificationError, exit 1) when the peer sent something wrong (a
tampered or oversize body, a redirect, a wrong Content-Range); :class:`PeerUnavailable` (a
FetchError, exit 3) when it could not be reached, timed out, dropped the connection or answered
an HTTP error. Both carry ``.peer`` (the peer's base URL) and name it in the message.

Resume: with ``resume=True`` a download interrupted half-way leaves ``.<dest name>.<sha256[:16]>.partial``
beside the destination (same directory, so the final rename is atomic); the next call sends
``Range: bytes=<have>-`` and continues, hashing the partial's bytes first. A digest mismatch deletes
the partial (which bytes were bad cannot be told), as does ``resume=False`` on any error.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpcore
import httpx

from commonforge.errors import FetchError, VerificationError
from registry import fsutil

Progress = Callable[[int, int], None]  # (bytes done, bytes in all)


# --- errors -----------------------------------------------------------------------------------------


class PeerError(VerificationError):
    """A peer sent something wrong: a tampered, truncated-then-padded or oversize body, a redirect,
    a wrong Content-Range. What it sent is never used."""

    def __init__(self, peer: str, message: str, *, hint: str | None = None) -> None:
        super().__init__(f"peer {peer} {message}", hint=hint or "pull from another peer; this one is broken or lying")
        self.peer = peer


class PeerUnavailable(FetchError):
    """A peer could not be used: unreachable, too slow, dropped the connection, or an HTTP error."""

    def __init__(self, peer: str, message: str, *, status: int | None = None, hint: str | None = None) -> None:
        super().__init__(f"peer {peer} {message}", hint=hint or "try again later or pull from another peer")
        self.peer = peer
        self.status = status


PEER_ERRORS = (PeerError, PeerUnavailable)


@dataclass(frozen=True)
class Timeouts:
    """Seconds. ``total`` bounds one request from connect to last byte; a download of ``n`` bytes
    gets ``total + n / min_rate`` (a big blob on a slow link is not a slowloris; a byte a second is)."""

    connect: float = 5.0
    read: float = 10.0
    total: float = 30.0
    min_rate: float = 256 * 1024  # bytes per second a download must average

    def for_size(self, size: int) -> float:
        return self.total + size / self.min_rate


# --- the per-request deadline, inside every socket operation ------------------------------------------

_deadline = threading.local()  # .at: time.monotonic() by which the current request in this thread must end


class _DeadlineStream(httpcore.NetworkStream):
    """A socket whose every read and write waits at most until the thread's request deadline."""

    def __init__(self, inner: httpcore.NetworkStream) -> None:
        self._inner = inner

    @staticmethod
    def _clamp(timeout: float | None, error: type[Exception]) -> float | None:
        at = getattr(_deadline, "at", None)
        if at is None:
            return timeout
        left = at - time.monotonic()
        if left <= 0:
            raise error("the request's total deadline passed")
        return left if timeout is None else min(timeout, left)

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, self._clamp(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, self._clamp(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(self, *args: Any, **kwargs: Any) -> httpcore.NetworkStream:
        return _DeadlineStream(self._inner.start_tls(*args, **kwargs))

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class _DeadlineBackend(httpcore.NetworkBackend):
    def __init__(self) -> None:
        self._inner = httpcore.SyncBackend()

    def connect_tcp(self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
                    socket_options: Any = None) -> httpcore.NetworkStream:
        timeout = _DeadlineStream._clamp(timeout, httpcore.ConnectTimeout)
        return _DeadlineStream(self._inner.connect_tcp(host, port, timeout, local_address, socket_options))

    def connect_unix_socket(self, path: str, timeout: float | None = None, socket_options: Any = None) -> Any:
        raise httpcore.ConnectError("unix sockets are not peers")

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


class _Transport(httpx.HTTPTransport):
    def __init__(self) -> None:
        super().__init__(trust_env=False, retries=0)
        self._pool = httpcore.ConnectionPool(network_backend=_DeadlineBackend(), max_connections=16,
                                             max_keepalive_connections=8, retries=0)


def short(sha256: str) -> str:
    return sha256[:12] + "…"


def blob_path(sha256: str) -> str:
    """The peer API's path of a store object."""
    return f"/v1/blobs/{sha256}"


_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")


# --- one peer ---------------------------------------------------------------------------------------


class Peer:
    """One peer at ``url`` (scheme://host:port, optionally a base path). Thread-safe: the ranges of
    :func:`download_from` share one Peer per peer. Any URL the user named is allowed; a redirect
    never is."""

    def __init__(self, url: str, *, timeouts: Timeouts | None = None) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise PeerError(url, "is not an http(s) URL", hint="name a peer as http://HOST:PORT")
        self.url = url.rstrip("/")
        self.timeouts = timeouts or Timeouts()
        t = self.timeouts
        self._client = httpx.Client(
            transport=_Transport(), follow_redirects=False, trust_env=False,
            timeout=httpx.Timeout(connect=t.connect, read=t.read, write=t.read, pool=t.connect),
            headers={"Accept-Encoding": "identity", "User-Agent": "commonforge-fetch/1"},
        )

    def __repr__(self) -> str:
        return f"Peer({self.url!r})"

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> Peer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _url(self, path: str) -> str:
        return self.url + "/" + path.lstrip("/")

    @contextmanager
    def _open(self, path: str, headers: dict[str, str], deadline: float) -> Iterator[httpx.Response]:
        """The response to GET ``path``, its status checked (2xx, no redirect), the deadline armed
        for this thread until the body is read."""
        url = self._url(path)
        _deadline.at = time.monotonic() + deadline
        try:
            with self._client.stream("GET", url, headers=headers) as response:
                if response.is_redirect or 300 <= response.status_code < 400:
                    raise self._redirect(url, response)
                if response.status_code >= 400:
                    raise PeerUnavailable(self.url, f"answered {response.status_code} for {path}{_why(response)}",
                                          status=response.status_code)
                encoding = response.headers.get("content-encoding", "identity").lower()
                if encoding not in ("identity", ""):
                    raise PeerError(self.url, f"sent {path} with Content-Encoding {encoding!r}; only identity is read")
                yield response
        except httpx.TimeoutException as err:
            over = time.monotonic() >= _deadline.at
            what = f"took longer than the {deadline:.3g} s deadline" if over else f"timed out ({type(err).__name__})"
            raise PeerUnavailable(self.url, f"{what} for {path}", hint="the peer is too slow; pull from another") from None
        except httpx.ConnectError as err:
            raise PeerUnavailable(self.url, f"cannot be reached ({err})") from None
        except httpx.TransportError as err:
            raise PeerUnavailable(self.url, f"dropped the connection during {path} ({type(err).__name__})") from None
        finally:
            _deadline.at = None

    def _redirect(self, url: str, response: httpx.Response) -> PeerError:
        location = response.headers.get("location", "")
        target = urljoin(url, location)
        if target == url:
            what = f"redirect loop: {url} redirects to itself"
        elif urlsplit(target).netloc != urlsplit(url).netloc:
            what = f"redirected {url} to another host, {target}"
        else:
            what = f"redirected {url} to {target}"
        return PeerError(self.url, f"sent a redirect ({response.status_code}): {what}; redirects are never followed",
                         hint="name the URL that serves the data itself, or pull from another peer")

    def _body(self, response: httpx.Response, path: str, limit: int, sink: Callable[[bytes], None],
              what: str) -> int:
        """Stream the body into ``sink``, at most ``limit`` bytes: refused at once past it."""
        declared = response.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise PeerError(self.url, f"declared {int(declared):,} bytes for {what}, expected at most {limit:,}")
        got = 0
        for chunk in response.iter_raw():
            if got + len(chunk) > limit:
                raise PeerError(self.url, f"sent more than {limit:,} bytes for {what} (stopped reading at "
                                f"{got + len(chunk):,})")
            got += len(chunk)
            sink(chunk)
        return got

    def _read(self, path: str, max_bytes: int, what: str) -> bytes:
        parts: list[bytes] = []
        with self._open(path, {}, self.timeouts.total) as response:
            self._body(response, path, max_bytes, parts.append, what)
        return b"".join(parts)

    def get_bytes(self, path: str, max_bytes: int) -> bytes:
        """The body of GET ``path`` (at most ``max_bytes``)."""
        return self._read(path, max_bytes, path)

    def get_json(self, path: str, max_bytes: int = 1 << 20) -> Any:
        """The JSON body of GET ``path`` (at most ``max_bytes``)."""
        data = self._read(path, max_bytes, path)
        try:
            return json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise PeerError(self.url, f"sent {path} that is not JSON ({err})") from None

    def get_range(self, path: str, start: int, end: int, size: int, what: str) -> bytes:
        """Bytes ``start``..``end`` (inclusive) of a ``size``-byte file, exactly: 206 with the matching
        Content-Range, ``end - start + 1`` bytes, or an error."""
        parts: list[bytes] = []
        want = end - start + 1
        with self._open(path, {"Range": f"bytes={start}-{end}"}, self.timeouts.for_size(want)) as response:
            self._check_range(response, start, end, size, what)
            got = self._body(response, path, want, parts.append, f"{what} bytes {start}-{end}")
        if got != want:
            raise PeerUnavailable(self.url, f"sent {got:,} bytes for {what} bytes {start}-{end}, expected {want:,}")
        return b"".join(parts)

    def _check_range(self, response: httpx.Response, start: int, end: int, size: int, what: str) -> None:
        if response.status_code != 206:
            raise PeerError(self.url, f"answered {response.status_code} to a Range request for {what}, not 206")
        header = response.headers.get("content-range", "")
        match = _CONTENT_RANGE.fullmatch(header.strip())
        if not match or (int(match[1]), int(match[2])) != (start, end) or match[3] not in (str(size), "*"):
            raise PeerError(self.url, f"sent Content-Range {header!r} for {what}, asked for bytes {start}-{end}/{size}")

    def download(self, path: str, dest: Path, expected_sha256: str, expected_size: int, *, resume: bool = True,
                 progress: Progress | None = None) -> Path:
        """GET ``path`` into ``dest``: see :func:`download`."""
        dest = Path(dest)
        what = f"blob {short(expected_sha256)}"
        partial = partial_path(dest, expected_sha256)
        dest.parent.mkdir(parents=True, exist_ok=True)
        have = partial.stat().st_size if resume and partial.exists() else 0
        if have > expected_size:
            have = 0
        digest = hashlib.sha256()
        mode = "r+b" if have else "wb"
        try:
            with open(partial, mode) as out:
                if have:  # hash what an earlier call left, then continue after it
                    while block := out.read(1 << 20):
                        digest.update(block)
                    out.seek(have)
                out.truncate(have)
                done = have
                if have < expected_size:
                    headers = {"Range": f"bytes={have}-"} if have else {}
                    with self._open(path, headers, self.timeouts.for_size(expected_size - have)) as response:
                        if have:
                            self._check_range(response, have, expected_size - 1, expected_size, what)

                        def sink(chunk: bytes) -> None:
                            nonlocal done
                            out.write(chunk)
                            digest.update(chunk)
                            done += len(chunk)
                            if progress is not None:
                                progress(done, expected_size)

                        self._body(response, path, expected_size - have, sink, what)
                out.flush()
                os.fsync(out.fileno())
            if done != expected_size:
                raise PeerUnavailable(self.url, f"sent {done:,} bytes for {what}, expected {expected_size:,} "
                                      "(the body ended early)")
            actual = digest.hexdigest()
            if actual != expected_sha256:
                partial.unlink(missing_ok=True)  # which bytes were bad cannot be told: start over next time
                raise PeerError(self.url, f"sent {what} whose sha256 is {actual}, expected {expected_sha256}")
            os.replace(partial, dest)
            fsutil.fsync_dir(dest.parent)
            return dest
        except PeerError:
            partial.unlink(missing_ok=True)
            raise
        except BaseException:
            if not resume:
                partial.unlink(missing_ok=True)
            raise


def partial_path(dest: Path, sha256: str) -> Path:
    """Where an interrupted download of ``sha256`` into ``dest`` waits to be resumed."""
    return dest.parent / f".{dest.name}.{sha256[:16]}.partial"


def _why(response: httpx.Response) -> str:
    """The peer's JSON error, short, if it sent one (read bounded: error bodies are small)."""
    try:
        data = b""
        for chunk in response.iter_raw():
            data += chunk
            if len(data) > 4096:
                return ""
        error = json.loads(data).get("error")
        return f": {str(error)[:200]}" if error else ""
    except Exception:  # noqa: BLE001 - an error body is untrusted decoration, never a reason to fail differently
        return ""


def _split(url: str) -> tuple[Peer, str]:
    parts = urlsplit(url)
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    return Peer(f"{parts.scheme}://{parts.netloc}"), path


# --- module functions on full URLs -------------------------------------------------------------------


def get_json(url: str, max_bytes: int = 1 << 20, *, timeouts: Timeouts | None = None) -> Any:
    peer, path = _split(url)
    peer = Peer(peer.url, timeouts=timeouts)
    with peer:
        return peer.get_json(path, max_bytes)


def get_bytes(url: str, max_bytes: int, *, timeouts: Timeouts | None = None) -> bytes:
    peer, path = _split(url)
    with Peer(peer.url, timeouts=timeouts) as peer:
        return peer.get_bytes(path, max_bytes)


def download(url: str, dest_file: Path, expected_sha256: str, expected_size: int, *, resume: bool = True,
             progress: Progress | None = None, timeouts: Timeouts | None = None) -> Path:
    """Stream ``url`` into ``dest_file``, hashed as it goes; ``dest_file`` appears (atomically) only
    when ``expected_size`` bytes with sha256 ``expected_sha256`` arrived. See the module docstring
    for resume and errors."""
    peer, path = _split(url)
    with Peer(peer.url, timeouts=timeouts) as peer:
        return peer.download(path, dest_file, expected_sha256, expected_size, resume=resume, progress=progress)


# --- many peers at once -------------------------------------------------------------------------------


@dataclass
class DownloadReport:
    """What :func:`download_from` did: bytes per peer, each failure, and the peers that lied."""

    path: Path
    by_peer: dict[str, int] = field(default_factory=dict)
    failures: list[tuple[str, str]] = field(default_factory=list)  # (peer, message)
    liars: dict[str, list[tuple[int, int]]] = field(default_factory=dict)  # peer -> ranges it sent wrong


def download_from(peers: Sequence[Peer | str], path_fn: Callable[[str], str], dest: Path, sha256: str, size: int,
                  *, chunk: int = 8 << 20, progress: Progress | None = None,
                  timeouts: Timeouts | None = None, resume: bool = False) -> DownloadReport:
    """The blob ``sha256`` of ``size`` bytes into ``dest``, in ``chunk``-byte ranges spread across
    ``peers`` (``path_fn(sha256)`` is its path on each, e.g. :func:`blob_path`).

    A range that fails (unreachable, slow, wrong length or Content-Range) is retried on another peer,
    and that peer is not asked again. Ranges cannot be verified alone (no Merkle tree), so the whole
    file is verified at the end; on a mismatch each live peer in turn is asked for every range, and
    the first whole copy that verifies is kept. Every range sent earlier is then compared with the
    verified bytes: the peers whose ranges differ are named in ``report.liars``. ``dest`` appears
    only verified; on failure nothing is left behind, unless ``resume``: then the ranges received so
    far stay in ``.<dest>.partial`` (with ``.<dest>.ranges``, the ranges it holds, each written only
    after its bytes were synced), and the next call with ``resume`` fetches only the others. What a
    partial holds is never trusted: the whole is verified as always, and repaired if it is wrong."""
    pool = [p if isinstance(p, Peer) else Peer(p, timeouts=timeouts) for p in peers]
    if not pool:
        raise PeerUnavailable("(none)", "given: no peers to download from", hint="name at least one peer")
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    path = path_fn(sha256)
    what = f"blob {short(sha256)}"
    report = DownloadReport(dest)
    ranges = [(s, min(s + chunk, size) - 1) for s in range(0, size, chunk)]
    sent: dict[tuple[int, int], list[tuple[str, str]]] = {r: [] for r in ranges}  # range -> (peer, sha256 sent)
    dead: set[str] = set()
    lock = threading.Lock()
    done = 0
    partial, journal = dest.with_name(f".{dest.name}.partial"), dest.with_name(f".{dest.name}.ranges")
    held: set[tuple[int, int]] = set()
    if resume and partial.is_file() and partial.stat().st_size == size:
        try:
            held = {(a, b) for a, b in json.loads(journal.read_text(encoding="utf-8"))} & set(ranges)
        except (OSError, ValueError, TypeError):
            held = set()

    def fetch(r: tuple[int, int], order: list[Peer], fd: int) -> None:
        nonlocal done
        for peer in order:
            with lock:
                if peer.url in dead:
                    continue
            try:
                data = peer.get_range(path, r[0], r[1], size, what)
            except PEER_ERRORS as err:
                with lock:
                    dead.add(peer.url)
                    report.failures.append((peer.url, err.message))
                continue
            os.pwrite(fd, data, r[0])
            with lock:
                if resume:  # the journal names a range only once its bytes are on disk
                    os.fsync(fd)
                    held.add(r)
                    fsutil.atomic_write_text(journal, json.dumps(sorted(held)))
                sent[r].append((peer.url, hashlib.sha256(data).hexdigest()))
                report.by_peer[peer.url] = report.by_peer.get(peer.url, 0) + len(data)
                done += len(data)
                if progress is not None:
                    progress(done, size)
            return
        raise PeerUnavailable(", ".join(p.url for p in pool), f"could not serve {what} bytes {r[0]}-{r[1]}: "
                              + "; ".join(f"{p}: {m}" for p, m in report.failures))

    if resume:
        return _download_resumable(pool, fetch, ranges, held, dead, path, size, sha256, what, report, sent,
                                   partial, journal, dest, progress)
    with fsutil.temporary_file(dest.parent, prefix=f".{dest.name}.") as tmp:
        fd = tmp.file.fileno()
        os.ftruncate(fd, size)
        with ThreadPoolExecutor(max_workers=max(1, min(len(ranges), 2 * len(pool)))) as ex:
            jobs = [ex.submit(fetch, r, pool[i % len(pool):] + pool[:i % len(pool)], fd) for i, r in enumerate(ranges)]
            for job in jobs:
                job.result()
        _verify_or_repair(pool, dead, path, size, sha256, ranges, fd, what, report, sent)
        tmp.move_into_place(dest, mode=0o644)
    return _named(report, what)


def _named(report: DownloadReport, what: str) -> DownloadReport:
    for peer_url, bad in report.liars.items():
        report.failures.append((peer_url, f"peer {peer_url} sent {what} bytes "
                                + ", ".join(f"{a}-{b}" for a, b in bad) + " that do not match the verified blob"))
    return report


def _verify_or_repair(pool, dead, path, size, sha256, ranges, fd, what, report, sent) -> None:
    """Verify the assembled blob in ``fd``; repair it from the peers if it is wrong, and then name who
    sent what the verified bytes are not (a whole that verifies at once had no liar)."""
    if _sha256_fd(fd) == sha256:
        return
    _repair(pool, dead, path, size, sha256, ranges, fd, what, report)
    for r, claims in sent.items():
        truth = hashlib.sha256(os.pread(fd, r[1] - r[0] + 1, r[0])).hexdigest()
        for peer_url, digest in claims:
            if digest != truth:
                report.liars.setdefault(peer_url, []).append(r)


def _download_resumable(pool, fetch, ranges, held, dead, path, size, sha256, what, report, sent, partial: Path,
                        journal: Path, dest: Path, progress) -> DownloadReport:
    """:func:`download_from` with ``resume``: into ``partial``, the ranges it already holds skipped."""
    fd = os.open(partial, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        os.ftruncate(fd, size)
        todo = [r for r in ranges if r not in held]
        if progress is not None and held:
            progress(sum(b - a + 1 for a, b in held), size)
        with ThreadPoolExecutor(max_workers=max(1, min(len(todo) or 1, 2 * len(pool)))) as ex:
            jobs = [ex.submit(fetch, r, pool[i % len(pool):] + pool[:i % len(pool)], fd) for i, r in enumerate(todo)]
            for job in jobs:
                job.result()
        _verify_or_repair(pool, dead, path, size, sha256, ranges, fd, what, report, sent)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.chmod(partial, 0o644)
    os.replace(partial, dest)
    journal.unlink(missing_ok=True)
    fsutil.fsync_dir(dest.parent)
    return _named(report, what)


def _repair(pool: list[Peer], dead: set[str], path: str, size: int, sha256: str, ranges: list[tuple[int, int]],
            fd: int, what: str, report: DownloadReport) -> None:
    """The assembled file did not verify: take every range from one live peer at a time until a copy
    verifies (into ``fd``), or raise naming every peer tried."""
    tried = []
    for peer in [p for p in pool if p.url not in dead] + [p for p in pool if p.url in dead]:
        try:
            for start, end in ranges:
                os.pwrite(fd, peer.get_range(path, start, end, size, what), start)
        except PEER_ERRORS as err:
            tried.append(f"{peer.url}: {err.message}")
            continue
        if _sha256_fd(fd) == sha256:
            return
        tried.append(f"{peer.url}: its whole copy does not hash to {short(sha256)}")
    raise PeerError(", ".join(p.url for p in pool), f"all failed to send {what} verified: " + "; ".join(tried))


def _sha256_fd(fd: int) -> str:
    digest = hashlib.sha256()
    offset = 0
    while block := os.pread(fd, 1 << 20, offset):
        digest.update(block)
        offset += len(block)
    return digest.hexdigest()
