"""A throwaway test forge with real keys: four maintainers in three affiliations, policy 1, and
statements that make one release published and another a draft. Built once per session; a
test that changes anything works on ``forge.copy(tmp_path)``.

    maintainers (policy 1)  ann (Acme, maintainer+rebuilder, ECDSA; she built the releases)
                            amy (Acme, maintainer+rebuilder), bob (Beta, maintainer+rebuilder, Ed25519,
                            passphrase), cat (Cyan, maintainer, Ed25519)
    not in policy 1         dan (Delta), eve (Eve Corp), acme3, acme4 (Acme), nova (Nova), omni (Omni)
    rules (the bootstrap's) publish 3 counted, 1 per affiliation, 3 affiliations, 1 identical rebuild;
                            revoke 2 / 1 / 2; policy 3 / 1 / 3 (⌈2·4/3⌉)
    model/sample@1.0.0      built by ann; approved by ann, amy, bob, cat; rebuilt identically by bob;
                            published by cat
    model/sample@1.1.0      built by ann; approved by ann, amy, bob: a draft
    model/other@1.0.0       nothing signed
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import pytest

from registry.catalog import Registry
from registry.schema import BuildManifest, Release
from tests.helpers import make_registry, sample, write_yaml
from trust import keys as trust_keys
from trust import policy as trust_policy
from trust import statements as st
from trust import status as trust_status

NOT_AFTER = "2100-01-01T00:00:00Z"
PASSPHRASE = b"correct horse battery staple"
PEOPLE = {  # name: (affiliation, key type, roles in policy 1 or None)
    "ann": ("Acme", "ecdsa", ["maintainer", "rebuilder"]),
    "amy": ("Acme", "ecdsa", ["maintainer", "rebuilder"]),
    "bob": ("Beta", "ed25519", ["maintainer", "rebuilder"]),
    "cat": ("Cyan", "ed25519", ["maintainer"]),
    "dan": ("Delta", "ecdsa", None),
    "eve": ("Eve Corp", "ecdsa", None),
    "acme3": ("Acme", "ecdsa", None),
    "acme4": ("Acme", "ed25519", None),
    "nova": ("Nova", "ecdsa", None),
    "omni": ("Omni", "ed25519", None),
}


def release_entry(root: Path, name: str, version: str, artifact_sha: str) -> Release:
    """A release entry like tests.helpers.make_registry writes, under another name/version/digest."""
    manifest = sample("manifest")
    manifest.update(name=name, version=version)
    manifest["recipe"]["sha256"] = Registry(root).recipe("recipe/sample@1").digest
    manifest["artifacts"][0]["sha256"] = artifact_sha
    rel = Release.from_manifest(BuildManifest.model_validate(manifest))
    write_yaml(root / "registry" / "entries" / "models" / name / f"{version}.yaml",
               rel.model_dump(mode="json", exclude_none=True))
    return rel


@dataclass
class TrustForge:
    root: Path
    keys_dir: Path
    pins_path: Path
    keys: dict[str, trust_keys.KeyInfo]
    releases: dict[str, Release] = field(default_factory=dict)

    def signer(self, name: str):
        return trust_keys.load_signer(self.keys_dir, name, PASSPHRASE if name == "bob" else None)[0]

    def pins(self) -> trust_policy.Pins:
        return trust_policy.Pins(self.pins_path)

    def chain(self, now: datetime | None = None) -> trust_policy.Chain:
        return trust_policy.load_chain(self.root, pins=self.pins(), now=now)

    def status(self, which: str, now: datetime | None = None, release: Release | None = None):
        return trust_status.release_status(self.root, release or self.releases[which], pins=self.pins(), now=now)

    def sign(self, who: str, kind: str, which: str, predicate: st.Predicate, *, about: Release | None = None,
             folder: Path | None = None) -> Path:
        """A statement signed by ``who`` about ``about`` (default: the release ``which``), written into
        ``which``'s statements (or ``folder``): no membership check, as an attacker would write it."""
        rel, target = about or self.releases[which], self.releases[which]
        data = st.sign(self.signer(who), kind, f"model/{rel.name}@{rel.version}", rel.release_digest, predicate)
        folder = folder or st.statements_dir(self.root, _ref(target))
        return st.write(folder, kind, self.keys[who].keyid, data)

    def change_policy(self, new: trust_policy.Policy, signers: list[str]) -> None:
        """Propose ``new``, have ``signers`` sign it, apply it (raises when the thresholds fail)."""
        trust_policy.propose(self.root, new)
        for who in signers:
            trust_policy.sign_proposal(self.root, self.signer(who), new.version)
        trust_policy.apply(self.root)

    def member(self, who: str, roles=("maintainer",)) -> trust_policy.Maintainer:
        return trust_policy.member(self.keys[who].public(), list(roles), NOT_AFTER)

    def copy(self, dest: Path) -> TrustForge:
        shutil.copytree(self.root, dest / "forge")
        return TrustForge(dest / "forge", self.keys_dir, dest / "pins.json", self.keys, dict(self.releases))


def _ref(rel: Release):
    from registry.refs import Ref

    return Ref("model", rel.name, rel.version)


@pytest.fixture(scope="session")
def trust_forge(tmp_path_factory) -> TrustForge:
    base = tmp_path_factory.mktemp("trust-forge")
    root = make_registry(base / "forge")
    keys_dir = base / "keys"
    keys = {name: trust_keys.generate(keys_dir, name, aff, ktype, PASSPHRASE if name == "bob" else None)
            for name, (aff, ktype, _) in PEOPLE.items()}
    forge = TrustForge(root, keys_dir, base / "pins.json", keys)
    forge.releases["published"] = Registry(root).release("model/sample@1.0.0")
    forge.releases["draft"] = release_entry(root, "sample", "1.1.0", "c" * 64)
    forge.releases["other"] = release_entry(root, "other", "1.0.0", "d" * 64)
    founders = [forge.member(n, roles) for n, (_, _, roles) in PEOPLE.items() if roles]
    forge.change_policy(trust_policy.founding(root, founders), ["ann", "bob", "cat"])
    chain = forge.chain()
    for which, approvers in (("published", ["ann", "amy", "bob", "cat"]), ("draft", ["ann", "amy", "bob"])):
        rel = forge.releases[which]
        trust_status.attest_build(root, rel, forge.signer("ann"), keys["ann"])
        for who in approvers:
            trust_status.approve(root, rel, forge.signer(who), keys[who], comment=f"{who} checked it", chain=chain)
    published = forge.releases["published"]
    trust_status.attest_rebuild(root, published, forge.signer("bob"), keys["bob"],
                                rebuilt_digest=published.release_digest, chain=chain)
    trust_status.publish(root, published, forge.signer("cat"), keys["cat"], chain=chain)
    return forge


@pytest.fixture
def forge(trust_forge, tmp_path) -> TrustForge:
    """A copy of the session's test forge this test may change."""
    return trust_forge.copy(tmp_path)
