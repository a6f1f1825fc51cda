"""The log against independent implementations: its Merkle tree against pymerkle's (PyPI, RFC 9162
hashing: SHA-256, 0x00 leaf and 0x01 node prefixes).

Our proofs are the RFC's (audit path leaf first, consistency proof as RFC 9162 §2.1.4.1);
pymerkle's inclusion proof is the same audit path behind the leaf hash, with a "rule" of
left/right bits that its verifier recomputes from (index, size) and insists on. Its consistency
proof is not the RFC's: it is the path from leaf ``old`` to the new root, whose left siblings
fold into the old root (so 4 hashes from size 4 to 8, where the RFC's proof is 1), and neither
proof can be turned into the other without hashes it lacks. So the consistency checks are: each
side's proof verifies against the other side's roots; a proof in pymerkle's layout made of the
hashes stored in our tiles verifies with pymerkle; and an RFC proof made of pymerkle's subtree
hashes is byte for byte ours and verifies with ours. The RFC's own consistency proofs are
checked against the published RFC 6962 vectors in test_merkle.py.
"""

from __future__ import annotations

from typing import Any

import pytest

from trust.log import checkpoint as ck
from trust.log import merkle
from trust.log.merkle import LogError
from trust.log.tiles import TileLog

pymerkle = pytest.importorskip("pymerkle", reason="pymerkle (the dev extra) is not installed: make venv")
from pymerkle.core import _consistency_path_layout  # noqa: E402  (the layout pymerkle's verifier checks)

ORIGIN = "example.org/interop-log"
SMALL = range(1, 71)  # every size up to 70: every shape of a small tree
BIG = (127, 128, 129, 255, 256, 257, 300, 511, 512, 513, 1000, 1024, 1025, 1100)  # across tile edges
SIZES = (*SMALL, *BIG)


def entry(i: int) -> bytes:
    return f"interop statement {i} ".encode() * (i % 4)  # entry 0 is empty


def _checkpoint(size: int, root: bytes) -> bytes:
    return ck.Checkpoint(ORIGIN, size, root).body() + b"\n\xe2\x80\x94 " + ORIGIN.encode() + b" AAAAAAAA\n"


@pytest.fixture(scope="module")
def trees(tmp_path_factory: pytest.TempPathFactory) -> tuple[TileLog, Any]:
    """Our on-disk log and pymerkle's in-memory tree over the same 1,100 entries. The log is grown
    one entry at a time to 70, then in uneven batches, so that old sizes are read from newer tiles."""
    log = TileLog(tmp_path_factory.mktemp("interop") / "log")
    for i in range(70):
        log.append([entry(i)], _checkpoint)
    for end in (200, 256, 257, 700, 1024, 1100):
        log.append([entry(i) for i in range(log.size, end)], _checkpoint)
    theirs = pymerkle.InmemoryTree(algorithm="sha256")
    theirs.append_entries([entry(i) for i in range(1100)])
    return TileLog(log.directory), theirs


def _flip(proof: list[bytes], at: int) -> list[bytes]:
    bad = list(proof)
    bad[at] = bytes([bad[at][0] ^ 1]) + bad[at][1:]
    return bad


