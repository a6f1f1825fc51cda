"""The tile store: the spec's paths, roots and proofs equal to the in-memory tree whatever the
batches, damaged files refused by name, and a kill -9 at every write of an append."""

from __future__ import annotations

import base64
import os
import shutil
import signal
from pathlib import Path

import pytest

from registry import fsutil
from trust.log import merkle, tiles
from trust.log.merkle import LogError
from trust.log.tiles import TileLog

ORIGIN = "example.org/forge-log"


def checkpoint(size: int, root: bytes) -> bytes:
    """A tlog-checkpoint body with a stand-in signature line (signing is checkpoint.py's job)."""
    return f"{ORIGIN}\n{size}\n{base64.b64encode(root).decode()}\n\n— {ORIGIN} AAAA\n".encode()


def entry(i: int) -> bytes:
    return f"statement {i} ".encode() * (i % 5)  # entry 0 is empty, the rest 13..52 bytes


def test_paths_follow_the_spec() -> None:
    assert tiles.encode_index(0) == "000"
    assert tiles.encode_index(5) == "005"
    assert tiles.encode_index(1000) == "x001/000"
    assert tiles.encode_index(1234067) == "x001/x234/067"  # the spec's example
    assert tiles.tile_path(0, 1234067) == "tile/0/x001/x234/067"
    assert tiles.tile_path(1, 3, 17) == "tile/1/003.p/17"
    assert tiles.tile_path("entries", 0, 5) == "tile/entries/000.p/5"
    with pytest.raises(ValueError, match="width 0"):
        tiles.tile_path(0, 0, 0)


def test_tiles_for_size_match_the_spec_examples() -> None:
    # "a tree of size 70,000 will be represented by 273 full level 0 tiles, one partial level 0 tile
    # of width 112, one full level 1 tile, one partial level 1 tile of width 17, and one partial
    # level 2 tile of width 1"; "a tree of size 256 [by] a full level 0 tile and a partial level 1
    # tile of width 1"
    t = tiles.tiles_for_size(70_000)
    assert t[:273] == [(0, n, 256) for n in range(273)]
    assert t[273:] == [(0, 273, 112), (1, 0, 256), (1, 1, 17), (2, 0, 1)]
    assert tiles.tiles_for_size(256) == [(0, 0, 256), (1, 0, 1)]
    assert tiles.tiles_for_size(0) == []


