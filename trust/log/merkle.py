"""The log's Merkle tree: RFC 9162 (= RFC 6962) Merkle Tree Hash over SHA-256, and its proofs.

    leaf hash   H(0x00 || entry)
    node hash   H(0x01 || left || right)
    MTH(D[n])   H("") for n = 0; the leaf hash for n = 1; otherwise the node hash of
                MTH(D[0:k]) and MTH(D[k:n]), k the largest power of two smaller than n

Proofs are *built* from stored hashes of full subtrees, never from all leaves in memory:
``hash_at(level, index)`` returns the hash of the perfect subtree of ``2**level`` leaves that
starts at leaf ``index * 2**level`` (level 0: the leaf hashes). The tile store (tiles.py) answers
it from its tiles; :func:`hashes_from_leaves` answers it from a list, for tests and small trees.

Proofs are *verified* with the bit-twiddling algorithms of RFC 9162 §2.1.3.2 (inclusion) and
§2.1.4.2 (consistency), step for step, so that a proof we accept is one every other RFC 9162
client accepts too. Failure is a :class:`LogError` that says what was wrong.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence

from commonforge.errors import InputError, VerificationError

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()  # MTH of the empty tree

HashAt = Callable[[int, int], bytes]  # (level, index) -> hash of a full subtree


class LogError(VerificationError):
    """The transparency log does not check out: a proof that does not verify, a tile or entry
    bundle that is truncated, oversize or does not match its entries, a checkpoint that does not
    name the tree it was made for."""


def leaf_hash(entry: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + entry).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def split_point(n: int) -> int:
    """The largest power of two smaller than ``n`` (n >= 2): where MTH splits D[n]."""
    return 1 << ((n - 1).bit_length() - 1)


def root(leaf_hashes: Sequence[bytes]) -> bytes:
    """MTH over the given leaf hashes.

    Computed level by level, pairing neighbours and carrying an odd last node up unchanged:
    the same tree as the RFC's recursive split, without recursion or slicing.
    """
    level = list(leaf_hashes)
    if not level:
        return EMPTY_ROOT
    while len(level) > 1:
        paired = [node_hash(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            paired.append(level[-1])
        level = paired
    return level[0]


def hashes_from_leaves(leaf_hashes: Sequence[bytes]) -> HashAt:
    """A ``hash_at`` over an in-memory list of leaf hashes (every full subtree, computed once)."""
    levels = [list(leaf_hashes)]
    while len(levels[-1]) > 1:
        below = levels[-1]
        levels.append([node_hash(below[i], below[i + 1]) for i in range(0, len(below) - 1, 2)])

    def hash_at(level: int, index: int) -> bytes:
        if level >= len(levels) or index >= len(levels[level]):
            raise InputError(f"no full subtree at level {level}, index {index} in a tree of {len(leaf_hashes)}")
        return levels[level][index]

    return hash_at


def subtree_hash(start: int, end: int, hash_at: HashAt) -> bytes:
    """MTH(D[start:end]) for a range that starts on a subtree boundary of the tree (as every range
    of a proof does): a full aligned subtree is read, anything else split as the RFC splits it."""
    n = end - start
    if n <= 0:
        return EMPTY_ROOT
    level = n.bit_length() - 1
    if n == 1 << level and start % n == 0:
        return hash_at(level, start >> level)
    k = split_point(n)
    return node_hash(subtree_hash(start, start + k, hash_at), subtree_hash(start + k, end, hash_at))


def tree_root(size: int, hash_at: HashAt) -> bytes:
    """MTH of the first ``size`` entries, from stored full-subtree hashes (log2(size) reads)."""
    return subtree_hash(0, size, hash_at)


def inclusion_proof(index: int, size: int, hash_at: HashAt) -> list[bytes]:
    """PATH(index, D[size]) of RFC 9162 §2.1.3.1: the audit path of entry ``index``, leaf first."""
    if not 0 <= index < size:
        raise InputError(f"no entry {index} in a tree of {size} entries", hint="indices run from 0 to size - 1")
    path: list[bytes] = []
    start, end = 0, size  # the subtree D[start:end] that holds the entry
    while end - start > 1:
        k = split_point(end - start)
        if index < start + k:
            path.append(subtree_hash(start + k, end, hash_at))
            end = start + k
        else:
            path.append(subtree_hash(start, start + k, hash_at))
            start += k
    path.reverse()  # built from the root down; the proof runs from the leaf up
    return path


def consistency_proof(old_size: int, new_size: int, hash_at: HashAt) -> list[bytes]:
    """PROOF(old_size, D[new_size]) of RFC 9162 §2.1.4.1; empty when old_size is 0 or new_size."""
    if not 0 <= old_size <= new_size:
        raise InputError(
            f"no consistency proof from size {old_size} to size {new_size}",
            hint="the old size must be between 0 and the new size",
        )
    if old_size in (0, new_size):
        return []
    # SUBPROOF(m, D[start:end], b), unrolled: descend while m != n, then add MTH(D[m]) unless b.
    path: list[bytes] = []
    m, start, end, whole = old_size, 0, new_size, True
    while m != end - start:
        k = split_point(end - start)
        if m <= k:
            path.append(subtree_hash(start + k, end, hash_at))
            end = start + k
        else:
            path.append(subtree_hash(start, start + k, hash_at))
            m -= k
            start += k
            whole = False
    if not whole:
        path.append(subtree_hash(start, end, hash_at))
    path.reverse()
    return path


def _check_hash(value: bytes, what: str) -> None:
    if not isinstance(value, bytes | bytearray) or len(value) != HASH_SIZE:
        raise LogError(f"{what} is not a {HASH_SIZE}-byte SHA-256 hash (got {_show(value)})")


def _show(value: object) -> str:
    if isinstance(value, bytes | bytearray):
        return f"{len(value)} bytes {bytes(value[:8]).hex()}…" if len(value) > 8 else f"{len(value)} bytes {bytes(value).hex()}"
    return type(value).__name__


def verify_inclusion(leaf_hash: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes) -> None:
    """RFC 9162 §2.1.3.2: does ``proof`` lead from entry ``index``'s leaf hash to ``root``?

    Returns None when it does; raises :class:`LogError` saying why not otherwise.
    """
    _check_hash(leaf_hash, "the leaf hash")
    _check_hash(root, "the root hash")
    for i, p in enumerate(proof):
        _check_hash(p, f"inclusion proof element {i}")
    where = f"entry {index} in a tree of {size}"
    if not 0 <= index < size:
        raise LogError(f"inclusion proof for {where}: the index is not inside the tree")
    fn, sn = index, size - 1
    r = leaf_hash
    for p in proof:
        if sn == 0:
            raise LogError(f"inclusion proof for {where} is too long ({len(proof)} hashes)")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while not (fn & 1 or fn == 0):
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise LogError(f"inclusion proof for {where} is too short ({len(proof)} hashes)")
    if r != root:
        raise LogError(f"inclusion proof for {where} leads to root {r.hex()}, not to {bytes(root).hex()}")


def verify_consistency(old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]) -> None:
    """RFC 9162 §2.1.4.2: is the tree of ``new_size`` with ``new_root`` an extension of the tree of
    ``old_size`` with ``old_root``? Returns None when it is; raises :class:`LogError` otherwise.

    Trivial cases first: equal sizes need equal roots and an empty proof; from the empty tree
    every tree is consistent, given the empty tree's root H("") and an empty proof.
    """
    _check_hash(old_root, "the old root")
    _check_hash(new_root, "the new root")
    for i, p in enumerate(proof):
        _check_hash(p, f"consistency proof element {i}")
    where = f"from size {old_size} to size {new_size}"
    if not 0 <= old_size <= new_size:
        raise LogError(f"consistency {where}: the new tree is smaller than the old one (a rollback)")
    if old_size == new_size:
        if proof:
            raise LogError(f"consistency {where}: the proof must be empty for equal sizes ({len(proof)} hashes)")
        if old_root != new_root:
            raise LogError(
                f"two different roots for the same size {old_size}: {bytes(old_root).hex()} and {bytes(new_root).hex()}"
            )
        return
    if old_size == 0:
        if proof:
            raise LogError(f"consistency {where}: the proof from the empty tree must be empty ({len(proof)} hashes)")
        if old_root != EMPTY_ROOT:
            raise LogError(f"consistency {where}: the root of the empty tree is {EMPTY_ROOT.hex()}, not {bytes(old_root).hex()}")
        return
    if not proof:
        raise LogError(f"consistency proof {where} is empty")
    path = list(proof)
    if old_size & (old_size - 1) == 0:  # the old tree is a full subtree: its root is the start
        path.insert(0, old_root)
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise LogError(f"consistency proof {where} is too long ({len(proof)} hashes)")
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while not (fn & 1 or fn == 0):
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise LogError(f"consistency proof {where} is too short ({len(proof)} hashes)")
    if fr != old_root:
        raise LogError(f"consistency proof {where} leads to old root {fr.hex()}, not to {bytes(old_root).hex()}")
    if sr != new_root:
        raise LogError(f"consistency proof {where} leads to new root {sr.hex()}, not to {bytes(new_root).hex()}")
