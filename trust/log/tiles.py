"""The log on disk, as C2SP tlog-tiles static files that any plain HTTP server can serve.

    checkpoint                     the signed tree head (bytes made by the signed-note code)
    tile/<L>/<N>                   a full hash tile: 256 hashes of 32 bytes (8,192 bytes)
    tile/<L>/<N>.p/<W>             a partial hash tile: the first W (1..255) of those hashes
    tile/entries/<N>[.p/<W>]       an entry bundle: big-endian uint16 length + bytes, per entry

``<N>`` is written in 3-digit groups, all but the last prefixed ``x`` (1234067 ->
``x001/x234/067``). Hash ``i`` of tile ``N`` at level ``L`` is the Merkle Tree Hash of the
``256**L`` entries starting at ``(N*256 + i) * 256**L``: level 0 holds leaf hashes, each level
above the roots of the full tiles below. So a tile level is 8 Merkle levels.

**The checkpoint is the commit point.** An append writes the new entry bundles, then the new hash
tiles level by level, then the checkpoint, each file atomically (temp file, fsync, rename,
fsync of the directory). Until the checkpoint is renamed the log is at its old size: every file
the old size needs is still there (full tiles and bundles never change, and a partial one is
never replaced, only joined by a wider one at another path). Afterwards it is at the new size.
Files an interrupted append left beyond the committed size are never read, and the next append
writes over every one it needs. A kill -9 anywhere leaves the log at the old or the new size.

**Partials go once the full tile is committed.** After the checkpoint, the append deletes the
partial versions of each tile and bundle that the new size has full (the spec allows it: a log
"MAY delete any partial tile once the corresponding full tile is available"), so a log grown one
entry at a time keeps at most 255 partials per level, not 255 per tile. A partial that a
checkpoint named stays until then. A reader still at an older size whose partial is gone reads
the first hashes of the tile at the width the current checkpoint names (never a wider file that
no checkpoint names: a killed append may have left one). A kill while deleting leaves partials of
a full tile, which are never read (the next append deletes those of the tile just before the
first one it writes at each level, which is where one-entry appends leave them).

The size is read from the checkpoint, whose body is C2SP tlog-checkpoint (origin line, decimal
tree size, base64 root hash), parsed by checkpoint.py's ``Checkpoint.parse``. :meth:`TileLog.append`
checks that the bytes its ``checkpoint`` callable returns name exactly the tree it was given, so a
checkpoint can never commit to a tree that is not on disk. The signature lines are the
signed-note code's business, not this file's.
"""

from __future__ import annotations

import fcntl
import struct
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from commonforge.errors import InputError
from registry import fsutil
from trust.log import merkle
from trust.log.checkpoint import Checkpoint, CheckpointError
from trust.log.merkle import HASH_SIZE, LogError

TILE_WIDTH = 256  # hashes (or entries) in a full tile
TILE_HEIGHT = 8  # Merkle levels per tile level: 256 = 2**8
MAX_ENTRY = 0xFFFF  # an entry's length must fit the bundle's uint16 prefix

Checkpointer = Callable[[int, bytes], bytes]  # (tree size, root hash) -> checkpoint bytes


def encode_index(n: int) -> str:
    """A tile index as the spec's path segments: 1234067 -> ``x001/x234/067``, 5 -> ``005``."""
    if n < 0:
        raise InputError(f"tile index {n} is negative")
    groups = [f"{n % 1000:03d}"]
    n //= 1000
    while n:
        groups.append(f"x{n % 1000:03d}")
        n //= 1000
    return "/".join(reversed(groups))


def tile_path(level: int | str, index: int, width: int = TILE_WIDTH) -> str:
    """``tile/<L>/<N>`` for a full tile, ``tile/<L>/<N>.p/<W>`` for a partial one; level
    ``"entries"`` gives the entry bundle's path."""
    if not 1 <= width <= TILE_WIDTH:
        raise InputError(f"tile width {width} is not between 1 and {TILE_WIDTH}")
    path = f"tile/{level}/{encode_index(index)}"
    return path if width == TILE_WIDTH else f"{path}.p/{width}"


def hashes_at_level(size: int, level: int) -> int:
    """How many hashes tile level ``level`` holds for a tree of ``size`` entries."""
    return size // TILE_WIDTH**level


