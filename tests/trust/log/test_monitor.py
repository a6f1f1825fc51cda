"""The log's monitor (trust/log/monitor.py) against real logs in tmp dirs, real Ed25519 note keys
and real signed statements: consistent mirrors pass, forks and rollbacks are caught with the
log's own signed checkpoints as evidence, damaged mirrors are named, and each run reports only
what is new since the last one."""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from securesystemslib.signer import CryptoSigner, SSlibKey

from trust import statements as st
from trust.keys import keyid_of
from trust.log import checkpoint as ck
from trust.log import note, tiles
from trust.log.client import ClientState
from trust.log.monitor import EXIT_EQUIVOCATION, EXIT_OK, EXIT_PROBLEM, describe_entries, monitor
from trust.log.operator import LogOperator
from trust.log.witness import Witness

ORIGIN = "forge.example/log"
SIGNED_AT = "2026-01-02T03:04:05Z"
RELEASE = hashlib.sha256(b"model/x@1.2.0 release").hexdigest()
POLICY2 = hashlib.sha256(b"policy 2").hexdigest()


class Person:
    """A maintainer with a real Ed25519 statement key (securesystemslib's CryptoSigner, as trust.keys makes)."""

    def __init__(self, name: str, affiliation: str) -> None:
        private = ed25519.Ed25519PrivateKey.generate()
        public = private.public_key()
        self.name, self.affiliation = name, affiliation
        self.keyid = keyid_of(public)
        self.pem = public.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo).decode("ascii")
        self.signer = CryptoSigner(private, SSlibKey.from_crypto(public, keyid=self.keyid))

    def sign(self, kind: str, predicate: st.Predicate, subject: str = "model/x@1.2.0", digest: str = RELEASE) -> bytes:
        return st.sign(self.signer, kind, subject, digest, predicate)


@pytest.fixture(scope="module")
def people() -> dict[str, Person]:
    return {n: Person(n.capitalize(), a) for n, a in (("ann", "Acme"), ("bob", "Beta"), ("cat", "Cyan"))}


def names(people: dict[str, Person]) -> dict[str, tuple[str, str]]:
    return {p.keyid: (p.name, p.affiliation) for p in people.values()}


def release_statements(p: dict[str, Person]) -> list[bytes]:
    """A release's life: built, approved by three affiliations, rebuilt, published (entries 0..5)."""
    ann, bob, cat = p["ann"], p["bob"], p["cat"]
    return [
        ann.sign("build", st.BuildPredicate(signed_at=SIGNED_AT, builder="Ann", public_key=ann.pem)),
        ann.sign("approval", st.ApprovalPredicate(signed_at=SIGNED_AT)),
        bob.sign("approval", st.ApprovalPredicate(signed_at=SIGNED_AT, comment="checked the data")),
        cat.sign("approval", st.ApprovalPredicate(signed_at=SIGNED_AT)),
        bob.sign("rebuild", st.RebuildPredicate(signed_at=SIGNED_AT, result="identical", rebuilt_digest=RELEASE)),
        cat.sign("publication", st.PublicationPredicate(signed_at=SIGNED_AT, policy_version=1, policy_digest=POLICY2,
                                                        counted=[RELEASE])),
    ]


def revocation(person: Person, reason: str = "the training data held leaked personal records") -> bytes:
    return person.sign("revocation", st.RevocationPredicate(signed_at=SIGNED_AT, reason=reason, severity="high"))


def log_key() -> note.Signer:
    return note.parse_signer(note.generate_key(ORIGIN)[0])


def operated(directory: Path, signer: note.Signer, entries: list[bytes]) -> LogOperator:
    op = LogOperator(directory, ORIGIN, signer)
    op.append(entries)
    return op


def mirror(op: LogOperator, directory: Path) -> Path:
    """A copy of the log as it is now (a mirror that will lag behind the operator)."""
    shutil.copytree(op.directory, directory, ignore=shutil.ignore_patterns(".lock"))
    return directory


@pytest.fixture
def signer() -> note.Signer:
    return log_key()


# --- the ordinary path --------------------------------------------------------------------------


