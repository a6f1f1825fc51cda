"""BitTorrent v2 (BEP 52) for releases, with libtorrent and no daemon: deterministic torrents, private sessions.

Why v2 only: v2 identifies every file by a SHA-256 Merkle root ("pieces root") and the torrent by the
SHA-256 of its info dict, so a torrent names its files' contents; v1 uses SHA-1 over pieces that span
files. Still, the torrent is transport and is never trusted alone: the release manifest names each
artifact by its *plain* sha256 (which is not the pieces root), so :func:`download` checks every file
against that map before anything lands.

Determinism (the same files give the same info-hash on any machine): files sorted by their path in the
torrent, the piece size fixed by :func:`piece_size_for` from the total size, no creation date, no
creator string, no mtimes, no attributes; only the info dict and the piece layers are written.

Privacy: :func:`session` switches off everything that finds or announces peers by itself (DHT, local
service discovery, UPnP, NAT-PMP, peer exchange, trackers), runs in anonymous mode (no user agent, no
client version in the handshake, a random peer id) and listens on 127.0.0.1 unless told otherwise.
Peers are only the ones a caller names (:func:`download`'s ``peers``). libtorrent's sockets are C++,
out of reach of Python's audit hook: the tests check the process's sockets in /proc/net instead.

    data = make_torrent([("model.safetensors", path), ...], name="forge-small-1.0.0")
    s = session();  seed(s, data, release_dir)                    # serves release_dir/<path>
    c = session();  download(c, data, dest, peers=[("127.0.0.1", s.listen_port())], expected=sha256s)
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import libtorrent as lt

from commonforge.errors import FetchError, InputError, VerificationError
from registry.fsutil import check_relative_path, fsync_dir
from trust.statements import SharedFile, SharingPredicate

BLOCK = 16 * 1024  # BEP 52's leaf size
MIN_PIECE = 16 * 1024  # v2 pieces are powers of two of at least one block
MAX_PIECE = 16 * 1024 * 1024
TARGET_PIECES = 1024  # a few thousand piece hashes at most: small torrents, fine-grained transfer
MAX_TORRENT_BYTES = 64 * 1024 * 1024  # a .torrent bigger than this is hostile (its piece layers are 32 B per piece)

Progress = Callable[[int, int], None]  # (bytes done, bytes in all)

_TORRENT_FLAGS = lt.torrent_flags.disable_dht | lt.torrent_flags.disable_lsd | lt.torrent_flags.disable_pex

# What every session gets (read back by the tests). Outgoing connections bind to the listen host.
PRIVATE_SETTINGS: dict[str, Any] = {
    "enable_dht": False,
    "enable_lsd": False,
    "enable_upnp": False,
    "enable_natpmp": False,
    "anonymous_mode": True,
    "user_agent": "",
    "handshake_client_version": "",
    "peer_fingerprint": "-CF0000-",
    "announce_to_all_trackers": False,
    "announce_to_all_tiers": False,
    "validate_https_trackers": True,
    # TCP only: a uTP connection hides in one unconnected UDP socket, so nothing outside could tell whom it talks to
    "enable_outgoing_utp": False,
    "enable_incoming_utp": False,
    # several peers on one loopback address (tests, a local swarm) must be able to connect at once
    "allow_multiple_connections_per_ip": True,
    "alert_mask": lt.alert_category.error | lt.alert_category.status | lt.alert_category.peer
    | lt.alert_category.connect | lt.alert_category.storage,
}


# --- torrents ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TorrentFile:
    """One file of a torrent: its path inside the torrent (without the torrent's name), size and pieces root."""

    path: str
    size: int
    pieces_root: str | None  # hex; None for an empty file (v2 gives it none)


def piece_size_for(total: int) -> int:
    """The fixed rule: the smallest power of two from 16 KiB to 16 MiB giving at most ``TARGET_PIECES`` pieces."""
    size = MIN_PIECE
    while size < MAX_PIECE and size * TARGET_PIECES < total:
        size *= 2
    return size


def pieces_root(path: Path) -> str | None:
    """A file's BEP 52 pieces root, computed here from its bytes (independently of libtorrent).

    SHA-256 over 16 KiB blocks (the last may be short), the leaves padded with zero hashes to a
    power of two, pairs hashed up to one root. ``make_torrent`` holds libtorrent's roots to this.
    """
    level: list[bytes] = []
    with open(path, "rb") as f:
        while block := f.read(BLOCK):
            level.append(hashlib.sha256(block).digest())
    if not level:
        return None
    width = 1
    while width < len(level):
        width *= 2
    level += [bytes(32)] * (width - len(level))
    while len(level) > 1:
        level = [hashlib.sha256(level[i] + level[i + 1]).digest() for i in range(0, len(level), 2)]
    return level[0].hex()


def _check_name(name: str) -> str:
    if not name or "/" in name or name in (".", "..") or name.startswith(".") or "\x00" in name or "\\" in name:
        raise InputError(f"torrent name {name!r} is not a plain file name",
                         hint="name the torrent after the release, e.g. forge-small-1.0.0")
    return name


def make_torrent(files: Sequence[tuple[str, Path]], *, name: str, piece_size: int | None = None) -> bytes:
    """The bytes of a deterministic v2-only .torrent of ``files`` (path inside the torrent, file on disk).

    Raises InputError for a bad or duplicate path, a missing file or a bad piece size; VerificationError
    if a file changed while it was hashed (libtorrent's pieces root differs from :func:`pieces_root`).
    """
    _check_name(name)
    if not files:
        raise InputError("a torrent needs at least one file", hint="pass the release's artifacts")
    entries: dict[str, Path] = {}
    for inner, source in files:
        try:
            check_relative_path(inner, what="path in the torrent")
        except ValueError as err:
            raise InputError(str(err), hint="paths in a torrent are relative POSIX paths, like the manifest's") from None
        inner = PurePosixPath(inner).as_posix()
        if inner in entries or any(p == inner or p.startswith(inner + "/") or inner.startswith(p + "/")
                                   for p in entries):
            raise InputError(f"{inner!r} is in the torrent twice (or as a file and a directory)",
                             hint="give each artifact one path")
        source = Path(source)
        if not source.is_file():
            raise InputError(f"{source} is not a file", hint="pass existing artifact files")
        entries[inner] = source.resolve()
    ordered = sorted(entries.items())  # the file order is part of the info dict: fix it
    sizes = {inner: src.stat().st_size for inner, src in ordered}
    total = sum(sizes.values())
    piece = piece_size or piece_size_for(total)
    if piece < MIN_PIECE or piece & (piece - 1):
        raise InputError(f"piece size {piece} is not a power of two of at least {MIN_PIECE}",
                         hint="leave piece_size out to use the fixed rule")

    with tempfile.TemporaryDirectory(prefix="commonforge-torrent-") as tmp:
        # libtorrent hashes files at <parent>/<name>/<path>: lay the sources out there as symlinks
        for inner, src in ordered:
            link = Path(tmp, name, inner)
            link.parent.mkdir(parents=True, exist_ok=True)
            os.symlink(src, link)
        entry_list = [lt.create_file_entry(f"{name}/{inner}", sizes[inner]) for inner, _ in ordered]
        ct = lt.create_torrent(entry_list, piece, lt.create_torrent.v2_only)
        try:
            lt.set_piece_hashes(ct, tmp)
        except RuntimeError as err:
            raise InputError(f"libtorrent could not hash the files: {err}", hint="check the files are readable") from None
        ct.set_creator("")
        ct.set_creation_date(0)
        generated: Any = ct.generate()
    # only the info dict and the piece layers: no "creation date", "created by", comment or trackers
    data: bytes = lt.bencode({key: generated[key] for key in (b"info", b"piece layers") if key in generated})

    ours = {inner: pieces_root(src) for inner, src in ordered}
    for f in torrent_files(data):
        if f.size != sizes[f.path] or f.pieces_root != ours[f.path]:
            raise VerificationError(f"{entries[f.path]} changed while the torrent was made (its v2 pieces root or size "
                                    "differs from its bytes now)", hint="make the torrent again when nothing writes the files")
    return data


def _info(torrent_bytes: bytes) -> Any:
    if len(torrent_bytes) > MAX_TORRENT_BYTES:
        raise VerificationError(f"a {len(torrent_bytes)}-byte torrent is too large", hint="the torrent is not one we made")
    try:
        ti = lt.torrent_info(bytes(torrent_bytes))
    except (RuntimeError, TypeError, ValueError) as err:
        raise VerificationError(f"not a torrent: {err}", hint="the torrent is damaged; get it again") from None
    hashes = ti.info_hashes()
    if not hashes.has_v2() or hashes.has_v1():
        raise VerificationError("the torrent is not a v2-only (BEP 52) torrent",
                                hint="commonforge only shares v2-only torrents; make it with sharing.torrent.make_torrent")
    return ti


def info_hash_v2(torrent_bytes: bytes) -> str:
    """The v2 info-hash (hex SHA-256 of the bencoded info dict): what a sharing statement names."""
    return str(_info(torrent_bytes).info_hashes().v2)


def magnet(torrent_bytes: bytes) -> str:
    """A magnet link (``xt=urn:btmh:1220<info-hash>`` and the name; no trackers: peers are named separately)."""
    return str(lt.make_magnet_uri(_info(torrent_bytes)))


def torrent_files(torrent_bytes: bytes) -> list[TorrentFile]:
    """The torrent's real files (v2 pad files left out), in the torrent's order."""
    ti = _info(torrent_bytes)
    fs = ti.layout()
    name = ti.name()
    out = []
    for i in range(fs.num_files()):
        if fs.file_flags(i) & lt.file_storage.flag_pad_file:
            continue
        path = PurePosixPath(fs.file_path(i).replace(os.sep, "/"))
        inner = path.relative_to(name).as_posix() if path.parts[:1] == (name,) else path.as_posix()
        root = str(fs.root(i))
        out.append(TorrentFile(inner, fs.file_size(i), None if set(root) == {"0"} else root))
    return out


def sharing_predicate(torrent_bytes: bytes, expected: Mapping[str, str], *, signed_at: str) -> SharingPredicate:
    """The ``sharing`` statement's predicate for this torrent, its files' plain sha256 taken from ``expected``."""
    files = torrent_files(torrent_bytes)
    _check_same_files(files, expected)
    return SharingPredicate(signed_at=signed_at, info_hash_v2=info_hash_v2(torrent_bytes), magnet=magnet(torrent_bytes),
                            files=[SharedFile(path=f.path, sha256=expected[f.path], size=f.size) for f in files])


def _check_same_files(files: Iterable[TorrentFile], expected: Mapping[str, str]) -> None:
    have = {f.path for f in files}
    if have != set(expected):
        extra, missing = sorted(have - set(expected)), sorted(set(expected) - have)
        raise VerificationError(f"the torrent's files are not the release's (extra: {extra or 'none'}, "
                                f"missing: {missing or 'none'})", hint="the torrent is for something else; do not use it")


# --- sessions ---------------------------------------------------------------------------------------


def session(listen: str = "127.0.0.1:0") -> Any:
    """A private libtorrent session listening on ``listen`` (host:port; port 0 picks a free one).

    Nothing finds or announces peers by itself; no default plugins (so no peer exchange, no
    metadata exchange); connections go out from the listen host.
    """
    host, sep, port = listen.rpartition(":")
    if not sep or not host or not port.isdigit() or host.startswith("["):
        raise InputError(f"listen address {listen!r} is not host:port (IPv4)", hint="e.g. 127.0.0.1:0")
    settings = dict(PRIVATE_SETTINGS, listen_interfaces=listen, outgoing_interfaces=host)
    s = lt.session(settings, 0)  # type: ignore[call-overload]  # flags 0: no default plugins (ut_pex, ut_metadata, smart_ban)
    deadline = time.monotonic() + 5
    while not s.is_listening() or not s.listen_port():
        if time.monotonic() > deadline:
            raise FetchError(f"libtorrent could not listen on {listen}", hint="choose another address or port")
        s.wait_for_alert(50)
    for alert in s.pop_alerts():
        if isinstance(alert, lt.listen_failed_alert):
            raise FetchError(f"libtorrent could not listen on {listen}: {alert.message()}",
                             hint="choose another address or port")
    return s


def close_session(session: Any) -> None:
    """Stop a session at once: no torrent, no listening socket (a Python reference may outlive it)."""
    session.pause()
    for handle in session.get_torrents():
        session.remove_torrent(handle)
    session.apply_settings({"listen_interfaces": ""})


def _params(ti: Any, save_path: Path) -> Any:
    p = lt.add_torrent_params()
    p.ti = ti
    p.save_path = str(save_path)
    p.flags = _TORRENT_FLAGS
    p.trackers = []
    p.url_seeds = []
    return p


def seed(session: Any, torrent_bytes: bytes, directory: Path, *, timeout: float = 600.0) -> Any:
    """Seed ``directory``'s files (``directory/<path in the torrent>``); return the torrent handle.

    The files are hash-checked against the torrent first: a file changed since the torrent was made
    is a VerificationError naming it, and nothing is served.
    """
    ti = _info(torrent_bytes)
    directory = Path(directory).resolve()
    name = ti.name()
    fs = ti.layout()
    inner: dict[int, str] = {}
    for i in range(fs.num_files()):
        if not fs.file_flags(i) & lt.file_storage.flag_pad_file:
            inner[i] = PurePosixPath(fs.file_path(i).replace(os.sep, "/")).relative_to(name).as_posix()
    for path in inner.values():
        if not (directory / path).is_file():
            raise InputError(f"{directory / path} is missing", hint="seed the directory the torrent was made from")
    params = _params(ti, directory)
    # serve the files where they are, whatever the directory is called (absolute paths override save_path)
    params.renamed_files = {i: str(directory / path) for i, path in inner.items()}
    handle = session.add_torrent(params)
    deadline = time.monotonic() + timeout
    checked = False
    while not checked:
        for alert in session.pop_alerts():
            if isinstance(alert, lt.torrent_checked_alert) and alert.handle == handle:
                checked = True
            elif isinstance(alert, lt.torrent_error_alert) and alert.handle == handle:
                _remove(session, handle)
                raise FetchError(f"libtorrent could not read {directory}: {alert.message()}", hint="check the files")
        if not checked and time.monotonic() > deadline:
            _remove(session, handle)
            raise FetchError(f"checking {directory} took longer than {timeout:g} s", hint="try again")
        if not checked:
            session.wait_for_alert(50)
    if not handle.status().is_seeding:
        done = handle.file_progress()
        bad = [path for i, path in inner.items() if done[i] != fs.file_size(i)]
        _remove(session, handle)
        raise VerificationError(f"{directory}: {', '.join(bad)} do not match the torrent (changed since it was made)",
                                hint="restore the files from the release, or make a new torrent and sign it")
    return handle


def _remove(session: Any, handle: Any, timeout: float = 5.0) -> None:
    """Remove the torrent and wait until libtorrent let go of its files (so they can be moved or deleted)."""
    session.remove_torrent(handle)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(isinstance(a, lt.torrent_removed_alert) for a in session.pop_alerts()):
            break
        session.wait_for_alert(50)
    # the removed alert comes when the torrent leaves the session; its storage closes right after
    deadline = time.monotonic() + timeout
    while handle.is_valid() and time.monotonic() < deadline:
        time.sleep(0.01)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def download(session: Any, torrent_bytes: bytes, dest_dir: Path, *, peers: Sequence[tuple[str, int]],
             expected: Mapping[str, str], timeout: float = 600.0, progress: Progress | None = None) -> Path:
    """Download the torrent from ``peers`` only, check every file against ``expected`` (path -> plain sha256), then
    move the whole directory into ``dest_dir`` (which must not exist, or be empty). Returns ``dest_dir``.

    The files arrive in a temporary directory beside ``dest_dir`` (same file system: the final rename is
    atomic); on any failure it is deleted and ``dest_dir`` is as before. libtorrent checks each piece
    against the torrent's Merkle tree; the sha256 check ties the files to the release, which the torrent
    alone cannot. FetchError when the transfer does not finish in ``timeout`` s (peers down, or only bad
    data on offer); VerificationError when the torrent or a file is not the release's.
    """
    ti = _info(torrent_bytes)
    _check_same_files(torrent_files(torrent_bytes), expected)
    dest_dir = Path(dest_dir)
    if dest_dir.exists() and (not dest_dir.is_dir() or any(dest_dir.iterdir())):
        raise InputError(f"{dest_dir} exists and is not an empty directory", hint="download into a new directory")
    if not peers:
        raise InputError("no peers to download from", hint="name at least one peer (host, port)")
    dest_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest_dir.name}.torrent-", dir=dest_dir.parent))
    handle = None
    try:
        handle = session.add_torrent(_params(ti, tmp))
        for host, port in peers:
            handle.connect_peer((host, int(port)))
        total = sum(f.size for f in torrent_files(torrent_bytes))  # ti.total_size() counts v2's pad files
        deadline = time.monotonic() + timeout
        failed = 0
        retry = time.monotonic() + 1.0
        while True:
            for alert in session.pop_alerts():
                if isinstance(alert, lt.hash_failed_alert):
                    failed += 1
            st = handle.status()
            if progress:
                progress(min(st.total_done, total), total)
            if st.errc.value():
                raise FetchError(f"libtorrent failed: {st.errc.message()}", hint="check the disk and try again")
            if st.is_seeding:
                if progress:
                    progress(total, total)
                break
            if time.monotonic() > deadline:
                names = ", ".join(f"{h}:{p}" for h, p in peers)
                what = f"; {failed} pieces failed their hash check" if failed else ""
                raise FetchError(f"the torrent did not complete from {names} within {timeout:g} s "
                                 f"({st.total_wanted_done} of {total} bytes{what})",
                                 hint="the peers are down, slow, or offer files that do not match the torrent")
            if st.num_peers == 0 and time.monotonic() > retry:
                for host, port in peers:  # a peer that dropped us (or was not up yet) is asked again
                    handle.connect_peer((host, int(port)))
                retry = time.monotonic() + 1.0
            session.wait_for_alert(100)
        _remove(session, handle)
        handle = None
        root = tmp / ti.name()
        for f in torrent_files(torrent_bytes):  # libtorrent writes nothing for an empty file
            if f.size == 0 and not (root / f.path).exists():
                (root / f.path).parent.mkdir(parents=True, exist_ok=True)
                (root / f.path).touch()
        for inner, want in sorted(expected.items()):
            path = root / inner
            got = _sha256(path) if path.is_file() and not path.is_symlink() else "missing"
            if got != want:
                raise VerificationError(f"{inner} from the torrent has sha256 {got}, the release says {want}",
                                        hint="the torrent does not carry this release's files; do not use it")
        for path in root.rglob("*"):  # nothing but the expected files (no pad files or strays land)
            if path.is_file() and path.relative_to(root).as_posix() not in expected:
                path.unlink()
        fsync_dir(root)
        os.replace(root, dest_dir)  # onto an empty directory works on POSIX
        fsync_dir(dest_dir.parent)
        return dest_dir
    finally:
        if handle is not None:
            _remove(session, handle)
        shutil.rmtree(tmp, ignore_errors=True)