def _indices(size: int) -> list[int]:
    if size <= 70:
        return list(range(size))
    return sorted({0, 1, size // 3, size // 2, size - 2, size - 1, 255 % size, 256 % size})


def _old_sizes(new: int) -> list[int]:
    if new <= 70:
        return list(range(1, new + 1))
    return sorted({1, 2, 3, 64, 70, new // 2, new - 1, new} | {s for s in BIG if s < new})


def _their_hash_at(theirs: Any) -> merkle.HashAt:
    """pymerkle's own hash of the perfect subtree of 2**level leaves at index (its subroot cache)."""
    return lambda level, index: theirs._get_subroot(index << level, 1 << level)


@pytest.mark.parametrize("size", SIZES)
def test_roots_equal_pymerkles(trees, size: int) -> None:
    log, theirs = trees
    assert log.root(size) == theirs.get_root(size)
    assert merkle.root([theirs.get_leaf(i + 1) for i in range(size)]) == theirs.get_root(size)


@pytest.mark.parametrize("size", SIZES)
def test_inclusion_proofs_verify_both_ways(trees, size: int) -> None:
    log, theirs = trees
    root = theirs.get_root(size)
    for index in _indices(size):
        leaf = merkle.leaf_hash(entry(index))
        ours = log.inclusion_proof(index, size)
        made = theirs.prove_inclusion(index + 1, size)  # pymerkle counts leaves from one
        assert made.path == [leaf, *ours]  # the same audit path, behind the leaf hash

        # (b) ours, in pymerkle's format (its rule bits for this index and size), with its verifier
        converted = pymerkle.InclusionProof("sha256", True, size, index + 1, made.rule, [leaf, *ours])
        pymerkle.verify_inclusion(leaf, root, converted, index=index + 1, size=size, algorithm="sha256")
        # (c) pymerkle's, with ours
        merkle.verify_inclusion(made.path[0], index, size, made.path[1:], log.root(size))

        # (d) a tampered proof fails in both
        for at in {0, len(ours) // 2, len(ours) - 1} if ours else set():
            bad = _flip(ours, at)
            with pytest.raises(pymerkle.InvalidProof):
                pymerkle.verify_inclusion(
                    leaf, root, pymerkle.InclusionProof("sha256", True, size, index + 1, made.rule, [leaf, *bad])
                )
            with pytest.raises(LogError):
                merkle.verify_inclusion(leaf, index, size, bad, root)
        other = merkle.leaf_hash(entry(index) + b"!")  # another entry's leaf with the right path
        with pytest.raises(pymerkle.InvalidProof):
            pymerkle.verify_inclusion(other, root, converted)
        with pytest.raises(LogError):
            merkle.verify_inclusion(other, index, size, ours, root)


@pytest.mark.parametrize("new", SIZES)
def test_consistency_proofs_verify_both_ways(trees, new: int) -> None:
    log, theirs = trees
    new_root = theirs.get_root(new)
    for old in _old_sizes(new):
        old_root = theirs.get_root(old)
        ours = log.consistency_proof(old, new)
        made = theirs.prove_consistency(old, new)

        # Each side's proof against the other side's roots.
        merkle.verify_consistency(old, new, old_root, new_root, ours)
        pymerkle.verify_consistency(log.root(old), log.root(new), made, prior_size=old, later_size=new)

        # (b) the hashes stored in our tiles, laid out as pymerkle proves, verify with pymerkle.
        rule, subset, ranges = _consistency_path_layout(old, new)
        from_tiles = [merkle.subtree_hash(start, end, log.hash_at) for start, end in ranges]
        assert from_tiles == made.path
        laid_out = pymerkle.ConsistencyProof("sha256", True, new, old, rule, subset, from_tiles)
        pymerkle.verify_consistency(old_root, new_root, laid_out, prior_size=old, later_size=new)

        # (c) pymerkle's subtree hashes, laid out as the RFC proves, are our proof and verify with ours.
        from_pymerkle = merkle.consistency_proof(old, new, _their_hash_at(theirs))
        assert from_pymerkle == ours
        merkle.verify_consistency(old, new, log.root(old), log.root(new), from_pymerkle)

        # (d) a tampered proof fails in both.
        for at in {0, len(ours) - 1} if ours else set():
            with pytest.raises(LogError):
                merkle.verify_consistency(old, new, old_root, new_root, _flip(ours, at))
        for at in {0, len(made.path) - 1}:
            bad = pymerkle.ConsistencyProof("sha256", True, new, old, rule, subset, _flip(made.path, at))
            with pytest.raises(pymerkle.InvalidProof):
                pymerkle.verify_consistency(old_root, new_root, bad)
        if old < new:  # a forked log: the same old size, another old root
            forked = merkle.root([merkle.leaf_hash(entry(i) + b"!") for i in range(old)])
            with pytest.raises(LogError):
                merkle.verify_consistency(old, new, forked, new_root, ours)
            with pytest.raises(pymerkle.InvalidProof):
                pymerkle.verify_consistency(forked, new_root, made)