def test_two_consistent_sources_at_different_sizes(tmp_path: Path, signer: note.Signer, people) -> None:
    entries = release_statements(people)
    op = operated(tmp_path / "log", signer, entries[:3])
    behind = mirror(op, tmp_path / "mirror")
    op.append(entries[3:])
    state = ClientState(tmp_path / "state.json")
    report = monitor([behind, op.directory], signer.verifier(), state=state, names=names(people))
    assert report.ok and report.exit_code() == EXIT_OK, report.lines()
    assert [(r.source, r.size) for r in report.sources] == [(str(behind), 3), (str(op.directory), 6)]
    assert report.accepted.size == 6 and state.accepted(ORIGIN).size == 6
    assert [i for i, _ in report.new_entries] == list(range(6))
    assert report.new_entries[2][1] == "approval of model/x@1.2.0 by Bob (Beta)"
    assert report.new_entries[5][1] == "publication of model/x@1.2.0 by Cat (Cyan) under policy 1"
    text = "\n".join(report.lines())
    assert ("model/x@1.2.0 built by Ann (Acme); published by Cat (Cyan) under policy 1 with approvals from "
            "Ann (Acme), Bob (Beta), Cat (Cyan); rebuilt identically by Bob (Beta) (entries 0-5)") in text
    assert "size 6: 6 new entries" in text and text.endswith("OK")


def test_a_second_run_lists_only_the_entries_added_since_the_first(tmp_path: Path, signer: note.Signer, people) -> None:
    entries = release_statements(people)
    op = operated(tmp_path / "log", signer, entries)
    state = ClientState(tmp_path / "state.json")
    assert [i for i, _ in monitor([op.directory], signer.verifier(), state=state).new_entries] == list(range(6))
    again = monitor([op.directory], signer.verifier(), state=state)
    assert again.ok and again.new_entries == [] and again.previous_size == 6
    op.append([revocation(people["ann"]), revocation(people["bob"])])
    third = monitor([op.directory], signer.verifier(), state=state, names=names(people))
    assert third.ok and third.previous_size == 6 and [i for i, _ in third.new_entries] == [6, 7]
    assert ("model/x@1.2.0 REVOKED by Ann (Acme), Bob (Beta) (high: the training data held leaked personal records) "
            "(entries 6, 7)") in third.lines()[-2]
    assert state.accepted(ORIGIN).size == 8


def test_runs_across_tile_boundaries_check_the_new_entries_and_catch_a_rewrite_among_them(
    tmp_path: Path, signer: note.Signer
) -> None:
    op = operated(tmp_path / "log", signer, [f"e{i}".encode() for i in range(300)])
    state = ClientState(tmp_path / "state.json")
    assert len(monitor([op.directory], signer.verifier(), state=state).new_entries) == 300
    op.append([f"e{i}".encode() for i in range(300, 800)])
    # A mirror rewrites entry 600 (in the full bundle 2), one of the entries new since the last run.
    bad = mirror(op, tmp_path / "bad")
    bundle = bad / tiles.tile_path("entries", 2)
    rewritten = tiles.decode_bundle(bundle.read_bytes(), 256, str(bundle))
    rewritten[600 - 512] = b"evil"
    bundle.write_bytes(tiles.encode_bundle(rewritten))
    report = monitor([bad, op.directory], signer.verifier(), state=state)
    assert report.exit_code() == EXIT_PROBLEM and [p.source for p in report.problems] == [str(bad)]
    assert "entry 600 in tile/entries/002 does not hash to leaf 88 of tile/0/002" in report.problems[0].message
    # The honest source is still accepted, with only the entries since size 300.
    assert report.previous_size == 300 and [i for i, _ in report.new_entries] == list(range(300, 800))
    assert report.lines()[-2] == "  entries 300-799 are not signed statements: not JSON (JSONDecodeError)"
    assert state.accepted(ORIGIN).size == 800
    # Entries the monitor has checked are not read again, unless asked for a full check.
    assert monitor([bad], signer.verifier(), state=state).ok
    assert "entry 600" in monitor([bad], signer.verifier(), state=state, full=True).problems[0].message


