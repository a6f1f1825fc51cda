"""Status computed from verified statements: the test forge's published release and its draft."""

from __future__ import annotations

from trust import status as ts


def test_the_published_release_is_published_with_its_reasons(trust_forge):
    status = trust_forge.status("published")
    assert status.status == "published", status.explain()
    assert [c.name for c in status.checks if not c.holds] == []
    assert status.check("approvals").detail == "3 of 3 approvals counted; affiliation Acme signed 2 times, counted once"
    assert status.check("rebuilds").detail.startswith("1 of 1 identical rebuilds by another party (bob, Beta)")
    assert "published by cat (Cyan)" in status.check("publication").detail
    assert status.policy.version == 1


def test_the_draft_says_what_it_still_needs(trust_forge):
    status = trust_forge.status("draft")
    assert status.status == "draft"
    assert status.check("approvals").detail == ("2 of 3 approvals counted; affiliation Acme signed 2 times, counted once; "
                                                "2 of 3 distinct affiliations")
    assert status.check("rebuilds").detail == "0 of 1 identical rebuilds: no identical rebuild by another party"
    assert not status.check("publication").holds
    # Both Acme approvals carry the same second; the earlier (then the smaller keyid) counts.
    (counted_acme,) = [m.name for m, _ in status.approvals.counted if m.affiliation == "Acme"]
    other = ({"ann", "amy"} - {counted_acme}).pop()
    assert [r.reason for r in status.approvals.uncounted] == [f"{other}'s: affiliation Acme already has 1 counted"]


def test_every_statement_of_the_test_forge_verifies(trust_forge):
    assert ts.statement_problems(trust_forge.root) == []


def test_a_bad_statement_is_a_problem_named_with_its_file(forge):
    from trust.statements import ApprovalPredicate

    added = forge.sign("eve", "approval", "draft", ApprovalPredicate(signed_at="2026-11-01T00:00:00Z"))
    stray = forge.root / "registry" / "entries" / "models" / "gone" / "1.0.0.statements" / "approval-x.json"
    stray.parent.mkdir(parents=True)
    stray.write_text("{}")
    problems = ts.statement_problems(forge.root)
    rel = added.relative_to(forge.root)
    assert problems == ["registry/entries/models/gone/1.0.0.statements/approval-x.json: there is no release "
                        "model/gone@1.0.0 for it to be about",
                        f"{rel}: key {forge.keys['eve'].keyid[:12]} is not in policy 1"]
    assert ts.statement_problems(forge.root, only={added.resolve()}) == problems[1:]


# --- resolving a bare name by verified status (moved here from registry.catalog) -----------------


def _revoke(forge, which: str) -> None:
    from trust.statements import RevocationPredicate

    for who in ("bob", "cat"):  # two affiliations: the revoke rule holds
        forge.sign(who, "revocation", which, RevocationPredicate(
            signed_at="2026-11-30T00:00:00Z", reason="A source's license does not allow redistribution.",
            severity="high"))


def test_a_bare_name_is_the_newest_verified_published_release(forge, caplog):
    from registry.refs import Ref

    release, status = ts.resolve(forge.root, "sample", pins=forge.pins())
    assert (release.version, status.status) == ("1.0.0", "published")  # not the newer draft 1.1.0
    assert ts.resolve(forge.root, Ref("model", "sample", "1.1.0"), pins=forge.pins())[1].status == "draft"
    _revoke(forge, "published")
    release, status = ts.resolve(forge.root, "model/sample", pins=forge.pins())
    assert (release.version, status.status) == ("1.1.0", "draft")
    assert "has no published release; using the draft model/sample@1.1.0" in caplog.text
    # Named exactly, a revoked release is still found (to read about it); for use it is refused.
    assert ts.resolve(forge.root, "model/sample@1.0.0", pins=forge.pins())[1].status == "revoked"


def test_a_revoked_release_is_refused_for_use_unless_allowed(forge, caplog):
    from commonforge.errors import VerificationError

    _revoke(forge, "published")
    try:
        ts.for_use(forge.root, "model/sample@1.0.0", pins=forge.pins())
        raise AssertionError("a revoked release was handed out for use")
    except VerificationError as err:
        # Both counted revocations are named, in the order they count (ties: by keyid, random per run).
        assert err.message.startswith("model/sample@1.0.0 is revoked (")
        assert "bob (Beta), high: A source's license" in err.message and "cat (Cyan), high:" in err.message
        assert "--allow-revoked" in err.hint
    release, status = ts.for_use(forge.root, "model/sample@1.0.0", pins=forge.pins(), allow_revoked=True)
    assert status.status == "revoked" and "is REVOKED" in caplog.text


def test_a_name_whose_every_release_is_revoked_resolves_to_none(forge):
    from commonforge.errors import NotFoundError

    _revoke(forge, "other")
    try:
        ts.resolve(forge.root, "other", pins=forge.pins())
        raise AssertionError("resolved a name whose only release is revoked")
    except NotFoundError as err:
        assert "every release of model/other is revoked" in str(err)


def test_governance_lists_who_vouched(trust_forge):
    gov = trust_forge.status("published").governance()
    assert gov["status"] == "published" and gov["policy_version"] == 1
    assert sorted(a["affiliation"] for a in gov["approvals"]) == ["Acme", "Beta", "Cyan"]
    assert [r["name"] for r in gov["rebuilds"]] == ["bob"]
    assert gov["publication"]["name"] == "cat" and gov["publication"]["policy_version"] == 1
    assert gov["builders"][0]["name"] == "ann" and gov["needs"] == []
    draft = trust_forge.status("draft").governance()
    assert draft["needs"][0].startswith("approvals: 2 of 3 approvals counted")
