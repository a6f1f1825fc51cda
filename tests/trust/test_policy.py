"""The policy: the shipped empty bootstrap, the numbers a valid policy must have, propose/sign/apply."""

from __future__ import annotations

import pytest

from commonforge.errors import InputError, NotFoundError
from registry.catalog import Registry
from tests.helpers import REPO
from trust import policy as tp
from trust import status as ts
from trust.errors import PolicyError


def test_the_repository_ships_only_the_empty_bootstrap():
    assert tp.versions_in(tp.policy_dir(REPO)) == [0]
    chain = tp.load_chain(REPO)
    assert chain.current is None and chain.bootstrap.maintainers == []
    assert not tp.proposals_dir(REPO).exists()
    release = Registry(REPO).release("model/forge-tiny@1.0.0")
    status = ts.release_status(REPO, release, chain=chain)
    assert status.status == "draft"
    assert "only its bootstrap policy (version 0)" in status.check("policy").detail


@pytest.mark.parametrize("people, floor", [
    ({"Acme": 2, "Beta": 1, "Cyan": 1}, 3),  # ⌈8/3⌉
    ({"Acme": 4, "Beta": 1, "Cyan": 1}, 3),  # ⌈12/3⌉ = 4, but one counted per affiliation allows 3
    ({"A": 1, "B": 1, "C": 1, "D": 1, "E": 1}, 4),  # ⌈10/3⌉
])
def test_a_policy_change_needs_two_thirds_of_the_maintainers_as_far_as_the_cap_lets_them_count(trust_forge, people, floor):
    one = trust_forge.member("ann")
    members = [one.model_copy(update={"affiliation": aff}) for aff, n in people.items() for _ in range(n)]
    assert tp.policy_floor(members, 1) == floor


def test_invalid_policies_are_refused(trust_forge):
    p1 = trust_forge.chain().current
    data = p1.model_dump(mode="json")
    with pytest.raises(ValueError, match="less than 3"):
        tp.Policy.model_validate({**data, "rules": {**data["rules"], "policy": {"signatures": 2, "max_per_affiliation": 1,
                                                                                "affiliations": 2}}})
    with pytest.raises(ValueError, match="a key is listed twice"):
        tp.Policy.model_validate({**data, "maintainers": data["maintainers"] + data["maintainers"][:1]})
    swapped = [{**data["maintainers"][0], "public_key": data["maintainers"][1]["public_key"]}, *data["maintainers"][1:]]
    with pytest.raises(ValueError, match="holds the public key of"):
        tp.Policy.model_validate({**data, "maintainers": swapped})
    with pytest.raises(InputError, match="rules.publish cannot be met"):  # only Acme and Beta left
        tp.changed(p1, remove=[trust_forge.keys["cat"].keyid])
    with pytest.raises(ValueError, match="lists no maintainers"):
        tp.Policy.model_validate({**data, "version": 0})


def test_propose_sign_apply(forge):
    p1 = forge.chain().current
    p2 = tp.changed(p1, add=[forge.member("dan")])
    assert p2.rules.policy.signatures == 4  # five maintainers in four affiliations: ⌈10/3⌉
    path = tp.propose(forge.root, p2)
    assert path == tp.proposals_dir(forge.root) / "2.yaml"
    with pytest.raises(PolicyError, match="the pending proposal is version 2, not 3"):
        tp.sign_proposal(forge.root, forge.signer("ann"), 3)
    for who in ("ann", "bob", "cat"):
        tp.sign_proposal(forge.root, forge.signer(who), 2)
    with pytest.raises(PolicyError, match="not signed enough yet: 3 of 4 signatures of policy 2's maintainers"):
        tp.apply(forge.root)
    tp.sign_proposal(forge.root, forge.signer("dan"), 2)
    assert tp.apply(forge.root) == p2
    assert tp.versions_in(tp.policy_dir(forge.root)) == [0, 1, 2]
    assert not (tp.proposals_dir(forge.root) / "2.yaml").exists()
    assert forge.chain().current == p2
    with pytest.raises(NotFoundError, match="policy version 3"):
        tp.apply(forge.root)
    assert forge.status("published").status == "published"  # nobody left, nothing lost