# --- attacks: equivocation ----------------------------------------------------------------------


def test_attack_a_fork_at_the_same_size_is_an_equivocation_with_both_notes(tmp_path: Path, signer: note.Signer) -> None:
    left = operated(tmp_path / "left", signer, [b"a", b"b", b"c"])
    right = operated(tmp_path / "right", signer, [b"a", b"b", b"x"])
    state = ClientState(tmp_path / "state.json")
    report = monitor([left.directory, right.directory], signer.verifier(), state=state)
    assert report.exit_code() == EXIT_EQUIVOCATION and not report.ok
    (eq,) = report.equivocations
    assert eq.sources == (str(left.directory), str(right.directory))
    assert set(eq.notes) == {left.checkpoint_note(), right.checkpoint_note()}
    assert "at size 3 has root" in eq.message
    # Both notes are signed by the log: each verifies on its own, which is what makes them evidence.
    for evidence in eq.notes:
        ck.open_checkpoint(evidence, signer.verifier())
    assert state.accepted(ORIGIN) is None and report.new_entries == []  # nothing accepted from a forked log
    assert "EQUIVOCATION" in "\n".join(report.lines())


def test_attack_a_bigger_tree_that_does_not_extend_a_smaller_one(tmp_path: Path, signer: note.Signer) -> None:
    small = operated(tmp_path / "small", signer, [b"a", b"b", b"c"])
    big = operated(tmp_path / "big", signer, [b"a", b"rewritten", b"c", b"d", b"e"])
    report = monitor([big.directory, small.directory], signer.verifier(), state=ClientState(tmp_path / "s.json"))
    assert report.exit_code() == EXIT_EQUIVOCATION
    (eq,) = report.equivocations
    assert eq.sources == (str(small.directory), str(big.directory))
    assert eq.notes == (small.checkpoint_note(), big.checkpoint_note())
    assert "does not extend" in eq.message


def test_attack_a_rollback_and_a_fork_against_the_local_state(tmp_path: Path, signer: note.Signer) -> None:
    op = operated(tmp_path / "log", signer, [b"a", b"b", b"c"])
    old = mirror(op, tmp_path / "old")
    op.append([b"d", b"e"])
    state = ClientState(tmp_path / "state.json")
    assert monitor([op.directory], signer.verifier(), state=state).ok
    # Alone, the old mirror is a valid log; against what the monitor saw, it hides entries 3 and 4.
    report = monitor([old], signer.verifier(), state=state)
    assert report.exit_code() == EXIT_PROBLEM and report.equivocations == []
    assert [p.source for p in report.problems] == [str(old)] and "rollback" in report.problems[0].message
    assert state.accepted(ORIGIN).size == 5 and report.new_entries == []
    # A bigger tree, signed by the log, that drops what the monitor accepted: a fork of the state.
    fork = operated(tmp_path / "fork", signer, [b"a", b"b", b"c", b"X", b"e", b"f"])
    report = monitor([fork.directory], signer.verifier(), state=state)
    assert report.exit_code() == EXIT_EQUIVOCATION
    (eq,) = report.equivocations
    assert eq.sources == (f"local state {state.path}", str(fork.directory))
    assert eq.notes == (op.checkpoint_note(), fork.checkpoint_note())
    assert state.accepted(ORIGIN).size == 5


# --- attacks: damaged sources -------------------------------------------------------------------


def test_attack_a_truncated_tile_is_reported_for_its_source(tmp_path: Path, signer: note.Signer) -> None:
    op = operated(tmp_path / "log", signer, [b"a", b"b", b"c", b"d", b"e"])
    bad = mirror(op, tmp_path / "bad")
    tile = bad / tiles.tile_path(0, 0, 5)
    tile.write_bytes(tile.read_bytes()[:-7])
    state = ClientState(tmp_path / "state.json")
    report = monitor([bad, op.directory], signer.verifier(), state=state)
    assert report.exit_code() == EXIT_PROBLEM and report.equivocations == []
    (problem,) = report.problems
    assert problem.source == str(bad) and str(tile) in problem.message and "truncated" in problem.message
    assert not report.sources[0].ok and report.sources[1].ok
    assert report.accepted.size == 5 and len(report.new_entries) == 5  # the good source still counts


