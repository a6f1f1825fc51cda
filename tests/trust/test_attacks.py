"""The attacks of issue 12 that must fail, one test each, in-process against the test forge.

Each test says which rule stops the attack and checks the message that says so.
"""

from __future__ import annotations

import base64
import json
import shutil
from datetime import UTC, datetime, timedelta

import pytest

from commonforge.errors import ForgeError, VerificationError
from registry.digest import canonical_json
from registry.refs import Ref
from registry.schema import BuildManifest, Release
from registry.yamlio import save_model
from trust import policy as tp
from trust import statements as st
from trust import status as ts
from trust.errors import PolicyError
from trust.statements import ApprovalPredicate, RebuildPredicate, RevocationPredicate


def at(stamp: str) -> datetime:
    return st.parse_time(stamp)


def reasons(status) -> list[str]:
    return [line for line in status.explain() if line.startswith("  ") and ": " in line]


def approval_file(forge, which: str, who: str):
    rel = forge.releases[which]
    return st.statements_dir(forge.root, Ref("model", rel.name, rel.version)) / f"approval-{forge.keys[who].keyid}.json"


def rewrite_payload(path, change) -> None:
    """Change the statement inside an envelope, keeping the old signature (what a forger can do)."""
    envelope = json.loads(path.read_text())
    statement = json.loads(base64.b64decode(envelope["payload"]))
    change(statement)
    envelope["payload"] = base64.b64encode(canonical_json(statement)).decode()
    path.write_text(json.dumps(envelope))


# --- forged signatures --------------------------------------------------------------------


def test_an_altered_approval_does_not_verify_and_the_release_falls_back_to_draft(forge):
    path = approval_file(forge, "published", "cat")
    rewrite_payload(path, lambda s: s["predicate"].update(comment="nothing to see"))
    status = forge.status("published")
    assert status.status == "draft"
    assert any("the signature claimed by cat (Cyan" in r and "forged or altered" in r for r in reasons(status))


def test_a_signature_by_another_key_under_a_maintainers_keyid_does_not_verify(forge):
    draft = forge.releases["draft"]
    forged = st.sign(forge.signer("eve"), "approval", "model/sample@1.1.0", draft.release_digest,
                     ApprovalPredicate(signed_at="2026-11-01T00:00:00Z"))
    envelope = json.loads(forged)
    envelope["signatures"][0]["keyid"] = forge.keys["cat"].keyid  # claim to be cat
    (approval_file(forge, "draft", "cat")).write_text(json.dumps(envelope))
    status = forge.status("draft")
    assert len(status.approvals.counted) == 2
    assert any("claimed by cat" in r and "forged or altered" in r for r in reasons(status))


# --- replays --------------------------------------------------------------------------------


@pytest.mark.parametrize("target", ["other", "draft"])
def test_an_approval_replayed_for_another_release_or_version_does_not_count(forge, target):
    approval_file(forge, target, "cat").parent.mkdir(exist_ok=True)
    shutil.copy(approval_file(forge, "published", "cat"), approval_file(forge, target, "cat"))
    status = forge.status(target)
    published = forge.releases["published"]
    assert any(f"it is about model/sample@1.0.0 sha256:{published.release_digest[:12]}, not "
               f"model/{forge.releases[target].name}@{forge.releases[target].version}" in r for r in reasons(status))
    assert not any(m.name == "cat" for m, _ in status.approvals.counted)


def test_approvals_for_one_build_do_not_count_for_another_build_of_the_same_version(forge):
    published = forge.releases["published"]
    data = published.manifest.model_dump(mode="json", exclude_none=True)
    data["artifacts"][0]["sha256"] = "e" * 64  # the same name and version, built differently
    rebuilt = Release.from_manifest(BuildManifest.model_validate(data))
    status = forge.status("published", release=rebuilt)
    assert status.status == "draft"
    assert status.approvals.counted == []
    assert any(f"sha256:{published.release_digest[:12]}, not model/sample@1.0.0 sha256:{rebuilt.release_digest[:12]}" in r
               for r in reasons(status))


# --- keys that do not count -----------------------------------------------------------------


def test_a_key_not_in_the_policy_does_not_count(forge):
    forge.sign("eve", "approval", "draft", ApprovalPredicate(signed_at="2026-11-01T00:00:00Z"))
    status = forge.status("draft")
    assert len(status.approvals.counted) == 2
    assert any(f"key {forge.keys['eve'].keyid[:12]} is not in policy 1" in r for r in reasons(status))


