"""The log's operator (trust/log/operator.py): signed appends, proofs that verify, cosignatures
added only when they verify, and damaged tiles refused by its reads."""

from __future__ import annotations

from pathlib import Path

import pytest

from commonforge.errors import InputError
from trust.log import checkpoint as ck
from trust.log import merkle, note, tiles
from trust.log.checkpoint import CosignatureError
from trust.log.merkle import LogError
from trust.log.operator import LogOperator

ORIGIN = "forge.example/log"


def log_key(name: str = ORIGIN) -> note.Signer:
    return note.parse_signer(note.generate_key(name)[0])


def witness_key(name: str) -> note.Signer:
    return note.parse_signer(note.generate_key(name, note.ALG_COSIGNATURE_V1)[0])


def entries(start: int, stop: int) -> list[bytes]:
    return [f"statement {i}".encode() for i in range(start, stop)]


def test_append_signs_a_checkpoint_of_the_tree_on_disk(tmp_path: Path) -> None:
    signer = log_key()
    op = LogOperator(tmp_path / "log", ORIGIN, signer)
    first = op.append(entries(0, 5))
    assert (first.checkpoint.origin, first.checkpoint.size) == (ORIGIN, 5)
    assert first.checkpoint.root_hash == merkle.root([merkle.leaf_hash(e) for e in entries(0, 5)])
    second = op.append(entries(5, 300))
    assert second.checkpoint.size == 300
    # A client with only the log's public key verifies the file the operator wrote.
    opened = ck.open_checkpoint((tmp_path / "log" / "checkpoint").read_bytes(), signer.verifier(), origin=ORIGIN)
    assert opened.checkpoint == second.checkpoint
    assert op.entry(257) == b"statement 257"
    root = second.checkpoint.root_hash
    merkle.verify_inclusion(merkle.leaf_hash(b"statement 3"), 3, 300, op.prove_inclusion(3, 300), root)
    merkle.verify_inclusion(merkle.leaf_hash(b"statement 2"), 2, 5, op.prove_inclusion(2, 5), first.checkpoint.root_hash)
    merkle.verify_consistency(5, 300, first.checkpoint.root_hash, root, op.prove_consistency(5, 300))
    # Reopened, the operator reads the same log.
    again = LogOperator(tmp_path / "log", ORIGIN, signer)
    assert again.size == 300 and again.opened().checkpoint == second.checkpoint
    with pytest.raises(InputError, match="nothing to append"):
        op.append([])


def test_a_log_of_another_origin_or_key_is_refused(tmp_path: Path) -> None:
    signer = log_key()
    LogOperator(tmp_path / "log", ORIGIN, signer).append(entries(0, 3))
    with pytest.raises(CosignatureError, match="for origin"):
        LogOperator(tmp_path / "log", "other.example/log", signer)
    with pytest.raises(CosignatureError, match="no signature by the log key"):
        LogOperator(tmp_path / "log", ORIGIN, log_key())
    with pytest.raises(InputError, match="not an Ed25519 note key"):
        LogOperator(tmp_path / "log", ORIGIN, witness_key("w.example/1"))


def test_cosignatures_are_added_only_when_they_verify_against_the_current_checkpoint(tmp_path: Path) -> None:
    signer = log_key()
    w1, w2 = witness_key("w.example/1"), witness_key("w.example/2")
    op = LogOperator(tmp_path / "log", ORIGIN, signer)
    op.append(entries(0, 4))
    old_note = op.checkpoint_note()
    line1 = ck.cosign(old_note, w1, 1_700_000_000, log_verifier=signer.verifier())
    op.add_cosignature(line1, w1.verifier())
    opened = op.add_cosignature(ck.cosign(old_note, w2, 1_700_000_001), w2.verifier())
    assert [c.name for c in opened.cosignatures] == ["w.example/2"]  # only the witness passed is checked
    full = ck.open_checkpoint(op.checkpoint_note(), signer.verifier(), [w1.verifier(), w2.verifier()], 2)
    assert [c.timestamp for c in full.cosignatures] == [1_700_000_000, 1_700_000_001]
    # A line claiming to be w1's but signed by another key, or w1's line given for w2: refused, file unchanged.
    before = op.checkpoint_note()
    impostor = witness_key("w.example/1")
    with pytest.raises(CosignatureError):
        op.add_cosignature(ck.cosign(old_note, impostor, 1), w1.verifier())
    with pytest.raises(CosignatureError, match="w.example/2"):
        op.add_cosignature(line1, w2.verifier())
    assert op.checkpoint_note() == before
    # After an append the old cosignature is for another tree: refused, naming the size now.
    op.append(entries(4, 6))
    with pytest.raises(CosignatureError, match="checkpoint at size 6"):
        op.add_cosignature(line1, w1.verifier())
    assert ck.open_checkpoint(op.checkpoint_note(), signer.verifier(), [w1.verifier()]).cosignatures == ()


def test_an_append_by_another_process_is_seen_when_cosigning(tmp_path: Path) -> None:
    signer, w = log_key(), witness_key("w.example/1")
    op = LogOperator(tmp_path / "log", ORIGIN, signer)
    op.append(entries(0, 2))
    LogOperator(tmp_path / "log", ORIGIN, signer).append(entries(2, 7))  # another operator process
    assert op.opened().checkpoint.size == 7 and op.size == 7 and op.entry(6) == b"statement 6"
    line = ck.cosign((tmp_path / "log" / "checkpoint").read_bytes(), w, 5)
    assert op.add_cosignature(line, w.verifier()).checkpoint.size == 7


@pytest.mark.parametrize("damage", ["truncated", "oversize"])
def test_attack_a_truncated_or_oversize_tile_is_refused_by_the_operators_reads(tmp_path: Path, damage: str) -> None:
    signer = log_key()
    LogOperator(tmp_path / "log", ORIGIN, signer).append(entries(0, 300))
    tile = tmp_path / "log" / tiles.tile_path(0, 1, 44)  # the partial level-0 tile: entries 256..299
    data = tile.read_bytes()
    tile.write_bytes(data[:-1] if damage == "truncated" else data + bytes(32))
    op = LogOperator(tmp_path / "log", ORIGIN, signer)
    for read in (lambda: op.entry(280), lambda: op.prove_inclusion(3, 300), lambda: op.prove_consistency(10, 300)):
        with pytest.raises(LogError, match=f"{tiles.tile_path(0, 1, 44)} is {damage}"):
            read()
    # A rewritten entry bundle is refused by the entry read: it no longer hashes to its leaf.
    bundle = tmp_path / "log" / tiles.tile_path("entries", 0)
    bundle.write_bytes(bundle.read_bytes().replace(b"statement 7", b"statement X"))
    with pytest.raises(LogError, match="does not hash to leaf 7"):
        LogOperator(tmp_path / "log", ORIGIN, signer).entry(7)