@pytest.mark.parametrize("also_tile", [False, True], ids=["bundle-only", "bundle-and-leaf-tile"])
def test_attack_a_rewritten_entry_bundle_is_reported_for_its_source(
    tmp_path: Path, signer: note.Signer, also_tile: bool
) -> None:
    entries = [b"a", b"b", b"c", b"d"]
    op = operated(tmp_path / "log", signer, entries)
    bad = mirror(op, tmp_path / "bad")
    rewritten = [b"a", b"b", b"revocation removed", b"d"]
    (bad / tiles.tile_path("entries", 0, 4)).write_bytes(tiles.encode_bundle(rewritten))
    if also_tile:  # the attacker rehashes the leaf too: the tiles then no longer give the signed root
        from trust.log import merkle

        (bad / tiles.tile_path(0, 0, 4)).write_bytes(b"".join(merkle.leaf_hash(e) for e in rewritten))
    report = monitor([bad], signer.verifier(), state=ClientState(tmp_path / "state.json"))
    assert report.exit_code() == EXIT_PROBLEM and report.equivocations == [] and report.accepted is None
    (problem,) = report.problems
    assert problem.source == str(bad)
    assert ("entry 2" in problem.message) if not also_tile else ("hash to root" in problem.message)
    assert f"PROBLEM {bad}:" in "\n".join(report.lines())


def test_attack_a_forged_signature_or_too_few_cosignatures(tmp_path: Path, signer: note.Signer) -> None:
    op = operated(tmp_path / "log", signer, [b"a", b"b", b"c"])
    forged = mirror(op, tmp_path / "forged")
    text, _ = note.split(op.checkpoint_note())
    (forged / "checkpoint").write_bytes(ck.sign_checkpoint(ck.Checkpoint.parse(text), log_key()))  # same name, other key
    report = monitor([forged, op.directory], signer.verifier())
    assert report.exit_code() == EXIT_PROBLEM
    assert [p.source for p in report.problems] == [str(forged)]
    assert "no signature by the log key" in report.problems[0].message
    # A witness quorum of one: the uncosigned checkpoint fails, then passes once cosigned.
    witness = Witness(tmp_path / "w.json", note.parse_signer(note.generate_key("w.example/1", note.ALG_COSIGNATURE_V1)[0]))
    state = ClientState(tmp_path / "state.json")
    report = monitor([op.directory], signer.verifier(), [witness.verifier], 1, state)
    assert report.exit_code() == EXIT_PROBLEM and "0 of the 1 required" in report.problems[0].message
    assert state.accepted(ORIGIN) is None
    op.add_cosignature(witness.cosign(op.checkpoint_note(), signer.verifier()), witness.verifier)
    report = monitor([op.directory], signer.verifier(), [witness.verifier], 1, state)
    assert report.ok and state.accepted(ORIGIN).size == 3


# --- what entries say ---------------------------------------------------------------------------


def test_describe_entries_on_real_statements_and_on_garbage(people) -> None:
    ann, bob, cat = people["ann"], people["bob"], people["cat"]
    stranger = Person("Zed", "Zeta")
    entries = list(enumerate([
        *release_statements(people),
        b"\x00\xffnot json at all",
        revocation(cat, "a backdoor was found in the recipe file"),
        ann.sign("policy", st.PolicyPredicate(signed_at=SIGNED_AT, version=2), "policy/2", POLICY2),
        stranger.sign("policy", st.PolicyPredicate(signed_at=SIGNED_AT, version=2), "policy/2", POLICY2),
        b'{"payloadType": "application/vnd.in-toto+json"}',
        bob.sign("approval", st.ApprovalPredicate(signed_at=SIGNED_AT), "model/y@0.1.0"),
    ]))
    lines = describe_entries(entries, names(people))
    assert lines == [
        "model/x@1.2.0 built by Ann (Acme); published by Cat (Cyan) under policy 1 with approvals from "
        "Ann (Acme), Bob (Beta), Cat (Cyan); rebuilt identically by Bob (Beta) (entries 0-5)",
        "entry 6 is not a signed statement: not JSON (UnicodeDecodeError)",
        "model/x@1.2.0 REVOKED by Cat (Cyan) (high: a backdoor was found in the recipe file) (entry 7)",
        f"policy 2 signed by Ann (Acme), {stranger.keyid[:12]} (entries 8, 9)",
        lines[4],
        "model/y@0.1.0 approved by Bob (Beta) (entry 11)",
    ]
    assert lines[4].startswith("entry 10 is not a signed statement: not a DSSE envelope")
    # Without names every signer shows as its keyid's first 12 characters.
    assert describe_entries(entries[1:2]) == [f"model/x@1.2.0 approved by {ann.keyid[:12]} (entry 1)"]
    assert describe_entries([]) == []