def test_a_signature_made_after_the_keys_not_after_date_does_not_count(forge):
    forge.sign("cat", "approval", "draft", ApprovalPredicate(signed_at="2100-06-01T00:00:00Z"))
    status = forge.status("draft", now=at("2100-07-01T00:00:00Z"))
    assert len(status.approvals.counted) == 2
    assert any("cat (Cyan" in r and "after the key's not-after date 2100-01-01T00:00:00Z" in r for r in reasons(status))


def test_a_signature_dated_in_the_future_does_not_count(forge):
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).replace(microsecond=0).isoformat().replace("+00:00", "Z")
    forge.sign("cat", "approval", "draft", ApprovalPredicate(signed_at=tomorrow))
    assert any(f"dated it {tomorrow}, in the future" in r for r in reasons(forge.status("draft")))


def test_a_key_removed_in_a_later_policy_loses_its_approvals(forge):
    p1 = forge.chain().current
    forge.change_policy(tp.changed(p1, remove=[forge.keys["cat"].keyid], add=[forge.member("dan")]),
                        ["ann", "bob", "cat", "dan"])
    status = forge.status("published")
    assert status.policy.version == 2
    assert status.status == "draft"
    assert any(f"key {forge.keys['cat'].keyid[:12]} is not in policy 2" in r for r in reasons(status))


def test_the_same_key_is_never_counted_twice(forge):
    # A copy of bob's approval under cat's file name is refused by name ...
    shutil.copy(approval_file(forge, "draft", "bob"), approval_file(forge, "draft", "cat"))
    status = forge.status("draft")
    assert len(status.approvals.counted) == 2
    assert any(f"must be approval-{forge.keys['bob'].keyid}.json" in r for r in reasons(status))
    # ... and the same statement twice (from two folders, say) counts once.
    statements, _ = st.read_all(approval_file(forge, "draft", "bob").parent)
    bob = next(s for s in statements if s.keyid == forge.keys["bob"].keyid)
    draft = forge.releases["draft"]
    tally = tp.tally(forge.chain().current, [bob, bob], action="publish", kind="approval", what="approvals",
                     subject_name="model/sample@1.1.0", subject_digest=draft.release_digest,
                     now=datetime.now(UTC))
    assert len(tally.counted) == 1
    assert tally.uncounted[0].reason == f"bob's key {forge.keys['bob'].keyid[:12]} is already counted once"


# --- one party alone ------------------------------------------------------------------------


def test_one_affiliation_holding_most_keys_can_neither_publish_nor_change_the_policy_alone(forge):
    p1 = forge.chain().current
    forge.change_policy(tp.changed(p1, add=[forge.member("acme3"), forge.member("acme4")]), ["ann", "bob", "cat"])
    p2 = forge.chain().current
    acme = ["ann", "amy", "acme3", "acme4"]
    assert sum(m.affiliation == "Acme" for m in p2.maintainers) == 4 and len(p2.maintainers) == 6
    other = forge.releases["other"]
    ts.attest_build(forge.root, other, forge.signer("ann"), forge.keys["ann"])
    for who in acme:
        forge.sign(who, "approval", "other", ApprovalPredicate(signed_at="2026-11-01T00:00:00Z"))
    forge.sign("amy", "rebuild", "other", RebuildPredicate(signed_at="2026-11-01T00:00:00Z", result="identical",
                                                           rebuilt_digest=other.release_digest))
    status = forge.status("other")
    assert status.check("approvals").detail == ("1 of 3 approvals counted; affiliation Acme signed 4 times, counted once; "
                                                "1 of 3 distinct affiliations")
    assert any("amy is of the builder's affiliation Acme: not an independent rebuild" in r for r in reasons(status))
    with pytest.raises(VerificationError, match="cannot be published under policy 2: 1 of 3 approvals counted"):
        ts.publish(forge.root, other, forge.signer("ann"), forge.keys["ann"])
    for who in ("ann", "amy"):  # two Acme revocations are one affiliation's
        forge.sign(who, "revocation", "published", RevocationPredicate(
            signed_at="2026-11-01T00:00:00Z", reason="Acme would like this model gone today.", severity="high"))
    assert forge.status("published").status == "published"
    # Acme alone tries to lower the publish rule to its own one signature.
    alone = tp.PublishRule(signatures=1, max_per_affiliation=4, affiliations=1, identical_rebuilds=0)
    hostile = tp.changed(p2, rules=p2.rules.model_copy(update={"publish": alone}))
    with pytest.raises(PolicyError, match="signatures of policy 2's maintainers on policy 3 counted; "
                                          "affiliation Acme signed 4 times, counted once"):
        forge.change_policy(hostile, acme)


