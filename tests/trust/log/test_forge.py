"""The forge's statements through its transparency log: the policy names the log, the operator
appends what verifies, witnesses cosign, and a release's status reads the log (real keys, real
statements, real tlog-tiles directories; see tests/trust/conftest.py for the forge)."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from commonforge.errors import InputError
from registry.schema import utc_now
from registry.yamlio import save_model
from trust import policy as trust_policy
from trust import statements as st
from trust import status as trust_status
from trust.errors import PolicyError
from trust.log import forge as log_forge
from trust.log import note
from trust.log.client import ClientState
from trust.log.witness import Witness

ORIGIN = "forge.test/log"


@dataclass
class Logged:
    forge: object
    log_dir: Path
    state: ClientState
    log_signer: note.Signer
    witnesses: list[Witness]
    spec: trust_policy.LogSpec

    def op(self):
        return log_forge.operator(self.spec, self.log_signer, self.log_dir)

    def append(self) -> list[log_forge.LogEntry]:
        return log_forge.append(self.op(), trust_status.loggable(self.forge.root))

    def cosign(self, witnesses: list[Witness] | None = None) -> None:
        op = self.op()
        for w in self.witnesses if witnesses is None else witnesses:
            line = w.cosign(op.checkpoint_note(), op.verifier, op.prove_consistency)
            op.add_cosignature(line, w.verifier)

    def view(self, state: ClientState | None = None, source: Path | None = None):
        return log_forge.open_view(self.spec, source or self.log_dir, state or self.state)

    def status(self, which: str, **kw):
        view = kw.pop("view", None) or log_forge.try_view(self.spec, self.log_dir, self.state)
        return self.forge.status(which, **kw) if view is None else trust_status.release_status(
            self.forge.root, self.forge.releases[which], pins=self.forge.pins(), view=view)


def name_log(forge, tmp_path: Path, *, required: int = 1) -> Logged:
    """Policy 2 of ``forge`` names a log with two witnesses (``required`` of them must cosign)."""
    log_signer = note.parse_signer(note.generate_key(ORIGIN)[0])
    w_signers = [note.parse_signer(note.generate_key(f"witness-{n}.test", note.ALG_COSIGNATURE_V1)[0]) for n in "ab"]
    spec = trust_policy.LogSpec(
        origin=ORIGIN, key=log_signer.verifier().text(), witnesses_required=required,
        witnesses=[trust_policy.WitnessSpec(name=f"W{n}", affiliation=f"Witness {n}", key=w.verifier().text())
                   for n, w in zip("ab", w_signers, strict=True)])
    current = forge.chain().current
    forge.change_policy(trust_policy.changed(current, log=spec), ["ann", "bob", "cat"])
    witnesses = [Witness(tmp_path / f"witness-{i}.json", w) for i, w in enumerate(w_signers)]
    return Logged(forge, tmp_path / "log", ClientState(tmp_path / "client.json"), log_signer, witnesses, spec)


@pytest.fixture
def logged(forge, tmp_path) -> Logged:
    return name_log(forge, tmp_path)


def test_a_release_is_published_only_once_its_statements_are_logged_and_cosigned(logged: Logged) -> None:
    before = logged.status("published")
    assert before.status == "draft"
    assert "no verified copy of log forge.test/log" in before.check("log").detail
    new = logged.append()
    kinds = [e.statement.kind for e in new]
    assert kinds.count("policy") >= 6 and kinds.count("approval") == 7 and "publication" in kinds
    assert kinds.index("publication") > max(i for i, k in enumerate(kinds) if k == "policy")
    uncosigned = logged.status("published")
    assert uncosigned.status == "draft" and "0 of the 1 required witness cosignatures" in uncosigned.check("log").detail
    logged.cosign()
    after = logged.status("published")
    assert after.status == "published", after.explain()
    about = {e.index for e in new if e.statement.subject_name == "model/sample@1.0.0"}
    # 3 counted approvals (one of Acme's two), the rebuild, the publication
    assert after.check("log").holds and len(after.logged) == 5 and set(after.logged.values()) <= about
    for index in after.logged.values():
        assert logged.view().prove(index)  # the proof is checked against the accepted root first
    assert logged.append() == []  # appending again adds nothing: each statement is logged once


def test_an_approval_that_is_not_logged_does_not_count(logged: Logged) -> None:
    logged.append()
    logged.cosign()
    late = logged.forge.sign("cat", "approval", "draft", st.ApprovalPredicate(signed_at=utc_now()))
    status = logged.status("draft")
    reasons = {r.source: r.reason for r in status.rejected}
    assert "not in the transparency log yet" in reasons[f"{late.parent.name}/{late.name}"]


def test_a_revocation_hidden_from_a_checkout_is_still_found_in_the_log(logged: Logged) -> None:
    forge = logged.forge
    chain = forge.chain()
    for who in ("bob", "cat"):
        trust_status.revoke(forge.root, forge.releases["published"], forge.signer(who), forge.keys[who],
                            reason="the training data held a copyrighted book", severity="high", chain=chain)
    logged.append()
    logged.cosign()
    assert logged.status("published").status == "revoked"
    # A git remote (or a peer) drops the revocation files: the checkout no longer holds them.
    folder = st.statements_dir(forge.root, trust_status.Ref("model", "sample", "1.0.0"))
    for path in folder.glob("revocation-*.json"):
        path.unlink()
    hidden = logged.status("published")
    assert hidden.status == "revoked", hidden.explain()
    assert all(st_.source.startswith("log#") for _, st_ in hidden.revocations.counted)


def test_a_rolled_back_copy_of_the_log_is_refused(logged: Logged, tmp_path: Path) -> None:
    logged.append()
    logged.cosign()
    old = tmp_path / "old-log"
    shutil.copytree(logged.log_dir, old)
    forge = logged.forge
    for who in ("bob", "cat"):
        trust_status.revoke(forge.root, forge.releases["published"], forge.signer(who), forge.keys[who],
                            reason="a later problem was found in the weights", severity="critical")
    logged.append()
    logged.cosign()
    assert logged.status("published").status == "revoked"  # the client accepted the bigger tree
    # A mirror shows the older log, before the revocations (and the checkout lost them too).
    for path in st.statements_dir(forge.root, trust_status.Ref("model", "sample", "1.0.0")).glob("revocation-*"):
        path.unlink()
    shown = trust_status.release_status(forge.root, forge.releases["published"], pins=forge.pins(),
                                        view=log_forge.try_view(logged.spec, old, logged.state))
    assert shown.status == "draft"
    assert "rollback" in shown.check("log").detail


def test_a_copy_of_the_log_with_a_rewritten_entry_is_refused(logged: Logged, tmp_path: Path) -> None:
    logged.append()
    logged.cosign()
    bundle = max((p for p in (logged.log_dir / "tile" / "entries").rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    data = bytearray(bundle.read_bytes())
    data[40] ^= 1
    bundle.write_bytes(bytes(data))
    why = log_forge.try_view(logged.spec, logged.log_dir, ClientState(tmp_path / "fresh.json"))
    assert isinstance(why, str) and "does not hold the tree its checkpoint signs" in why
    assert logged.status("published").status == "draft"


def test_a_checkpoint_not_signed_by_the_policys_log_key_is_refused(logged: Logged, tmp_path: Path) -> None:
    impostor = note.parse_signer(note.generate_key(ORIGIN)[0])
    with pytest.raises(InputError, match="is not the log key the policy names"):
        log_forge.operator(logged.spec, impostor, tmp_path / "impostor")
    from trust.log.operator import LogOperator

    fake = LogOperator(tmp_path / "impostor", ORIGIN, impostor)
    fake.append([e for e in (p.read_bytes() for p in logged.forge.root.rglob("approval-*.json"))])
    why = log_forge.try_view(logged.spec, tmp_path / "impostor", logged.state)
    assert isinstance(why, str) and "no signature by the log key" in why


def test_a_key_compromised_from_a_log_entry_counts_only_before_it(logged: Logged) -> None:
    forge = logged.forge
    logged.append()
    logged.cosign()
    cut = logged.view().size
    # amy's key leaks; the attacker approves another release with a back-dated time, and the
    # operator logs it (the key is still valid when it arrives).
    forge.sign("amy", "approval", "other", st.ApprovalPredicate(signed_at="2020-01-01T00:00:00Z"))
    assert [e.index for e in logged.append()] == [cut]
    logged.cosign()
    current = forge.chain().current
    amy = forge.keys["amy"].keyid
    forge.change_policy(trust_policy.changed(current, compromised_from_entry={amy: cut}), ["ann", "bob", "cat"])
    logged.append()
    logged.cosign()
    other = logged.status("other")
    reasons = [r.reason for r in other.approvals.uncounted]
    assert any("declared compromised from log entry" in r and f"at entry {cut}" in r for r in reasons), reasons
    published = logged.status("published")  # amy's approval there was logged before the cut
    assert published.status == "published" and not any(
        "compromised" in r.reason for r in published.approvals.uncounted)
    # A new statement by the key is not even logged: the operator verifies against the policy.
    forge.sign("amy", "approval", "draft", st.ApprovalPredicate(signed_at=utc_now()))
    assert logged.append() == []


def test_the_log_spec_refuses_bad_keys() -> None:
    log_key = note.parse_signer(note.generate_key(ORIGIN)[0]).verifier().text()
    witness = note.parse_signer(note.generate_key("w.test", note.ALG_COSIGNATURE_V1)[0]).verifier().text()
    with pytest.raises(ValueError, match="Ed25519 note key"):
        trust_policy.LogSpec(origin=ORIGIN, key=witness)
    with pytest.raises(ValueError, match="cosignature/v1"):
        trust_policy.LogSpec(origin=ORIGIN, key=log_key,
                             witnesses=[trust_policy.WitnessSpec(name="W", affiliation="X", key=log_key)])
    with pytest.raises(ValueError, match="exceeds"):
        trust_policy.LogSpec(origin=ORIGIN, key=log_key, witnesses_required=1)
    with pytest.raises(ValueError):
        trust_policy.LogSpec(origin=ORIGIN, key="not a key")


def test_a_policy_change_hidden_from_the_log_publishes_nothing(logged: Logged) -> None:
    """Policy 2 names the log, so the change to policy 3 holds for publication only once logged:
    a change shown to this checkout but kept out of the log (a split view of the governance) is
    no policy a client acts on."""
    forge = logged.forge
    logged.append()
    logged.cosign()
    assert logged.status("published").status == "published"
    dan = forge.member("dan")
    forge.change_policy(trust_policy.changed(forge.chain().current, add=[dan]), ["ann", "bob", "cat", "dan"])
    hidden = logged.status("published")
    assert hidden.status == "draft"
    assert "policy 3's change is not in log forge.test/log enough to hold" in hidden.check("log").detail
    new = logged.append()
    assert {e.statement.subject_name for e in new} == {"policy/3"}
    logged.cosign()
    assert logged.status("published").status == "published"


def test_a_policy_change_can_never_drop_or_replace_the_log(logged: Logged, tmp_path: Path) -> None:
    forge = logged.forge
    current = forge.chain().current
    dropped = current.model_copy(update={"version": current.version + 1, "log": None})
    with pytest.raises(PolicyError, match="drops the transparency log policy 2 names"):
        forge.change_policy(dropped, ["ann", "bob", "cat"])
    other = note.parse_signer(note.generate_key("attacker.test/log")[0])
    replaced = trust_policy.changed(current, log=trust_policy.LogSpec(origin="attacker.test/log",
                                                                    key=other.verifier().text()))
    with pytest.raises(PolicyError, match="replaces the transparency log of policy 2"):
        forge.change_policy(replaced, ["ann", "bob", "cat"])
    # Written straight into policy/ with a quorum's signatures, the chain itself refuses it.
    folder = trust_policy.policy_dir(forge.root)
    save_model(dropped, folder / f"{dropped.version}.yaml")
    for who in ("ann", "bob", "cat"):
        data = st.sign(forge.signer(who), "policy", dropped.subject, dropped.digest,
                       st.PolicyPredicate(signed_at=utc_now(), version=dropped.version))
        st.write(trust_policy.signatures_dir(folder, dropped.version), "policy", forge.keys[who].keyid, data)
    with pytest.raises(PolicyError, match="can never turn the log off"):
        trust_policy.load_chain(forge.root)


def test_an_oversize_statement_never_reaches_the_log_and_blocks_nothing(logged: Logged) -> None:
    forge = logged.forge
    rel = forge.releases["other"]
    huge = st.BuildPredicate(signed_at=utc_now(), builder="dan", public_key=forge.keys["dan"].public_key,
                             source_commit="0" * 40, machine={"notes": "x" * 70_000})
    data = st.sign(forge.signer("dan"), "build", f"model/{rel.name}@{rel.version}", rel.release_digest, huge)
    assert len(data) > 0xFFFF
    path = st.write(st.statements_dir(forge.root, trust_status.Ref("model", "other", "1.0.0")), "build",
                    forge.keys["dan"].keyid, data)
    assert any(path.name in p and "too large" in p for p in trust_status.statement_problems(forge.root))
    new = logged.append()  # everything else is appended
    assert new and all(e.statement.digest != st.sha256_bytes(data) for e in new)


def test_an_unreadable_copy_of_the_log_is_a_reason_not_a_crash(logged: Logged, tmp_path: Path) -> None:
    logged.append()
    logged.cosign()
    bundle = next(p for p in (logged.log_dir / "tile" / "entries").rglob("*") if p.is_file())
    bundle.unlink()
    bundle.mkdir()  # a hostile mirror: a directory where a bundle belongs
    why = log_forge.try_view(logged.spec, logged.log_dir, ClientState(tmp_path / "fresh.json"))
    assert isinstance(why, str) and "cannot be read" in why
    assert logged.status("published").status == "draft"