def tiles_for_size(size: int) -> list[tuple[int, int, int]]:
    """Every hash tile a tree of ``size`` entries is served as: (level, index, width), bottom up.

    E.g. 256 entries: one full level-0 tile and a level-1 tile of width 1 (the spec's example).
    """
    tiles = []
    level = 0
    while (count := hashes_at_level(size, level)) > 0:
        tiles += [(level, n, TILE_WIDTH) for n in range(count // TILE_WIDTH)]
        if count % TILE_WIDTH:
            tiles.append((level, count // TILE_WIDTH, count % TILE_WIDTH))
        level += 1
    return tiles


def parse_checkpoint(data: bytes, *, name: str = "checkpoint") -> tuple[str, int, bytes]:
    """(origin, size, root) of the checkpoint note ``data``, parsed by checkpoint.py's parser.

    One parser for the format, so that the log never commits or reads a checkpoint its clients
    would refuse. The body ends at the first blank line (no checkpoint line may be empty); the
    signature lines after it are not read here (opening the note is the clients' business). A
    malformed checkpoint is a :class:`LogError` (exit 1): the log on disk does not check out.
    """
    cut = data.find(b"\n\n")
    body = data if cut < 0 else data[: cut + 1]
    try:
        cp = Checkpoint.parse(body)
    except CheckpointError as err:
        raise LogError(f"{name} is not a tlog-checkpoint (origin, size, base64 root): {err.message}") from None
    return cp.origin, cp.size, cp.root_hash


def encode_bundle(entries: list[bytes]) -> bytes:
    return b"".join(struct.pack(">H", len(e)) + e for e in entries)


def decode_bundle(data: bytes, width: int, name: str) -> list[bytes]:
    """The ``width`` entries of a bundle; anything short, left over or cut off is refused."""
    entries: list[bytes] = []
    pos = 0
    while pos < len(data):
        if pos + 2 > len(data):
            raise LogError(f"{name}: entry {len(entries)} has a cut-off length prefix at byte {pos}")
        (n,) = struct.unpack_from(">H", data, pos)
        if pos + 2 + n > len(data):
            raise LogError(f"{name}: entry {len(entries)} claims {n} bytes, only {len(data) - pos - 2} are left")
        entries.append(data[pos + 2 : pos + 2 + n])
        pos += 2 + n
    if len(entries) != width:
        raise LogError(f"{name} holds {len(entries)} entries, the tree needs {width}")
    return entries


class TileLog:
    """A tlog-tiles log in ``directory``, at the size of its checkpoint (0 without one)."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self._cache: dict[str, list[bytes]] = {}
        self._load_checkpoint()

    def _load_checkpoint(self) -> None:
        path = self.directory / "checkpoint"
        self._cache.clear()
        if not path.exists():
            self.size, self.checkpoint_root = 0, merkle.EMPTY_ROOT
            return
        _, self.size, self.checkpoint_root = parse_checkpoint(path.read_bytes(), name=str(path))

    # --- reading ------------------------------------------------------------------------------

    def _read_tile(self, level: int | str, index: int, width: int) -> tuple[str, int, bytes]:
        """(path, width, bytes) of tile ``index`` at ``level`` (``"entries"``: the bundle) at
        ``width``, or of a wider version of it, whose first ``width`` hashes or entries are the same.

        A wider one is read when an append since this reader loaded its checkpoint made the tile
        full and pruned its partials (see :meth:`_prune`). Only the width that the
        log's current checkpoint names is read: a wider partial that no checkpoint names may hold
        the entries of an append that was killed before it committed.
        """
        relative = tile_path(level, index, width)
        try:
            return relative, width, (self.directory / relative).read_bytes()
        except FileNotFoundError:
            if width == TILE_WIDTH:  # full tiles are never removed
                raise LogError(f"{self.directory / relative} is missing: the log at size {self.size} needs it") from None
        for _ in range(3):  # each try reads the newest checkpoint; appends can prune again meanwhile
            checkpoint = self.directory / "checkpoint"
            try:
                _, current, _ = parse_checkpoint(checkpoint.read_bytes(), name=str(checkpoint))
            except FileNotFoundError:
                break
            count = current if level == "entries" else hashes_at_level(current, int(level))
            wider = min(TILE_WIDTH, count - index * TILE_WIDTH)
            if wider <= width:
                break
            try:
                return tile_path(level, index, wider), wider, (self.directory / tile_path(level, index, wider)).read_bytes()
            except FileNotFoundError:
                continue
        raise LogError(f"{self.directory / relative} is missing: the log at size {self.size} needs it")

    def _tile(self, level: int, index: int, size: int | None = None) -> list[bytes]:
        """The hashes of tile ``index`` at ``level`` as the tree of ``size`` (default: the
        committed size) has it: the full tile, or the partial one of the right width."""
        count = hashes_at_level(self.size if size is None else size, level)
        width = min(TILE_WIDTH, count - index * TILE_WIDTH)
        if width <= 0:
            raise InputError(f"tile {index} at level {level} is beyond the log's size {self.size}")
        relative = tile_path(level, index, width)
        if relative not in self._cache:
            read, read_width, data = self._read_tile(level, index, width)
            if len(data) != read_width * HASH_SIZE:
                kind = "truncated" if len(data) < read_width * HASH_SIZE else "oversize"
                raise LogError(
                    f"{self.directory / read} is {kind}: {len(data)} bytes, a tile of {read_width} hashes has "
                    f"{read_width * HASH_SIZE}"
                )
            self._cache[relative] = [data[i : i + HASH_SIZE] for i in range(0, width * HASH_SIZE, HASH_SIZE)]
        return self._cache[relative]

    def _bundle(self, index: int, size: int | None = None) -> list[bytes]:
        count = self.size if size is None else size
        width = min(TILE_WIDTH, count - index * TILE_WIDTH)
        if width <= 0:
            raise InputError(f"entry bundle {index} is beyond the log's size {self.size}")
        read, read_width, data = self._read_tile("entries", index, width)
        return decode_bundle(data, read_width, str(self.directory / read))[:width]

    def read_entry(self, index: int) -> bytes:
        """Entry ``index``, checked against its leaf hash in the level-0 tile."""
        if not 0 <= index < self.size:
            raise InputError(f"no entry {index} in the log ({self.size} entries)", hint="indices run from 0 to size - 1")
        bundle, i = divmod(index, TILE_WIDTH)
        entry = self._bundle(bundle)[i]
        if merkle.leaf_hash(entry) != self._tile(0, bundle)[i]:
            raise LogError(
                f"entry {index} in {self.directory / tile_path('entries', bundle, self._width(bundle))} does not "
                f"hash to leaf {i} of {self.directory / tile_path(0, bundle, self._width(bundle))}"
            )
        return entry

    def _width(self, index: int, level: int = 0) -> int:
        return min(TILE_WIDTH, hashes_at_level(self.size, level) - index * TILE_WIDTH)

    def hash_at(self, level: int, index: int) -> bytes:
        """The hash of the full subtree of ``2**level`` entries starting at ``index * 2**level``
        (level 0: a leaf hash), read from the tile that holds it or hashed up inside one."""
        if level < 0 or index < 0 or (index + 1) << level > self.size:
            raise InputError(f"no full subtree at level {level}, index {index} in the log ({self.size} entries)")
        tile_level, within = divmod(level, TILE_HEIGHT)
        # A subtree `within` levels above tile level L is the MTH of 2**within adjacent hashes there.
        first = index << within
        tile = self._tile(tile_level, first // TILE_WIDTH)
        offset = first % TILE_WIDTH
        return merkle.root(tile[offset : offset + (1 << within)])

    def root(self, size: int | None = None) -> bytes:
        size = self.size if size is None else size
        self._check_size(size)
        return merkle.tree_root(size, self.hash_at)

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        size = self.size if size is None else size
        self._check_size(size)
        return merkle.inclusion_proof(index, size, self.hash_at)

    def consistency_proof(self, old: int, new: int | None = None) -> list[bytes]:
        new = self.size if new is None else new
        self._check_size(new)
        return merkle.consistency_proof(old, new, self.hash_at)

    def _check_size(self, size: int) -> None:
        if not 0 <= size <= self.size:
            raise InputError(f"the log has {self.size} entries, not {size}", hint="ask for a size the checkpoint covers")

    def entries(self, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        """Entries ``start`` to ``end`` (default: the size), a bundle at a time (not re-hashed:
        :meth:`verify` does that)."""
        end = self.size if end is None else end
        self._check_size(end)
        for bundle in range(start // TILE_WIDTH, -(-end // TILE_WIDTH)):
            for i, entry in enumerate(self._bundle(bundle), bundle * TILE_WIDTH):
                if start <= i < end:
                    yield entry

    def verify(self) -> None:
        """Re-derive every tile from the entry bundles and the root from the tiles; compare
        with what is on disk and with the checkpoint. Raises :class:`LogError` naming the file."""
        leaves = [merkle.leaf_hash(e) for e in self.entries()]
        below, level = leaves, 0
        while below:
            for n in range(-(-len(below) // TILE_WIDTH)):
                expected = below[n * TILE_WIDTH : (n + 1) * TILE_WIDTH]
                if self._tile(level, n) != expected:
                    relative = tile_path(level, n, len(expected))
                    source = "the entries" if level == 0 else f"the level-{level - 1} tiles"
                    raise LogError(f"{self.directory / relative} does not match {source}")
            below = [merkle.root(below[i : i + TILE_WIDTH]) for i in range(0, len(below) - TILE_WIDTH + 1, TILE_WIDTH)]
            level += 1
        computed = merkle.root(leaves)
        if computed != self.checkpoint_root:
            raise LogError(
                f"{self.directory / 'checkpoint'} names root {self.checkpoint_root.hex()}, the entries hash to {computed.hex()}"
            )

    # --- appending ----------------------------------------------------------------------------

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """One writer at a time (an operator running two appends at once would fork the log)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        with open(self.directory / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def append(self, entries: list[bytes], checkpoint: Checkpointer) -> tuple[int, bytes]:
        """Add ``entries`` and commit them with the checkpoint ``checkpoint(new_size, root)``
        returns; returns (new size, root). Crash-safe: see the module's docstring."""
        for i, entry in enumerate(entries):
            if not isinstance(entry, bytes):
                raise InputError(f"entry {i} is {type(entry).__name__}, not bytes")
            if len(entry) > MAX_ENTRY:
                raise InputError(
                    f"entry {i} is {len(entry)} bytes; an entry bundle holds at most {MAX_ENTRY}",
                    hint="log the statement's hash and store the statement beside the log",
                )
        with self._locked():
            self._load_checkpoint()  # another process may have appended since we opened
            old = self.size
            new = old + len(entries)
            if not entries:
                return old, self.root()

            # Entry bundles: the old partial bundle's entries (if any), then the new ones.
            first_bundle = old // TILE_WIDTH
            carried = self._bundle(first_bundle) if old % TILE_WIDTH else []
            pending = carried + list(entries)
            touched: list[tuple[int | str, int]] = [("entries", first_bundle - 1)] if first_bundle else []
            for n, start in enumerate(range(0, len(pending), TILE_WIDTH), first_bundle):
                chunk = pending[start : start + TILE_WIDTH]
                _write(self.directory / tile_path("entries", n, len(chunk)), encode_bundle(chunk))
                touched.append(("entries", n))

            # Hash tiles, level by level: the new hashes at level L are the leaf hashes (L = 0)
            # or the roots of the level-(L-1) tiles that this append made full.
            fresh = [merkle.leaf_hash(e) for e in entries]
            level = 0
            while fresh:
                before = hashes_at_level(old, level)
                first_tile = before // TILE_WIDTH
                carried = self._tile(level, first_tile, old) if before % TILE_WIDTH else []
                pending = carried + fresh
                fresh = []
                touched += [(level, first_tile - 1)] if first_tile else []
                for n, start in enumerate(range(0, len(pending), TILE_WIDTH), first_tile):
                    chunk = pending[start : start + TILE_WIDTH]
                    _write(self.directory / tile_path(level, n, len(chunk)), b"".join(chunk))
                    touched.append((level, n))
                    if len(chunk) == TILE_WIDTH:
                        fresh.append(merkle.root(chunk))
                level += 1

            # The commit point.
            self.size = new  # reads below see the new tiles; reverted if the checkpoint is refused
            self._cache.clear()
            try:
                new_root = self.root(new)
                note = checkpoint(new, new_root)
                _, named_size, named_root = parse_checkpoint(note, name="the checkpoint to commit")
                if (named_size, named_root) != (new, new_root):
                    raise LogError(
                        f"the checkpoint to commit names size {named_size} and root {named_root.hex()}; "
                        f"the log on disk is size {new} with root {new_root.hex()}"
                    )
                _write(self.directory / "checkpoint", note)
            finally:
                self._load_checkpoint()
            self._prune(touched)
            return new, new_root

    def _prune(self, touched: list[tuple[int | str, int]]) -> None:
        """Remove the partial versions of the tiles and bundles in ``touched`` that are full at the
        committed size. tlog-tiles: a log "MAY delete any partial tile once the corresponding full
        tile is available". Without it a log grown one entry at a time keeps up to 255 partials of
        every tile and bundle (benchmarks/log_scale.py: 79 MB of partial bundles after 1,000 appends,
growing with the square of the bundle width); with it, only those of the rightmost ones.

        Runs after the checkpoint is committed, so the full tile is on disk and named by it; a
        reader still at an older size reads the full tile's first hashes instead (:meth:`_read_tile`).
        A kill half-way leaves some partials of a full tile, which are never read; the next append
        prunes again the tile before the first one it writes at each level (``touched`` has it).
        """
        for level, index in touched:
            count = self.size if level == "entries" else hashes_at_level(self.size, int(level))
            if count < (index + 1) * TILE_WIDTH:
                continue  # still partial: every width a checkpoint named must stay served
            partials = self.directory / f"{tile_path(level, index)}.p"
            if not partials.is_dir():
                continue
            for path in sorted(partials.iterdir()):
                _remove(path)
            try:
                partials.rmdir()
            except OSError:  # a file appeared or could not be removed: the next prune tries again
                pass


def _remove(path: Path) -> None:
    """Every file pruned goes through here (the kill tests kill the process at each one)."""
    path.unlink(missing_ok=True)


def _write(path: Path, data: bytes) -> None:
    """Every file of the log goes through here: atomic (temp, fsync, rename, fsync the directory)."""
    missing = [d for d in (path.parent, *path.parent.parents) if not d.exists()]
    for directory in reversed(missing):  # make each new directory's name durable too
        directory.mkdir(exist_ok=True)
        fsutil.fsync_dir(directory.parent)
    fsutil.atomic_write_bytes(path, data)
