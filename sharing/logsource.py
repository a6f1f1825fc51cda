"""The transparency log of a peer, over HTTP, as a :class:`trust.log.monitor.LogSource`.

A peer serves its log's static tlog-tiles files under ``<base>/v1/log/`` (``checkpoint``,
``tile/...``). :class:`HTTPTileLog` is trust.log.tiles.TileLog reading those files through
sharing.fetch (size limits, deadlines, no redirects) instead of from a directory, so the monitor
verifies a peer exactly as it verifies a directory: the checkpoint's signatures, every tile
hashing up to its root, every entry to its leaf, consistency with the other sources.

Limits: a hash tile of width ``W`` is read only up to ``W * 32`` bytes (more is refused at the
first byte over), an entry bundle up to ``max_tile_bytes``, the checkpoint up to 64 KiB. Errors
name the tile's URL (``http://peer/v1/log/tile/0/000.p/5 is truncated: ...``).
"""

from __future__ import annotations

from sharing.fetch import Peer, PeerUnavailable, Timeouts
from trust.log.merkle import HASH_SIZE, LogError
from trust.log.monitor import LogSource
from trust.log.tiles import TILE_WIDTH, TileLog, hashes_at_level, parse_checkpoint, tile_path

MAX_CHECKPOINT = 64 * 1024
MAX_BUNDLE = TILE_WIDTH * (2 + 0xFFFF)  # 256 entries of at most 65,535 bytes each, with their length prefix


class _URL(str):
    """A URL that joins like a Path (``url / "tile/0/000"``), so TileLog's messages name the URL."""

    def __truediv__(self, other: str) -> _URL:
        return _URL(self.rstrip("/") + "/" + str(other).lstrip("/"))


class HTTPTileLog(TileLog):
    """A peer's log read over HTTP at the size of the checkpoint it served when opened.

    TileLog reads through two methods, :meth:`_load_checkpoint` and :meth:`_read_tile`; this class
    overrides both (its directory is the log's base URL) and inherits all the hashing and checks."""

    def __init__(self, peer: Peer, *, max_tile_bytes: int = MAX_BUNDLE) -> None:
        # Not TileLog.__init__: it makes a Path of the directory, which would mangle the URL's "//".
        self.peer = peer
        self.max_tile_bytes = max_tile_bytes
        self.directory = _URL(peer.url) / "v1/log"  # type: ignore[assignment]
        self._cache: dict[str, list[bytes]] = {}
        self.note = b""
        self._load_checkpoint()

    def _fetch(self, relative: str, limit: int) -> bytes:
        return self.peer.get_bytes(f"v1/log/{relative}", limit)

    def _load_checkpoint(self) -> None:
        self._cache.clear()
        self.note = self._fetch("checkpoint", MAX_CHECKPOINT)
        _, self.size, self.checkpoint_root = parse_checkpoint(self.note, name=str(self.directory / "checkpoint"))

    def _limit(self, level: int | str, width: int) -> int:
        return min(self.max_tile_bytes, MAX_BUNDLE) if level == "entries" else width * HASH_SIZE

    def _read_tile(self, level: int | str, index: int, width: int) -> tuple[str, int, bytes]:
        """The tile at ``width``, or (when the peer's log grew and pruned that partial since it was
        opened) at the wider width its current checkpoint names, as TileLog does on disk."""
        relative = tile_path(level, index, width)
        try:
            return relative, width, self._fetch(relative, self._limit(level, width))
        except PeerUnavailable as err:
            if err.status != 404:
                raise
            if width == TILE_WIDTH:
                raise LogError(f"{self.directory / relative} is missing (404): the log at size {self.size} needs it",
                               hint="the peer serves an incomplete log; monitor another copy") from None
        current = parse_checkpoint(self._fetch("checkpoint", MAX_CHECKPOINT), name=str(self.directory / "checkpoint"))[1]
        count = current if level == "entries" else hashes_at_level(current, int(level))
        wider = min(TILE_WIDTH, count - index * TILE_WIDTH)
        if wider > width:
            try:
                return tile_path(level, index, wider), wider, self._fetch(tile_path(level, index, wider),
                                                                          self._limit(level, wider))
            except PeerUnavailable as err:
                if err.status != 404:
                    raise
        raise LogError(f"{self.directory / relative} is missing (404): the log at size {self.size} needs it",
                       hint="the peer serves an incomplete log; monitor another copy")


def http_source(base_url: str, *, timeout: float = 10.0, max_tile_bytes: int = MAX_BUNDLE,
                timeouts: Timeouts | None = None) -> LogSource:
    """The log served by the peer at ``base_url`` as a monitor source named by its URL.

    ``timeout`` bounds each request (connect, each read, and the total); ``timeouts`` overrides
    it in detail. The note and the tree are the same checkpoint: the tree is loaded from the note."""
    peer = Peer(base_url, timeouts=timeouts or Timeouts(connect=timeout, read=timeout, total=timeout))
    tree = HTTPTileLog(peer, max_tile_bytes=max_tile_bytes)
    return LogSource(peer.url, tree.note, tree)