# --- attacks: forged entries (a compromised log key) --------------------------------------------


def keys_of(people: dict[str, Person]) -> dict[str, SSlibKey]:
    """keyid -> key of every maintainer, as the CLI builds it from the policy chain."""
    return {p.keyid: p.signer.public_key for p in people.values()}


def impostor_signing_as(person: Person) -> CryptoSigner:
    """Someone else's real key under ``person``'s keyid: what an attacker holding the log key can sign."""
    private = ed25519.Ed25519PrivateKey.generate()
    return CryptoSigner(private, SSlibKey.from_crypto(private.public_key(), keyid=person.keyid))


def test_attack_entries_whose_signature_does_not_verify_are_reported_forged(
    tmp_path: Path, signer: note.Signer, people
) -> None:
    ann, cat = people["ann"], people["cat"]
    genuine = ann.sign("approval", st.ApprovalPredicate(signed_at=SIGNED_AT))
    # Cat's "publication", signed by an impostor under Cat's keyid.
    forged_pub = st.sign(impostor_signing_as(cat), "publication", "model/x@1.2.0", RELEASE,
                         st.PublicationPredicate(signed_at=SIGNED_AT, policy_version=1, policy_digest=POLICY2,
                                                 counted=[RELEASE]))
    # A build statement that carries Ann's public key but was signed by someone else.
    forged_build = st.sign(impostor_signing_as(ann), "build", "model/x@1.2.0", RELEASE,
                           st.BuildPredicate(signed_at=SIGNED_AT, builder="Ann", public_key=ann.pem))
    # Ann's genuine approval of another release, one signature byte flipped.
    flipped = json.loads(ann.sign("approval", st.ApprovalPredicate(signed_at=SIGNED_AT), "model/y@0.1.0"))
    sig = bytearray(base64.b64decode(flipped["signatures"][0]["sig"]))
    sig[5] ^= 1
    flipped["signatures"][0]["sig"] = base64.b64encode(bytes(sig)).decode("ascii")
    stranger = Person("Zed", "Zeta")  # a real signature by a key no policy version names
    unknown = stranger.sign("approval", st.ApprovalPredicate(signed_at=SIGNED_AT))
    entries = [genuine, forged_pub, forged_build, json.dumps(flipped).encode(), unknown]
    op = operated(tmp_path / "log", signer, entries)

    report = monitor([op.directory], signer.verifier(), state=ClientState(tmp_path / "s.json"),
                     names=names(people), keys=keys_of(people))
    assert report.exit_code() == EXIT_PROBLEM and report.equivocations == [], report.lines()
    assert [p.source for p in report.problems] == ["entry 1", "entry 2", "entry 3", "entry 4"]
    assert report.new_entries[0][1] == "approval of model/x@1.2.0 by Ann (Acme)"
    assert report.new_entries[1][1] == (f"FORGED or unverifiable: claims to be publication of model/x@1.2.0 by "
                                        f"{cat.keyid[:12]} (its signature does not verify)")
    assert report.new_entries[4][1].endswith(f"by {stranger.keyid[:12]} (no policy version names its key)")
    lines = describe_entries(list(enumerate(entries)), names(people), keys_of(people))
    assert lines[0] == "model/x@1.2.0 approved by Ann (Acme) (entry 0)"  # no name lent to the forgeries
    assert lines[2] == (f"FORGED or unverifiable: claims to be build of model/x@1.2.0 by {ann.keyid[:12]} "
                        "(its signature does not verify) (entry 2)")
    assert lines[3].startswith("FORGED or unverifiable: claims to be approval of model/y@0.1.0 by ")
    assert len(lines) == 5 and not any("Cat (Cyan)" in line for line in lines)
    text = "\n".join(report.lines())
    assert "(signatures not checked)" not in text and "PROBLEM entry 1: FORGED" in text
    assert text.endswith("NOT OK (exit 1)")
    # Without keys nothing is checked, and the report says so: the forgery reads as Cat's word.
    blind = monitor([op.directory], signer.verifier(), names=names(people))
    assert blind.ok and "(signatures not checked)" in blind.lines()[0]
    assert blind.new_entries[1][1] == "publication of model/x@1.2.0 by Cat (Cyan) under policy 1"


