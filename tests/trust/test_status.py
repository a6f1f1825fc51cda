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
