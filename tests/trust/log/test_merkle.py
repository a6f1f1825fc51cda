"""The Merkle tree against the published RFC 6962 test vectors and against the RFC's recursive
definitions, and every proof of every tree up to 70 entries checked both ways: the honest one
verifies, no tampered one does."""

from __future__ import annotations

import functools
import hashlib
import random

import pytest

from trust.log import merkle
from trust.log.merkle import LogError

# --- The RFC 6962 test vectors of transparency-dev/merkle (Go), the ones certificate-transparency
# also uses: testonly/constants.go (LeafInputs, NodeHashes, RootHashes) and proof/verify_test.go
# (inclusionProofs, consistencyProofs). Leaf indices below are 0-based (verify_test.go's are 1-based).

LEAVES = [
    bytes.fromhex(h) for h in ("", "00", "10", "2021", "3031", "40414243", "5051525354555657", "606162636465666768696a6b6c6d6e6f")
]

NODE_HASHES = [  # [level][index], every full subtree of the 8-leaf tree
    [
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
        "0298d122906dcfc10892cb53a73992fc5b9f493ea4c9badb27b791b4127a7fe7",
        "07506a85fd9dd2f120eb694f86011e5bb4662e5c415a62917033d4a9624487e7",
        "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        "4271a26be0d8a84f0bd54c8c302e7cb3a3b5d1fa6780a40bcce2873477dab658",
        "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
        "46f6ffadd3d06a09ff3c5860d2755c8b9819db7df44251788c7d8e3180de8eb1",
    ],
    [
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
        "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
        "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
    ],
    [
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
    ],
    ["5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"],
]

ROOTS = [  # by tree size, 0 to 8
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]

INCLUSION = [  # (index, size, proof)
    (0, 1, []),
    (0, 8, ["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"]),
    (5, 8, ["bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"]),
    (2, 3, ["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"]),
    (1, 5, ["6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"]),
]  # fmt: skip

CONSISTENCY = [  # (old size, new size, proof)
    (1, 1, []),
    (1, 8, ["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"]),
    (6, 8, ["0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"]),
    (2, 5, ["5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"]),
    (6, 7, ["0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"]),
]  # fmt: skip

LEAF_HASHES = [merkle.leaf_hash(e) for e in LEAVES]
SOME_HASH = bytes.fromhex("abacaba000000000000000000000000000000000000000000060061e00123456")


def _hex(proof: list[bytes]) -> list[str]:
    return [p.hex() for p in proof]


def test_leaf_and_node_hashes_match_the_vectors() -> None:
    hash_at = merkle.hashes_from_leaves(LEAF_HASHES)
    for level, row in enumerate(NODE_HASHES):
        assert [hash_at(level, i).hex() for i in range(len(row))] == row
    assert merkle.node_hash(LEAF_HASHES[0], LEAF_HASHES[1]).hex() == NODE_HASHES[1][0]


@pytest.mark.parametrize("size", range(9))
def test_roots_match_the_vectors(size: int) -> None:
    assert merkle.root(LEAF_HASHES[:size]).hex() == ROOTS[size]
    assert merkle.tree_root(size, merkle.hashes_from_leaves(LEAF_HASHES[:size])).hex() == ROOTS[size]


@pytest.mark.parametrize(("index", "size", "proof"), INCLUSION)
def test_inclusion_proofs_match_the_vectors(index: int, size: int, proof: list[str]) -> None:
    built = merkle.inclusion_proof(index, size, merkle.hashes_from_leaves(LEAF_HASHES[:size]))
    assert _hex(built) == proof
    merkle.verify_inclusion(LEAF_HASHES[index], index, size, built, bytes.fromhex(ROOTS[size]))


@pytest.mark.parametrize(("old", "new", "proof"), CONSISTENCY)
def test_consistency_proofs_match_the_vectors(old: int, new: int, proof: list[str]) -> None:
    built = merkle.consistency_proof(old, new, merkle.hashes_from_leaves(LEAF_HASHES[:new]))
    assert _hex(built) == proof
    merkle.verify_consistency(old, new, bytes.fromhex(ROOTS[old]), bytes.fromhex(ROOTS[new]), built)