def test_k_minus_one_colluding_keys_fall_short_everywhere(forge):
    other = forge.releases["other"]
    ts.attest_build(forge.root, other, forge.signer("ann"), forge.keys["ann"])
    for who in ("bob", "cat"):  # 2 of the 3 approvals publish needs
        forge.sign(who, "approval", "other", ApprovalPredicate(signed_at="2026-11-01T00:00:00Z"))
    forge.sign("bob", "rebuild", "other", RebuildPredicate(signed_at="2026-11-01T00:00:00Z", result="identical",
                                                           rebuilt_digest=other.release_digest))
    with pytest.raises(VerificationError, match="2 of 3 approvals counted; 2 of 3 distinct affiliations"):
        ts.publish(forge.root, other, forge.signer("bob"), forge.keys["bob"])
    forge.sign("cat", "revocation", "published", RevocationPredicate(   # 1 of the 2 a revocation needs
        signed_at="2026-11-01T00:00:00Z", reason="Cyan alone thinks this should go.", severity="low"))
    status = forge.status("published")
    assert status.status == "published" and status.check("revocation").detail.startswith("1 of 2 revocations counted")
    p1 = forge.chain().current
    with pytest.raises(PolicyError, match="2 of 3 signatures of policy 1's maintainers on policy 2 counted"):
        forge.change_policy(tp.changed(p1, add=[forge.member("dan")]), ["bob", "cat", "dan"])


# --- the policy chain -----------------------------------------------------------------------


def test_a_policy_signed_only_by_its_own_new_keys_is_refused(forge):
    p1 = forge.chain().current
    newcomers = ["dan", "eve", "nova", "omni"]
    takeover = tp.changed(p1, remove=[m.keyid for m in p1.maintainers],
                          add=[forge.member(n, ["maintainer", "rebuilder"]) for n in newcomers])
    with pytest.raises(PolicyError, match="0 of 3 signatures of policy 1's maintainers on policy 2 counted"):
        forge.change_policy(takeover, newcomers)
    # Moving the proposal into policy/ by hand (skipping `apply`) does not help: readers verify the chain.
    proposals, policies = tp.proposals_dir(forge.root), tp.policy_dir(forge.root)
    shutil.copytree(tp.signatures_dir(proposals, 2), tp.signatures_dir(policies, 2))
    shutil.copy(proposals / "2.yaml", policies / "2.yaml")
    with pytest.raises(PolicyError, match="policy 2 .* is not signed as the rules require: 0 of 3 signatures of policy 1"):
        forge.status("published")


def test_a_rollback_to_the_previous_policy_is_refused(forge):
    p1 = forge.chain().current
    forge.change_policy(tp.changed(p1, add=[forge.member("dan")]), ["ann", "bob", "cat", "dan"])
    assert forge.chain().current.version == 2  # remembered in the pins
    (tp.policy_dir(forge.root) / "2.yaml").unlink()
    with pytest.raises(PolicyError, match="holds policy versions up to 1, but you accepted version 2 before"):
        forge.chain()
    (tp.policy_dir(forge.root) / "1.yaml").unlink()  # back to the bootstrap: every release a draft
    with pytest.raises(PolicyError, match="holds policy versions up to 0, but you accepted version 2 before"):
        forge.chain()


def test_a_forked_policy_version_is_refused(forge):
    p1 = forge.chain().current
    forge.change_policy(tp.changed(p1, add=[forge.member("dan")]), ["ann", "bob", "cat", "dan"])
    forge.chain()  # version 2 (with dan) accepted
    for path in (tp.policy_dir(forge.root) / "2.yaml", tp.signatures_dir(tp.policy_dir(forge.root), 2)):
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    forge.change_policy(tp.changed(p1, add=[forge.member("nova")]), ["ann", "bob", "cat", "nova"])
    with pytest.raises(PolicyError, match="the chain forked|but you accepted sha256:"):
        forge.chain()


