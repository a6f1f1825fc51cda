"""A published forge to share, built once per session with real keys, a real transparency log
and real artifacts in a real store:

    maintainers   ann (Acme, maintainer), bob (Beta, maintainer + rebuilder), cat (Cyan, maintainer)
    policy 2      names the log forge.test/log, witness W1 (1 cosignature required)
    model/sample@1.0.0   two artifacts (600 KB and 40 KB) in the store; built by ann, approved by all
                         three, rebuilt identically by bob, published by cat, every statement logged
                         and cosigned

A test that changes it works on ``shared_forge.copy(tmp_path)``; a peer serves it with
``tests.sharing.test_peer.start(forge.root, forge.store, forge.log_dir)``.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from registry.catalog import Registry
from registry.schema import BuildManifest, Release
from registry.store import Store
from tests.helpers import found_forge, make_registry, sample, write_yaml
from trust import policy as trust_policy
from trust import status as trust_status
from trust.log import forge as log_forge
from trust.log import note
from trust.log.client import ClientState
from trust.log.operator import LogOperator
from trust.log.witness import Witness

ORIGIN = "forge.test/log"
REF = "model/sample@1.0.0"


@dataclass
class SharedForge:
    root: Path
    store: Path
    log_dir: Path
    log_signer: note.Signer
    witness: Witness
    spec: trust_policy.LogSpec
    signers: dict
    release: Release

    def op(self) -> LogOperator:
        return log_forge.operator(self.spec, self.log_signer, self.log_dir)

    def log_all(self) -> None:
        """Append every statement that counts and have the witness cosign."""
        op = self.op()
        log_forge.append(op, trust_status.loggable(self.root))
        line = self.witness.cosign(op.checkpoint_note(), op.verifier, op.prove_consistency)
        op.add_cosignature(line, self.witness.verifier)

    def copy(self, dest: Path) -> SharedForge:
        dest.mkdir(parents=True, exist_ok=True)
        for name in ("forge", "store", "log"):
            shutil.copytree(getattr(self, {"forge": "root", "store": "store", "log": "log_dir"}[name]), dest / name)
        witness = Witness(dest / "witness.json", self.witness.signer)
        shutil.copyfile(self.witness.state.path, dest / "witness.json")
        return SharedForge(dest / "forge", dest / "store", dest / "log", self.log_signer, witness, self.spec,
                           self.signers, self.release)


def real_release(root: Path, store: Store) -> Release:
    manifest = sample("manifest")
    manifest["recipe"]["sha256"] = Registry(root).recipe("recipe/sample@1").digest
    for artifact, size in zip(manifest["artifacts"], (600_000, 40_000), strict=True):
        data = os.urandom(size)
        artifact["sha256"], artifact["size"] = store.put_bytes(data)
    rel = Release.from_manifest(BuildManifest.model_validate(manifest))
    write_yaml(root / "registry" / "entries" / "models" / "sample" / "1.0.0.yaml",
               rel.model_dump(mode="json", exclude_none=True))
    return rel


@pytest.fixture(scope="session")
def shared_forge(tmp_path_factory) -> SharedForge:
    base = tmp_path_factory.mktemp("shared-forge")
    root = make_registry(base / "forge")
    store = Store(base / "store")
    release = real_release(root, store)
    return publish_with_log(root, base / "store", base / "log", base, release)


def publish_with_log(root: Path, store: Path, log_dir: Path, base: Path, release: Release,
                     origin: str = ORIGIN) -> SharedForge:
    """Give the forge at ``root`` its governance (ann, bob, cat: policy 1, then policy 2 naming the log
    ``origin`` with witness W1, 1 cosignature required) and publish ``release`` with every statement
    logged and cosigned. Keys and the witness's memory go under ``base``."""
    signers = found_forge(root, base / "keys", {"ann": ("Acme", ["maintainer"]),
                                                 "bob": ("Beta", ["maintainer", "rebuilder"]),
                                                 "cat": ("Cyan", ["maintainer"])})
    log_signer = note.parse_signer(note.generate_key(origin)[0])
    w_signer = note.parse_signer(note.generate_key("w1.test", note.ALG_COSIGNATURE_V1)[0])
    spec = trust_policy.LogSpec(origin=origin, key=log_signer.verifier().text(), witnesses_required=1,
                                witnesses=[trust_policy.WitnessSpec(name="W1", affiliation="Witness One",
                                                                    key=w_signer.verifier().text())])
    founded = trust_policy.load_chain(root).current
    assert founded is not None, "found_forge made policy 1"
    trust_policy.propose(root, trust_policy.changed(founded, log=spec))
    for signer, _ in signers.values():
        trust_policy.sign_proposal(root, signer, 2)
    trust_policy.apply(root)
    forge = SharedForge(root, store, log_dir, log_signer, Witness(base / "witness.json", w_signer),
                        spec, signers, release)
    chain = trust_policy.load_chain(root)
    ann, bob, cat = (signers[n] for n in ("ann", "bob", "cat"))
    trust_status.attest_build(root, release, *ann)
    for signer, info in (ann, bob, cat):
        trust_status.approve(root, release, signer, info, chain=chain)
    trust_status.attest_rebuild(root, release, *bob, rebuilt_digest=release.release_digest, chain=chain)
    forge.log_all()
    view = log_forge.open_view(spec, forge.log_dir, ClientState(base / "builder-state.json"))
    trust_status.publish(root, release, *cat, chain=chain, view=view)
    forge.log_all()
    return forge