# --- The RFC's definitions, written out recursively (RFC 9162 §2.1.1, §2.1.3.1, §2.1.4.1), as an
# independent reference for the iterative code. Trees are tuples of entries (cached: the same
# subtrees come up again and again).


@functools.cache
def _mth(d: tuple[bytes, ...]) -> bytes:
    if not d:
        return hashlib.sha256(b"").digest()
    if len(d) == 1:
        return hashlib.sha256(b"\x00" + d[0]).digest()
    k = 1 << ((len(d) - 1).bit_length() - 1)
    return hashlib.sha256(b"\x01" + _mth(d[:k]) + _mth(d[k:])).digest()


def _path(m: int, d: tuple[bytes, ...]) -> list[bytes]:
    if len(d) <= 1:
        return []
    k = 1 << ((len(d) - 1).bit_length() - 1)
    return _path(m, d[:k]) + [_mth(d[k:])] if m < k else _path(m - k, d[k:]) + [_mth(d[:k])]


def _subproof(m: int, d: tuple[bytes, ...], b: bool) -> list[bytes]:
    if m == len(d):
        return [] if b else [_mth(d)]
    k = 1 << ((len(d) - 1).bit_length() - 1)
    return _subproof(m, d[:k], b) + [_mth(d[k:])] if m <= k else _subproof(m - k, d[k:], False) + [_mth(d[:k])]


def _rejected(call, *args) -> bool:
    try:
        call(*args)
    except LogError:
        return True
    return False


def _flip(proof: list[bytes], i: int) -> list[bytes]:
    tampered = list(proof)
    tampered[i] = bytes([tampered[i][0] ^ 8]) + tampered[i][1:]
    return tampered