def test_genuine_entries_verify_and_are_named(tmp_path: Path, signer: note.Signer, people) -> None:
    op = operated(tmp_path / "log", signer, [*release_statements(people), revocation(people["bob"])])
    report = monitor([op.directory], signer.verifier(), names=names(people), keys=keys_of(people))
    assert report.ok, report.lines()
    assert report.lines()[-3:-1] == [
        "  model/x@1.2.0 built by Ann (Acme); published by Cat (Cyan) under policy 1 with approvals from "
        "Ann (Acme), Bob (Beta), Cat (Cyan); rebuilt identically by Bob (Beta) (entries 0-5)",
        "  model/x@1.2.0 REVOKED by Bob (Beta) (high: the training data held leaked personal records) (entry 6)",
    ]


def test_attack_a_fork_without_cosignatures_is_still_an_equivocation(tmp_path: Path, signer: note.Signer) -> None:
    """The log key signed two trees of one size: that is proof, whether or not any witness cosigned."""
    witness = Witness(tmp_path / "w.json", note.parse_signer(note.generate_key("w.example/1", note.ALG_COSIGNATURE_V1)[0]))
    left = operated(tmp_path / "left", signer, [b"a", b"b", b"c"])
    right = operated(tmp_path / "right", signer, [b"a", b"b", b"x"])
    state = ClientState(tmp_path / "state.json")
    report = monitor([left.directory, right.directory], signer.verifier(), [witness.verifier], 1, state)
    assert report.exit_code() == EXIT_EQUIVOCATION, report.lines()
    (eq,) = report.equivocations
    assert eq.notes == (left.checkpoint_note(), right.checkpoint_note()) and "at size 3 has root" in eq.message
    assert [p.source for p in report.problems] == [str(left.directory), str(right.directory)]  # no quorum
    assert all("0 of the 1 required" in p.message for p in report.problems)
    assert state.accepted(ORIGIN) is None and report.new_entries == []
    # Against the local state too: once the real log is cosigned and accepted, an uncosigned fork of it
    # (a bigger tree the log key signed) is an equivocation, not a mere missing quorum.
    left.add_cosignature(witness.cosign(left.checkpoint_note(), signer.verifier()), witness.verifier)
    assert monitor([left.directory], signer.verifier(), [witness.verifier], 1, state).ok
    fork = operated(tmp_path / "fork", signer, [b"a", b"b", b"X", b"d"])
    report = monitor([fork.directory], signer.verifier(), [witness.verifier], 1, state)
    assert report.exit_code() == EXIT_EQUIVOCATION
    assert report.equivocations[0].sources == (f"local state {state.path}", str(fork.directory))
    assert state.accepted(ORIGIN).size == 3
    # An uncosigned checkpoint that does extend the accepted one is only a problem, and is not accepted.
    left.append([b"d"])
    report = monitor([left.directory], signer.verifier(), [witness.verifier], 1, state)
    assert report.exit_code() == EXIT_PROBLEM and report.equivocations == [] and report.accepted is None
    assert f"{left.directory}: size 4, root " in report.lines()[1] and "FAILED" in report.lines()[1]
    assert state.accepted(ORIGIN).size == 3