def test_a_replaced_founding_policy_is_refused_after_first_use(forge):
    forge.chain()  # trust on first use: the pins now hold policy 1's digest
    path = tp.policy_dir(forge.root) / "1.yaml"
    path.write_text(path.read_text().replace("2100-01-01T00:00:00Z", "2100-06-01T00:00:00Z"))
    with pytest.raises(PolicyError, match="policy 1 .* is not signed as the rules require"):
        forge.chain()  # an edited policy 1 no longer carries its founders' signatures
    # A whole new founding policy, properly signed by other founders, is what only the pin stops.
    newcomers = ["dan", "eve", "nova", "omni"]
    founders = [forge.member(n, ["maintainer", "rebuilder"]) for n in newcomers]
    shutil.rmtree(tp.policy_dir(forge.root) / "1.statements")
    path.unlink()
    forge.change_policy(tp.founding(forge.root, founders), newcomers[:3])  # apply reads no pins
    with pytest.raises(PolicyError, match="policy 1 of .* but you trusted sha256:"):
        forge.chain()


def test_a_skipped_policy_version_is_refused(forge):
    p1 = forge.chain().current
    skipping = tp.Policy.model_validate({**tp.changed(p1, add=[forge.member("dan")]).model_dump(), "version": 3})
    with pytest.raises(PolicyError, match="a proposal must be version 2, not 3"):
        tp.propose(forge.root, skipping)
    with pytest.raises(PolicyError, match="policy version 3 cannot follow version 1"):
        tp.check_change(p1, skipping, [], datetime.now(UTC))
    save_model(skipping, tp.policy_dir(forge.root) / "3.yaml")
    with pytest.raises(PolicyError, match="skips policy version"):
        forge.chain()


# --- rebuilds -------------------------------------------------------------------------------


def test_a_rebuild_by_the_builder_or_saying_differs_does_not_count(forge):
    draft = forge.releases["draft"]
    identical = {"signed_at": "2026-11-01T00:00:00Z", "result": "identical", "rebuilt_digest": draft.release_digest}
    forge.sign("ann", "rebuild", "draft", RebuildPredicate(**identical))  # ann built it
    forge.sign("amy", "rebuild", "draft", RebuildPredicate(**identical))  # ann's colleague at Acme
    forge.sign("bob", "rebuild", "draft", RebuildPredicate(signed_at="2026-11-01T00:00:00Z", result="different",
                                                           rebuilt_digest="f" * 64, first_differing_stage="train"))
    status = forge.status("draft")
    found = reasons(status)
    assert any("ann rebuilt with the builder's own key: a rebuild must be by another party" in r for r in found)
    assert any("amy is of the builder's affiliation Acme" in r for r in found)
    assert any("bob's rebuild differs (sha256:ffffffffffff, first differing stage: train)" in r for r in found)
    assert status.check("rebuilds").detail == "0 of 1 identical rebuilds: no identical rebuild by another party"


def test_a_rebuild_statement_cannot_claim_identical_with_another_digest(forge):
    draft = forge.releases["draft"]
    forge.sign("bob", "rebuild", "draft", RebuildPredicate(signed_at="2026-11-01T00:00:00Z", result="identical",
                                                           rebuilt_digest="f" * 64))
    assert any("bob's rebuild differs" in r for r in reasons(forge.status("draft")))
    assert draft.release_digest != "f" * 64


# --- revocation and compromise ----------------------------------------------------------------


def test_a_revoked_release_is_never_what_a_bare_name_resolves_to(forge):
    for who in ("bob", "cat"):
        forge.sign(who, "revocation", "published", RevocationPredicate(
            signed_at="2026-11-01T00:00:00Z", reason="The training data turned out to include a non-free text.",
            severity="critical"))
    status = forge.status("published")
    assert status.status == "revoked"
    assert status.check("revocation").detail == "REVOKED: 2 of 2 revocations counted"
    release, resolved = ts.resolve(forge.root, "sample", pins=forge.pins())
    assert release.version == "1.1.0" and resolved.status == "draft"
    _, pinned = ts.resolve(forge.root, "model/sample@1.0.0", pins=forge.pins())
    assert pinned.status == "revoked"
    with pytest.raises(ForgeError, match="revoked; a revoked release is never published again"):
        ts.publish(forge.root, forge.releases["published"], forge.signer("ann"), forge.keys["ann"])