def test_every_proof_up_to_70_entries_verifies_and_no_tampered_one_does() -> None:
    rng = random.Random(13)
    entries = tuple(rng.randbytes(rng.randrange(0, 40)) for _ in range(70))
    leaves = [merkle.leaf_hash(e) for e in entries]
    roots = [_mth(entries[:n]) for n in range(71)]
    for size in range(1, 71):
        hash_at = merkle.hashes_from_leaves(leaves[:size])
        assert merkle.root(leaves[:size]) == merkle.tree_root(size, hash_at) == roots[size]
        root = roots[size]
        for index in range(size):
            proof = merkle.inclusion_proof(index, size, hash_at)
            assert proof == _path(index, entries[:size])
            merkle.verify_inclusion(leaves[index], index, size, proof, root)
            v = merkle.verify_inclusion
            bad = [
                (leaves[index], index, size, proof, roots[size - 1]),  # another tree's root
                (SOME_HASH, index, size, proof, root),  # another entry
                (leaves[index], index, size, proof + [root], root),  # trailing hash
                (leaves[index], index, size, [root] + proof, root),  # leading hash
            ]
            bad += [(leaves[index], i, size, proof, root) for i in (index - 1, index + 1, index ^ 2) if i != index]
            # A wrong size, with the root of a tree of that size; with this root, as Go's tests do,
            # only size * 2 and size // 2 (size +- 1 with this root can verify: see below).
            bad += [(leaves[index], index, n, proof, roots[n]) for n in (size - 1, size + 1) if 0 < n <= 70]
            bad += [(leaves[index], index, n, proof, root) for n in (size * 2, size // 2)]
            bad += [(leaves[index], index, size, _flip(proof, i), root) for i in range(len(proof))]
            if proof:
                bad.append((leaves[index], index, size, proof[:-1], root))
            assert [args[1:3] for args in bad if not _rejected(v, *args)] == []
        for old in range(1, size):
            proof = merkle.consistency_proof(old, size, hash_at)
            assert proof == _subproof(old, entries[:size], True)
            merkle.verify_consistency(old, size, roots[old], root, proof)
            v = merkle.verify_consistency
            bad = [
                (old, size, root, roots[old], proof),  # swapped roots
                (old, size, roots[old - 1], root, proof),  # another old tree
                (old, size, roots[old], roots[size - 1], proof),  # another new tree
                (old, size, roots[old], root, []),
                (old, size, roots[old], root, proof + [root]),
                (old, size, roots[old], root, [proof[0]] + proof),
                (old, size, roots[old], root, proof[:-1]),
            ]
            bad += [(m, size, roots[old], root, proof) for m in (old - 1, old + 1, old ^ 2) if m != old]
            # A wrong new size, with that size's root; with this root, size +- 1 can verify (the
            # algorithm reads directions from the sizes; a checkpoint binds a root to its size).
            bad += [(old, n, roots[old], roots[n], proof) for n in (size - 1, size + 1) if old < n <= 70]
            bad += [(old, n, roots[old], root, proof) for n in (size * 2, size // 2) if n != size]
            bad += [(old, size, roots[old], root, _flip(proof, i)) for i in range(len(proof))]
            assert [args[:2] for args in bad if not _rejected(v, *args)] == []


def test_trivial_consistency_cases() -> None:
    empty, r1 = bytes.fromhex(ROOTS[0]), bytes.fromhex(ROOTS[1])
    merkle.verify_consistency(0, 0, empty, empty, [])
    merkle.verify_consistency(0, 5, empty, bytes.fromhex(ROOTS[5]), [])
    merkle.verify_consistency(1, 1, r1, r1, [])
    with pytest.raises(LogError, match="two different roots for the same size 1"):
        merkle.verify_consistency(1, 1, r1, empty, [])
    with pytest.raises(LogError, match="smaller than the old one"):
        merkle.verify_consistency(2, 1, r1, r1, [])
    with pytest.raises(LogError, match="must be empty"):
        merkle.verify_consistency(1, 1, r1, r1, [empty])
    with pytest.raises(LogError, match="root of the empty tree"):
        merkle.verify_consistency(0, 1, SOME_HASH, r1, [])
    with pytest.raises(LogError, match="is empty"):
        merkle.verify_consistency(1, 2, r1, bytes.fromhex(ROOTS[2]), [])


def test_malformed_inputs_are_refused_with_what_was_wrong() -> None:
    root = bytes.fromhex(ROOTS[1])
    with pytest.raises(LogError, match="not inside the tree"):
        merkle.verify_inclusion(LEAF_HASHES[0], 1, 1, [], root)
    with pytest.raises(LogError, match="not inside the tree"):
        merkle.verify_inclusion(LEAF_HASHES[0], 0, 0, [], merkle.EMPTY_ROOT)
    with pytest.raises(LogError, match="the leaf hash is not a 32-byte"):
        merkle.verify_inclusion(b"", 0, 1, [], root)
    with pytest.raises(LogError, match="the root hash is not a 32-byte"):
        merkle.verify_inclusion(LEAF_HASHES[0], 0, 1, [], b"WrongRoot")
    with pytest.raises(LogError, match="inclusion proof element 0 is not"):
        merkle.verify_inclusion(LEAF_HASHES[0], 0, 2, [b""], root)
    with pytest.raises(LogError, match="leads to root"):
        merkle.verify_inclusion(LEAF_HASHES[1], 0, 1, [], root)
    err = pytest.raises(LogError, merkle.verify_inclusion, LEAF_HASHES[1], 0, 1, [], root).value
    assert err.exit_code == 1
    with pytest.raises(ValueError, match="no entry 3 in a tree of 3"):
        merkle.inclusion_proof(3, 3, merkle.hashes_from_leaves(LEAF_HASHES[:3]))
    with pytest.raises(ValueError, match="from size 4 to size 3"):
        merkle.consistency_proof(4, 3, merkle.hashes_from_leaves(LEAF_HASHES[:3]))
