"""A witness (trust/log/witness.py): cosigns only checkpoints that extend what it cosigned before,
per log, remembered across restarts; everything it refuses leaves its memory unchanged."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from commonforge.errors import InputError
from trust.log import checkpoint as ck
from trust.log import note
from trust.log.checkpoint import CosignatureError
from trust.log.client import ForkError, RollbackError
from trust.log.merkle import LogError
from trust.log.operator import LogOperator
from trust.log.witness import Witness

ORIGIN = "forge.example/log"


def key(name: str, alg: int = note.ALG_ED25519) -> note.Signer:
    return note.parse_signer(note.generate_key(name, alg)[0])


def statements(start: int, stop: int) -> list[bytes]:
    return [f"statement {i}".encode() for i in range(start, stop)]


def test_a_witness_cosigns_a_growing_log(tmp_path: Path) -> None:
    signer = key(ORIGIN)
    op = LogOperator(tmp_path / "log", ORIGIN, signer)
    op.append(statements(0, 2))
    witness = Witness(tmp_path / "witness" / "state.json", key("w.example/1", note.ALG_COSIGNATURE_V1))
    op.add_cosignature(witness.cosign(op.checkpoint_note(), signer.verifier(), timestamp=1_700_000_000), witness.verifier)
    opened = ck.open_checkpoint(op.checkpoint_note(), signer.verifier(), [witness.verifier], 1)
    assert opened.cosignatures[0].timestamp == 1_700_000_000
    op.append(statements(2, 600))
    line = witness.cosign(op.checkpoint_note(), signer.verifier(), op.prove_consistency)
    assert op.add_cosignature(line, witness.verifier).checkpoint.size == 600
    assert witness.state.accepted(ORIGIN).size == 600
    # Asked again for the same checkpoint (say, after a crash between remembering and signing): it cosigns.
    assert witness.cosign(op.checkpoint_note(), signer.verifier(), timestamp=1).startswith("— w.example/1 ".encode())


def test_a_witness_refuses_a_rollback_a_fork_and_an_unproven_growth_and_remembers_nothing(tmp_path: Path) -> None:
    signer = key(ORIGIN)
    op = LogOperator(tmp_path / "log", ORIGIN, signer)
    op.append(statements(0, 3))
    old = op.checkpoint_note()
    op.append(statements(3, 5))
    state = tmp_path / "witness.json"
    witness = Witness(state, key("w.example/1", note.ALG_COSIGNATURE_V1))
    witness.cosign(op.checkpoint_note(), signer.verifier())
    remembered = state.read_bytes()

    restarted = Witness(state, witness.signer)  # the memory is the file, not the object
    with pytest.raises(RollbackError, match="rollback: you cosigned size 5 before, this checkpoint says 3"):
        restarted.cosign(old, signer.verifier(), op.prove_consistency)
    fork = LogOperator(tmp_path / "fork", ORIGIN, signer)
    fork.append([*statements(0, 4), b"statement X"])
    with pytest.raises(ForkError, match=f"fork: log {re.escape(ORIGIN)} at size 5"):
        restarted.cosign(fork.checkpoint_note(), signer.verifier(), fork.prove_consistency)
    op.append(statements(5, 9))
    with pytest.raises(LogError, match="without a consistency proof"):
        restarted.cosign(op.checkpoint_note(), signer.verifier())
    with pytest.raises(ForkError, match="too short"):
        restarted.cosign(op.checkpoint_note(), signer.verifier(), lambda a, b: op.prove_consistency(a, b)[:-1])
    # A checkpoint the log's key did not sign is refused before anything else.
    forged = ck.sign_checkpoint(ck.Checkpoint.parse(note.split(op.checkpoint_note())[0]), key(ORIGIN))
    with pytest.raises(CosignatureError, match="no signature by the log key"):
        restarted.cosign(forged, signer.verifier(), op.prove_consistency)
    assert state.read_bytes() == remembered
    restarted.cosign(op.checkpoint_note(), signer.verifier(), op.prove_consistency)
    assert restarted.state.accepted(ORIGIN).size == 9


def test_a_witness_keeps_one_memory_per_log(tmp_path: Path) -> None:
    a, b = key("a.example/log"), key("b.example/log")
    log_a = LogOperator(tmp_path / "a", "a.example/log", a)
    log_b = LogOperator(tmp_path / "b", "b.example/log", b)
    log_a.append(statements(0, 7))
    log_b.append(statements(0, 2))
    witness = Witness(tmp_path / "w.json", key("w.example/1", note.ALG_COSIGNATURE_V1))
    witness.cosign(log_a.checkpoint_note(), a.verifier())
    witness.cosign(log_b.checkpoint_note(), b.verifier())  # smaller, but another log: no rollback
    assert (witness.state.accepted("a.example/log").size, witness.state.accepted("b.example/log").size) == (7, 2)


def test_a_witness_needs_a_cosignature_key(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not a cosignature/v1 key"):
        Witness(tmp_path / "w.json", key("w.example/1"))
    assert Witness(tmp_path / "w.json", key("w.example/1").as_cosigner()).verifier.alg == note.ALG_COSIGNATURE_V1