def _check_log(log: TileLog, size: int) -> None:
    """The log on disk is the tree of entries 0..size-1: files, root, entries, proofs."""
    leaves = [merkle.leaf_hash(entry(i)) for i in range(size)]
    expected_files = {tiles.tile_path(level, n, w) for level, n, w in tiles.tiles_for_size(size)}
    expected_files |= {tiles.tile_path("entries", n, min(256, size - 256 * n)) for n in range(-(-size // 256))}
    assert all((log.directory / f).is_file() for f in expected_files), "a file the spec needs is missing"
    assert log.size == size
    root = log.root()
    assert root == merkle.root(leaves) == log.checkpoint_root
    log.verify()
    in_memory = merkle.hashes_from_leaves(leaves)
    for level in range(size.bit_length()):  # every level, the 7 inside each tile included
        for index in (0, (size >> level) - 1):
            assert log.hash_at(level, index) == in_memory(level, index)
    for index in sorted({0, 1, 254, 255, 256, 257, size // 2, size - 2, size - 1} & set(range(size))):
        assert log.read_entry(index) == entry(index)
        merkle.verify_inclusion(leaves[index], index, size, log.inclusion_proof(index), root)
        assert log.inclusion_proof(index) == merkle.inclusion_proof(index, size, in_memory)


def test_appends_in_batches_equal_the_tree_of_all_entries(tmp_path: Path) -> None:
    log = TileLog(tmp_path / "log")
    assert log.size == 0 and log.root() == merkle.EMPTY_ROOT
    sizes, roots = [0], [merkle.EMPTY_ROOT]
    for total in (1, 255, 256, 257, 1000):  # across the tile edges, a level-1 tile included
        new_size, root = log.append([entry(i) for i in range(log.size, total)], checkpoint)
        assert new_size == total
        _check_log(TileLog(log.directory), total)  # a fresh reader, from the files alone
        for old, old_root in zip(sizes, roots, strict=True):
            merkle.verify_consistency(old, total, old_root, root, log.consistency_proof(old))
            assert log.root(old) == old_root  # older trees stay readable from the newer tiles
        sizes.append(total)
        roots.append(root)

    # One append of all 1000 entries writes the same full tiles, byte for byte.
    once = TileLog(tmp_path / "once")
    assert once.append([entry(i) for i in range(1000)], checkpoint) == (1000, roots[-1])
    for level, n, width in tiles.tiles_for_size(1000):
        path = tiles.tile_path(level, n, width)
        assert (once.directory / path).read_bytes() == (log.directory / path).read_bytes()
    assert (log.directory / "tile/1/000.p/3").stat().st_size == 3 * 32
    assert log.append([], checkpoint) == (1000, roots[-1])
    assert list(log.entries(998)) == [entry(998), entry(999)]


@pytest.fixture
def log300(tmp_path: Path) -> TileLog:
    log = TileLog(tmp_path / "log")
    log.append([entry(i) for i in range(300)], checkpoint)
    return log


@pytest.mark.parametrize(
    ("path", "damage", "message"),
    [
        ("tile/0/000", lambda b: b[:-1], "is truncated: 8191 bytes, a tile of 256 hashes has 8192"),
        ("tile/0/000", lambda b: b + b"\0", "is oversize: 8193 bytes"),
        ("tile/0/001.p/44", lambda b: b[:40], "is truncated: 40 bytes, a tile of 44 hashes has 1408"),
        ("tile/1/000.p/1", lambda b: b * 2, "is oversize: 64 bytes"),
    ],
)
def test_a_truncated_or_oversize_tile_is_refused_by_name(log300: TileLog, path: str, damage, message: str) -> None:
    target = log300.directory / path
    target.write_bytes(damage(target.read_bytes()))
    fresh = TileLog(log300.directory)
    with pytest.raises(LogError, match=message) as err:
        fresh.verify()
    assert str(target) in str(err.value)
    assert err.value.exit_code == 1


def test_a_missing_tile_is_named(log300: TileLog) -> None:
    (log300.directory / "tile/0/001.p/44").unlink()
    with pytest.raises(LogError, match=r"tile/0/001.p/44 is missing: the log at size 300 needs it"):
        TileLog(log300.directory).inclusion_proof(299)


def test_a_bundle_that_does_not_parse_is_named(log300: TileLog) -> None:
    bundle = log300.directory / "tile/entries/001.p/44"
    data = bundle.read_bytes()
    bundle.write_bytes(data[:-3])
    with pytest.raises(LogError, match=r"entries/001.p/44: entry 43 claims \d+ bytes, only \d+ are left"):
        TileLog(log300.directory).read_entry(299)
    bundle.write_bytes(data + b"\0")
    with pytest.raises(LogError, match="entries/001.p/44: entry 44 has a cut-off length prefix"):
        TileLog(log300.directory).read_entry(256)
    bundle.write_bytes(data + b"\0\0")
    with pytest.raises(LogError, match="entries/001.p/44 holds 45 entries, the tree needs 44"):
        TileLog(log300.directory).read_entry(256)


def test_tiles_that_do_not_match_the_entries_are_named(log300: TileLog) -> None:
    # A rewritten entry: the bundle parses, but no longer hashes to its leaf.
    bundle = log300.directory / "tile/entries/000"
    good = bundle.read_bytes()
    bundle.write_bytes(good.replace(b"statement 7 ", b"statement X "))
    fresh = TileLog(log300.directory)
    with pytest.raises(LogError, match=r"entry 7 in .*tile/entries/000 does not hash to leaf 7 of .*tile/0/000"):
        fresh.read_entry(7)
    with pytest.raises(LogError, match=r"tile/0/000 does not match the entries"):
        fresh.verify()
    bundle.write_bytes(good)
    # A level-1 hash that is not the root of the level-0 tile below it.
    level1 = log300.directory / "tile/1/000.p/1"
    level1.write_bytes(bytes(32))
    with pytest.raises(LogError, match=r"tile/1/000.p/1 does not match the level-0 tiles"):
        TileLog(log300.directory).verify()


def test_a_checkpoint_for_another_tree_is_not_committed(log300: TileLog) -> None:
    root = log300.root()
    with pytest.raises(LogError, match="names size 300 .* the log on disk is size 301"):
        log300.append([b"one more"], lambda size, _root: checkpoint(size - 1, root))
    with pytest.raises(LogError, match="is not a tlog-checkpoint"):
        log300.append([b"one more"], lambda size, root: b"unsigned\n")
    again = TileLog(log300.directory)
    assert (again.size, again.root()) == (300, root)
    again.verify()


def test_entries_too_long_for_a_bundle_are_refused(tmp_path: Path) -> None:
    log = TileLog(tmp_path)
    with pytest.raises(ValueError, match="entry 1 is 65536 bytes; an entry bundle holds at most 65535"):
        log.append([b"ok", bytes(65536)], checkpoint)
    assert log.append([bytes(65535)], checkpoint)[0] == 1
    assert TileLog(tmp_path).read_entry(0) == bytes(65535)


# --- kill -9 at every write ---------------------------------------------------------------------
# The append runs in a forked child process whose file writer (tiles._write, which every file of
# the log goes through) SIGKILLs the child at the k-th write: after it ("after": a whole file
# landed) or half-way through it ("during": a temp file half written, never renamed). A fork, not
# a new interpreter, so that 17 kills cost milliseconds; the parent's tiles._write is untouched.


def _crash(directory: Path, kill_at: int, mode: str, old: int, new: int) -> tuple[int, int]:
    """(the child's wait status, how many writes it made when it was not killed)."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        try:
            os.close(read_end)
            real_write, writes = tiles._write, [0]

            def write(path: Path, data: bytes) -> None:
                writes[0] += 1
                if writes[0] == kill_at and mode == "during":
                    path.parent.mkdir(parents=True, exist_ok=True)
                    with fsutil.temporary_file(path.parent, f".tmp-{path.name}.") as staged:
                        staged.file.write(data[: len(data) // 2])
                        staged.file.flush()
                        os.kill(os.getpid(), signal.SIGKILL)
                real_write(path, data)
                if writes[0] == kill_at:
                    os.kill(os.getpid(), signal.SIGKILL)

            tiles._write = write
            TileLog(directory).append([entry(i) for i in range(old, new)], checkpoint)
            os.write(write_end, str(writes[0]).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        written = pipe.read()
    _, status = os.waitpid(pid, 0)
    return status, int(written or 0)


def test_kill_9_at_every_write_leaves_the_old_or_the_new_log(tmp_path: Path) -> None:
    old, new = 250, 520  # the old partial tiles grow full, a new full and partial tile, level 1 grows
    base = TileLog(tmp_path / "base")
    base.append([entry(i) for i in range(old)], checkpoint)
    old_root = base.root()
    new_root = merkle.root([merkle.leaf_hash(entry(i)) for i in range(new)])

    # How many writes an uninterrupted append makes: 3 bundles, 3 level-0 tiles, 1 level-1 tile,
    # the checkpoint.
    clean = tmp_path / "clean"
    shutil.copytree(base.directory, clean)
    status, writes = _crash(clean, 0, "after", old, new)
    assert os.waitstatus_to_exitcode(status) == 0 and writes == 8
    assert TileLog(clean).root() == new_root

    for mode in ("after", "during"):
        for k in range(1, writes + 1):
            directory = tmp_path / f"{mode}-{k}"
            shutil.copytree(base.directory, directory)
            status, _ = _crash(directory, k, mode, old, new)
            assert os.waitstatus_to_exitcode(status) == -signal.SIGKILL, (mode, k)
            log = TileLog(directory)
            committed = mode == "after" and k == writes  # only the checkpoint's rename commits
            assert log.size == (new if committed else old), (mode, k)
            assert log.root() == (new_root if committed else old_root)
            log.verify()
            merkle.verify_inclusion(merkle.leaf_hash(entry(old - 1)), old - 1, log.size, log.inclusion_proof(old - 1), log.root())
            if not committed:  # the next append writes over whatever the killed one left
                assert log.append([entry(i) for i in range(old, new)], checkpoint) == (new, new_root)
                TileLog(directory).verify()
            merkle.verify_consistency(old, new, old_root, new_root, TileLog(directory).consistency_proof(old))


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda b: b.replace(b"\n300\n", b"\n0300\n"), "tree size '0300' is not a decimal"),
        (lambda b: b.replace(b"\n300\n", b"\n\n"), "body has 1 lines, at least 3 are needed"),
        (lambda b: b[:20], "body does not end in a newline"),
        (lambda b: b"\xff" + b, "not valid UTF-8"),
    ],
)
def test_a_damaged_checkpoint_file_fails_verification(log300: TileLog, damage, message: str) -> None:
    """checkpoint.py's parser reads the file; its refusal surfaces as a LogError (exit 1) naming the file."""
    path = log300.directory / "checkpoint"
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(LogError, match=message) as err:
        TileLog(log300.directory)
    assert f"{path} is not a tlog-checkpoint" in str(err.value)
    assert err.value.exit_code == 1


# --- pruning: the partials of a tile go once the full tile is committed ----------------------------


def _partial_widths(log: TileLog, level: int | str, index: int) -> set[int]:
    partials = log.directory / f"{tiles.tile_path(level, index)}.p"
    return {int(p.name) for p in partials.iterdir()} if partials.is_dir() else set()


def test_one_entry_appends_keep_only_the_partials_of_the_rightmost_tiles(tmp_path: Path) -> None:
    log = TileLog(tmp_path / "log")
    roots = [merkle.EMPTY_ROOT]
    for i in range(200):
        roots.append(log.append([entry(i)], checkpoint)[1])
    reader = TileLog(log.directory)  # a reader at size 200 that reads nothing until the log has grown
    for i in range(200, 300):
        roots.append(log.append([entry(i)], checkpoint)[1])

    # Tile 0 and bundle 0 are full: their 255 partials are gone. Every width of the rightmost
    # tiles that a checkpoint named is still served (the spec: a MUST until the tile is full).
    assert not (log.directory / "tile/0/000.p").exists() and not (log.directory / "tile/entries/000.p").exists()
    assert _partial_widths(log, 0, 1) == _partial_widths(log, "entries", 1) == set(range(1, 45))
    assert _partial_widths(log, 1, 0) == {1}
    _check_log(TileLog(log.directory), 300)

    # The reader at size 200 reads its tree from the full tile and bundle instead.
    assert reader.size == 200
    assert reader.root() == roots[200]
    reader.verify()
    assert reader.read_entry(199) == entry(199) and list(reader.entries(198)) == [entry(198), entry(199)]
    leaves = [merkle.leaf_hash(entry(i)) for i in range(200)]
    for index in (0, 100, 199):
        merkle.verify_inclusion(leaves[index], index, 200, reader.inclusion_proof(index), roots[200])
    fresh = TileLog(log.directory)
    for old in (1, 199, 200, 255, 256, 257, 299):
        merkle.verify_consistency(old, 300, roots[old], roots[300], fresh.consistency_proof(old))
        assert fresh.root(old) == roots[old]


def test_a_reader_does_not_read_a_wider_partial_no_checkpoint_names(log300: TileLog) -> None:
    """A reader whose partial is gone reads the width the current checkpoint names, never a wider
    file a killed append left (its extra hashes were never committed)."""
    reader = TileLog(log300.directory)
    (log300.directory / "tile/0/001.p/44").rename(log300.directory / "tile/0/001.p/45")
    with pytest.raises(LogError, match=r"tile/0/001.p/44 is missing: the log at size 300 needs it"):
        reader.inclusion_proof(299)


def _crash_pruning(directory: Path, kill_at: int, old: int, new: int) -> tuple[int, int]:
    """Like _crash, for tiles._remove: the child is killed just before its kill_at-th removal."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(read_end)
            real_remove, removals = tiles._remove, [0]

            def remove(path: Path) -> None:
                removals[0] += 1
                if removals[0] == kill_at:
                    os.kill(os.getpid(), signal.SIGKILL)
                real_remove(path)

            tiles._remove = remove
            TileLog(directory).append([entry(i) for i in range(old, new)], checkpoint)
            os.write(write_end, str(removals[0]).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        removed = pipe.read()
    _, status = os.waitpid(pid, 0)
    return status, int(removed or 0)


def test_kill_9_while_pruning_leaves_the_new_log_readable_at_every_size(tmp_path: Path) -> None:
    base = TileLog(tmp_path / "base")
    for i in range(255):
        base.append([entry(i)], checkpoint)
    old_root = base.root()
    new_root = merkle.root([merkle.leaf_hash(entry(i)) for i in range(256)])

    clean = tmp_path / "clean"
    shutil.copytree(base.directory, clean)
    status, removals = _crash_pruning(clean, 0, 255, 256)
    assert os.waitstatus_to_exitcode(status) == 0 and removals == 2 * 255  # bundle and tile partials 1..255

    for k in (1, 2, 128, 255, 256, 257, 400, removals):
        directory = tmp_path / f"kill-{k}"
        shutil.copytree(base.directory, directory)
        reader = TileLog(directory)  # opened at size 255, before the append
        status, _ = _crash_pruning(directory, k, 255, 256)
        assert os.waitstatus_to_exitcode(status) == -signal.SIGKILL, k
        log = TileLog(directory)  # the checkpoint was committed before any removal
        assert (log.size, log.root()) == (256, new_root), k
        log.verify()
        assert reader.root() == old_root, k  # from what is left: partials, or the full tile
        merkle.verify_inclusion(merkle.leaf_hash(entry(254)), 254, 255, reader.inclusion_proof(254), old_root)
        assert reader.read_entry(254) == entry(254)
        # The next append prunes what the killed one left, and the log still checks out.
        log.append([entry(256)], checkpoint)
        assert not (directory / "tile/0/000.p").exists() and not (directory / "tile/entries/000.p").exists(), k
        TileLog(directory).verify()
        merkle.verify_consistency(255, 257, old_root, TileLog(directory).root(), TileLog(directory).consistency_proof(255))