def test_a_revoked_release_is_not_served_evaluated_or_loaded_unless_insisted(forge, tmp_path):
    """The attack: serve a release the maintainers revoked. The loader every user goes through
    (server, chat, generate, eval, the explorer) refuses it; ``--allow-revoked`` is the only way."""
    from commonforge.errors import VerificationError
    from commonforge.settings import Settings
    from serving.loader import load_release
    from tests.helpers import cli, forge_env

    for who in ("bob", "cat"):
        forge.sign(who, "revocation", "published", RevocationPredicate(
            signed_at="2026-11-01T00:00:00Z", reason="The training data turned out to include a non-free text.",
            severity="critical"))
    with pytest.raises(VerificationError, match="model/sample@1.0.0 is revoked"):
        load_release("model/sample@1.0.0", settings=Settings.load(forge.root))
    # Allowed, it gets past the status to the release itself (a sample without weights): the refusal was the status's.
    with pytest.raises(ForgeError, match="has no config.json"):
        load_release("model/sample@1.0.0", settings=Settings.load(forge.root), allow_revoked=True)
    env = forge_env(tmp_path, COMMONFORGE_TRUST_PINS=str(forge.pins_path))
    for command in (["serve", "model/sample@1.0.0", "--port", "0"], ["eval", "model/sample@1.0.0", "--limit", "1"]):
        result = cli(*command, cwd=forge.root, env=env, timeout=120)
        assert result.returncode == 1, result.stderr
        assert "model/sample@1.0.0 is revoked (" in result.stderr and "--allow-revoked" in result.stderr


def test_a_revoked_release_is_never_fine_tuned_and_nothing_is_written(forge, tmp_path, monkeypatch):
    """The attack: adapt a model the maintainers revoked and carry its problem into a new release.
    `finetune` resolves the base through the same status as the loader and stops before training."""
    from commonforge.settings import Settings
    from pipelines.finetune import finetune

    for who in ("bob", "cat"):
        forge.sign(who, "revocation", "published", RevocationPredicate(
            signed_at="2026-11-01T00:00:00Z", reason="The training data turned out to include a non-free text.",
            severity="critical"))
    data = tmp_path / "chats.jsonl"
    data.write_text(json.dumps({"messages": [{"role": "user", "content": "hi"},
                                             {"role": "assistant", "content": "hello"}]}) + "\n")
    user = tmp_path / "user-registry"
    monkeypatch.setenv("COMMONFORGE_USER_REGISTRY", str(user))
    monkeypatch.setenv("COMMONFORGE_TRUST_PINS", str(forge.pins_path))
    with pytest.raises(VerificationError, match="model/sample@1.0.0 is revoked"):
        finetune(Settings.load(forge.root), "model/sample@1.0.0", data, name="sample-tuned")
    assert not user.exists()


def test_approvals_made_after_their_keys_compromise_time_do_not_count(forge):
    p1 = forge.chain().current
    since = "2026-06-01T00:00:00Z"  # before the test forge's statements were made (now)
    forge.change_policy(tp.changed(p1, compromised={forge.keys["cat"].keyid: since}, add=[forge.member("dan")]),
                        ["ann", "bob", "cat", "dan"])
    status = forge.status("published")
    assert status.status == "draft"
    assert any("cat (Cyan" in r and f"after the key was declared compromised since {since}" in r for r in reasons(status))
    # What cat signed before the compromise still counts.
    forge.sign("cat", "approval", "other", ApprovalPredicate(signed_at="2026-05-01T00:00:00Z"))
    assert [m.name for m, _ in forge.status("other").approvals.counted] == ["cat"]


def test_a_publication_naming_a_policy_this_checkout_lacks_is_not_believed(forge):
    from trust.statements import PublicationPredicate

    forge.sign("cat", "publication", "draft", PublicationPredicate(
        signed_at="2026-11-01T00:00:00Z", policy_version=5, policy_digest="a" * 64, counted=["b" * 64]))
    status = forge.status("draft")
    assert status.publication is None
    assert any("it names policy 5, which this checkout does not have (newest: 1)" in r for r in reasons(status))
