"""A log client (trust/log/client.py) against real logs and real Ed25519 keys: the attacks of
issue 13 (dropped, reordered or rewritten entries, forks, rollbacks, forged or missing
signatures, too few cosignatures, proofs from another tree, a hidden revocation) must fail."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from commonforge.errors import InputError
from trust.log import checkpoint as ck
from trust.log import merkle, note
from trust.log.checkpoint import CosignatureError
from trust.log.client import ClientState, ForkError, RollbackError
from trust.log.merkle import LogError
from trust.log.note import NoteFormatError, NoteSignatureError
from trust.log.operator import LogOperator
from trust.log.witness import Witness

ORIGIN = "forge.example/log"


def log_key() -> note.Signer:
    return note.parse_signer(note.generate_key(ORIGIN)[0])


def witness_key(name: str) -> note.Signer:
    return note.parse_signer(note.generate_key(name, note.ALG_COSIGNATURE_V1)[0])


def statements(n: int) -> list[bytes]:
    return [f"statement {i}".encode() for i in range(n)]


@pytest.fixture
def signer() -> note.Signer:
    return log_key()


def operated(directory: Path, signer: note.Signer, entries: list[bytes]) -> LogOperator:
    op = LogOperator(directory, ORIGIN, signer)
    op.append(entries)
    return op


# --- the ordinary path --------------------------------------------------------------------------


def test_a_client_follows_a_growing_log_and_checks_its_entries(tmp_path: Path, signer: note.Signer) -> None:
    op = operated(tmp_path / "log", signer, statements(3))
    client = ClientState(tmp_path / "client" / "state.json")
    assert client.accepted(ORIGIN) is None
    client.accept(op.checkpoint_note(), signer.verifier())
    assert client.accepted(ORIGIN).size == 3
    op.append(statements(300)[3:])
    asked: list[tuple[int, int]] = []

    def proof(old: int, new: int) -> list[bytes]:
        asked.append((old, new))
        return op.prove_consistency(old, new)

    client.accept(op.checkpoint_note(), signer.verifier(), consistency_proof_fn=proof)
    assert asked == [(3, 300)] and client.accepted(ORIGIN).size == 300
    client.verify_entry(b"statement 299", 299, 300, op.prove_inclusion(299))
    client.accept(op.checkpoint_note(), signer.verifier())  # the same checkpoint again needs no proof
    # The state is a JSON file a person can read, and it survives a restart.
    state = json.loads((tmp_path / "client" / "state.json").read_text())
    assert state["logs"][ORIGIN]["size"] == 300
    assert ClientState(tmp_path / "client" / "state.json").accepted(ORIGIN) == client.accepted(ORIGIN)
    with pytest.raises(LogError, match="a proof at size 300"):
        client.verify_entry(b"statement 1", 1, 3, op.prove_inclusion(1, 3))
    with pytest.raises(LogError, match="without a consistency proof"):
        op.append([b"more"])
        client.accept(op.checkpoint_note(), signer.verifier())


def test_a_damaged_state_file_is_an_error_not_a_fresh_start(tmp_path: Path, signer: note.Signer) -> None:
    op = operated(tmp_path / "log", signer, statements(3))
    path = tmp_path / "state.json"
    ClientState(path).accept(op.checkpoint_note(), signer.verifier())
    data = json.loads(path.read_text())
    data["logs"][ORIGIN]["size"] = 1
    path.write_text(json.dumps(data))
    with pytest.raises(InputError, match="damaged"):
        ClientState(path).accepted(ORIGIN)
    path.write_text("{")
    with pytest.raises(InputError, match="not valid JSON"):
        ClientState(path).accept(op.checkpoint_note(), signer.verifier())


# --- attacks: history rewritten -----------------------------------------------------------------


@pytest.mark.parametrize(
    "history",
    [
        pytest.param([0, 2, 3, 4], id="drops-an-entry"),
        pytest.param([0, 2, 1, 3], id="reorders-entries"),
        pytest.param([0, "rewritten", 2, 3], id="rewrites-an-entry"),
    ],
)
def test_attack_a_log_that_rewrites_history_fails_the_consistency_and_inclusion_checks(
    tmp_path: Path, signer: note.Signer, history: list[int | str]
) -> None:
    honest = operated(tmp_path / "honest", signer, statements(3))
    client = ClientState(tmp_path / "client.json")
    client.accept(honest.checkpoint_note(), signer.verifier())
    entry1_proof = honest.prove_inclusion(1)
    # The same key signs a longer log whose first three entries are not the ones the client saw.
    evil_entries = [e.encode() if isinstance(e, str) else f"statement {e}".encode() for e in history]
    evil = operated(tmp_path / "evil", signer, evil_entries)
    accepted = f"does not extend the tree you accepted \\(size 3 with root {honest.opened().checkpoint.root_hash.hex()}"
    with pytest.raises(ForkError, match=accepted) as caught:
        client.accept(evil.checkpoint_note(), signer.verifier(), consistency_proof_fn=evil.prove_consistency)
    assert caught.value.seen == (honest.checkpoint_note(), evil.checkpoint_note())
    assert client.accepted(ORIGIN).size == 3  # nothing changed
    # The evil log cannot show entry 1 where the client saw it, and the old proof fails its root.
    with pytest.raises(LogError):
        merkle.verify_inclusion(
            merkle.leaf_hash(b"statement 1"), 1, 4, evil.prove_inclusion(1), evil.opened().checkpoint.root_hash
        )
    with pytest.raises(LogError, match="leads to root"):
        merkle.verify_inclusion(merkle.leaf_hash(b"statement 1"), 1, 3, entry1_proof, evil.opened().checkpoint.root_hash)
    client.verify_entry(b"statement 1", 1, 3, entry1_proof)  # still true of what the client accepted


def test_attack_a_fork_shown_to_two_clients(tmp_path: Path, signer: note.Signer) -> None:
    left = operated(tmp_path / "left", signer, [b"a", b"b", b"c"])
    right = operated(tmp_path / "right", signer, [b"a", b"b", b"x"])
    left_note, right_note = left.checkpoint_note(), right.checkpoint_note()
    left_root, right_root = left.opened().checkpoint.root_hash.hex(), right.opened().checkpoint.root_hash.hex()
    alice, bob = ClientState(tmp_path / "alice.json"), ClientState(tmp_path / "bob.json")
    alice.accept(left_note, signer.verifier())  # each accepts its own: alone, a fork is invisible
    bob.accept(right_note, signer.verifier())
    with pytest.raises(ForkError, match=f"fork: log {ORIGIN} at size 3 has root {left_root} .* and root {right_root}") as caught:
        alice.accept(right_note, signer.verifier())
    assert caught.value.seen == (left_note, right_note)  # both signed by the log: evidence
    with pytest.raises(ForkError, match=f"{right_root} .*{left_root}"):
        bob.accept(left_note, signer.verifier())
    # A witness that cosigned one side refuses the other, so a client that needs it sees no fork.
    w = Witness(tmp_path / "witness.json", witness_key("w.example/1"))
    left.add_cosignature(w.cosign(left_note, signer.verifier()), w.verifier)
    with pytest.raises(ForkError, match="you cosigned it"):
        w.cosign(right_note, signer.verifier())
    carol = ClientState(tmp_path / "carol.json")
    with pytest.raises(CosignatureError, match="0 of the 1 required"):
        carol.accept(right_note, signer.verifier(), [w.verifier], 1)
    carol.accept(left.checkpoint_note(), signer.verifier(), [w.verifier], 1)


def test_attack_a_rollback_to_an_older_checkpoint(tmp_path: Path, signer: note.Signer) -> None:
    op = operated(tmp_path / "log", signer, statements(3))
    old_note = op.checkpoint_note()
    op.append(statements(5)[3:])
    client = ClientState(tmp_path / "client.json")
    client.accept(op.checkpoint_note(), signer.verifier())
    with pytest.raises(RollbackError, match="rollback: you accepted size 5 before, this checkpoint says 3"):
        client.accept(old_note, signer.verifier(), consistency_proof_fn=op.prove_consistency)
    assert client.accepted(ORIGIN).size == 5


# --- attacks: signatures ------------------------------------------------------------------------


def test_attack_a_forged_or_missing_log_signature(tmp_path: Path, signer: note.Signer) -> None:
    op = operated(tmp_path / "log", signer, statements(3))
    good = op.checkpoint_note()
    client = ClientState(tmp_path / "client.json")
    text, sigs = note.split(good)
    # Signed by another key under the log's name: not the log's key.
    forger = log_key()
    forged = ck.sign_checkpoint(ck.Checkpoint.parse(text), forger)
    with pytest.raises(CosignatureError, match=re.escape(f"no signature by the log key {signer.verifier().label}")):
        client.accept(forged, signer.verifier())
    # The log's signature over another body (a bigger tree): the signature does not verify.
    body = ck.Checkpoint(ORIGIN, 4, merkle.root([merkle.leaf_hash(e) for e in statements(4)])).body()
    with pytest.raises(NoteSignatureError, match=re.escape(signer.verifier().label)):
        client.accept(body + b"\n" + sigs[0].line(), signer.verifier())
    # A flipped bit in the signature.
    raw = bytearray(note.b64decode(sigs[0].b64, "sig"))
    raw[-1] ^= 1
    flipped = text + b"\n" + note.Signature(sigs[0].name, sigs[0].key_id, note.b64encode(bytes(raw))).line()
    with pytest.raises(NoteSignatureError):
        client.accept(flipped, signer.verifier())
    # No signature at all (not even a signed note), or only a witness's cosignature, not the log's.
    with pytest.raises(NoteFormatError, match="no signature lines"):
        client.accept(text + b"\n", signer.verifier())
    w = witness_key("w.example/1")
    cosigned_only = text + b"\n" + ck.cosign(good, w, 1)
    with pytest.raises(CosignatureError, match=re.escape(f"no signature by the log key {signer.verifier().label}")):
        client.accept(cosigned_only, signer.verifier(), [w.verifier()], 1)
    assert client.accepted(ORIGIN) is None
    client.accept(good, signer.verifier())


def test_attack_too_few_cosignatures(tmp_path: Path, signer: note.Signer) -> None:
    op = operated(tmp_path / "log", signer, statements(3))
    witnesses = [Witness(tmp_path / f"w{i}.json", witness_key(f"w.example/{i}")) for i in range(3)]
    trusted = [w.verifier for w in witnesses]
    op.add_cosignature(witnesses[0].cosign(op.checkpoint_note(), signer.verifier()), trusted[0])
    client = ClientState(tmp_path / "client.json")
    with pytest.raises(CosignatureError, match=r"1 of the 2 required .*cosigned by: w.example/0; missing: w.example/1"):
        client.accept(op.checkpoint_note(), signer.verifier(), trusted, 2)
    # A cosignature by a witness the client does not trust does not count.
    outsider = Witness(tmp_path / "x.json", witness_key("w.example/outsider"))
    op.add_cosignature(outsider.cosign(op.checkpoint_note(), signer.verifier()), outsider.verifier)
    with pytest.raises(CosignatureError, match="1 of the 2 required"):
        client.accept(op.checkpoint_note(), signer.verifier(), trusted, 2)
    op.add_cosignature(witnesses[2].cosign(op.checkpoint_note(), signer.verifier()), trusted[2])
    opened = client.accept(op.checkpoint_note(), signer.verifier(), trusted, 2)
    assert [c.name for c in opened.cosignatures] == ["w.example/0", "w.example/2"]


# --- attacks: proofs ----------------------------------------------------------------------------


def test_attack_an_inclusion_proof_for_an_entry_of_another_tree(tmp_path: Path, signer: note.Signer) -> None:
    ours = operated(tmp_path / "ours", signer, statements(6))
    other = operated(tmp_path / "other", log_key(), [b"statement 0", b"evil", *statements(6)[2:]])
    client = ClientState(tmp_path / "client.json")
    client.accept(ours.checkpoint_note(), signer.verifier())
    with pytest.raises(LogError, match=f"entry 1 is not in log {ORIGIN} as accepted"):
        client.verify_entry(b"evil", 1, 6, other.prove_inclusion(1))
    # The right entry with the wrong index, or a proof for another index, fails too.
    with pytest.raises(LogError, match="leads to root"):
        client.verify_entry(b"statement 2", 3, 6, ours.prove_inclusion(2))
    with pytest.raises(LogError, match="too short"):
        client.verify_entry(b"statement 2", 2, 6, ours.prove_inclusion(2)[:-1])
    client.verify_entry(b"statement 2", 2, 6, ours.prove_inclusion(2))


def test_attack_a_revocation_hidden_from_one_client(tmp_path: Path, signer: note.Signer) -> None:
    n = 4
    op = operated(tmp_path / "log", signer, statements(n))
    note_n = op.checkpoint_note()
    revocation = b"revoke model/x@1.2.0"
    op.append([revocation])
    note_n1 = op.checkpoint_note()
    witness = Witness(tmp_path / "witness.json", witness_key("w.example/1"))
    op.add_cosignature(witness.cosign(note_n1, signer.verifier(), op.prove_consistency), witness.verifier)
    alice, bob = ClientState(tmp_path / "alice.json"), ClientState(tmp_path / "bob.json")
    alice.accept(op.checkpoint_note(), signer.verifier(), [witness.verifier], 1)
    alice.verify_entry(revocation, n, n + 1, op.prove_inclusion(n))
    # Bob is shown the older tree, without the revocation: alone he cannot tell.
    bob.accept(note_n, signer.verifier())
    # When Bob sees Alice's checkpoint, the log must prove it extends his, and the revocation is in it.
    bob.accept(alice.accepted_note(ORIGIN), signer.verifier(), [witness.verifier], 1, op.prove_consistency)
    bob.verify_entry(revocation, n, n + 1, op.prove_inclusion(n))
    # A fork that replaces the revocation: the witness that cosigned n + 1 refuses it at any size.
    fork = operated(tmp_path / "fork", signer, [*statements(n), b"statement 4"])
    with pytest.raises(ForkError, match=f"at size {n + 1} has root"):
        witness.cosign(fork.checkpoint_note(), signer.verifier(), fork.prove_consistency)
    fork.append([b"statement 5"])
    with pytest.raises(ForkError, match=f"does not extend the tree you cosigned \\(size {n + 1}"):
        witness.cosign(fork.checkpoint_note(), signer.verifier(), fork.prove_consistency)
    with pytest.raises(CosignatureError, match="0 of the 1 required"):
        ClientState(tmp_path / "carol.json").accept(fork.checkpoint_note(), signer.verifier(), [witness.verifier], 1)
