"""``sharing.pull``: a release from real peers (uvicorn on loopback) into the user's own registry,
verified against the governance policy and the transparency log before anything lands."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from registry.store import Store
from sharing.fetch import Timeouts
from sharing.pull import PullError, pull
from tests.sharing.conftest import REF
from tests.sharing.test_peer import start, stop
from trust import policy as trust_policy
from trust import status as trust_status
from trust.log.client import ClientState

FAST = Timeouts(connect=1, read=2, total=5)


def state_hash(root: Path) -> str:
    """Every file of a user registry and its store (the pull staging area is neither)."""
    h = hashlib.sha256()
    if root.exists():
        for p in sorted(root.rglob("*")):
            if p.is_file() and "pull-staging" not in p.parts:
                h.update(str(p.relative_to(root)).encode() + b"\0" + p.read_bytes())
    return h.hexdigest()


@pytest.fixture
def client(tmp_path):
    """Where pulls land, with this user's own pins and accepted checkpoint."""
    return {"dest_root": tmp_path / "user", "state": ClientState(tmp_path / "log-state.json"),
            "pins": trust_policy.Pins(tmp_path / "pins.json"), "timeouts": FAST}


def test_a_published_release_is_pulled_verified_from_two_peers(shared_forge, client) -> None:
    a = start(shared_forge.root, shared_forge.store, shared_forge.log_dir)
    b = start(shared_forge.root, shared_forge.store, shared_forge.log_dir)
    try:
        result = pull("sample", [a.base, b.base], **client)
    finally:
        stop(a)
        stop(b)
    root = client["dest_root"]
    assert result.release.ref == REF and result.status.status == "published", result.status.explain()
    assert result.blobs == 2 and result.bytes == 640_000
    store = Store(root / ".forge" / "store")
    for artifact in result.release.manifest.artifacts:
        assert store.verify(artifact.sha256)
    assert (root / "registry" / "entries" / "models" / "sample" / "1.0.0.yaml").is_file()
    assert not [p for p in (root / ".forge" / "pull-staging").rglob("*") if p.is_file()]  # staging cleaned
    # The user registry keeps the log it was verified against: its status reads it offline.
    from trust.log import forge as log_forge

    assert log_forge.default_source(root) == root / ".forge" / "log"
    copy = log_forge.try_view(shared_forge.spec, log_forge.default_source(root), ClientState(root.parent / "fresh.json"))
    assert not isinstance(copy, str), copy
    again = trust_status.release_status(root, result.release, pins=client["pins"], view=copy)
    assert again.status == "published"


def test_a_peer_that_is_down_is_skipped_and_named(shared_forge, client) -> None:
    a = start(shared_forge.root, shared_forge.store, shared_forge.log_dir)
    down = start(shared_forge.root, shared_forge.store, shared_forge.log_dir)
    stop(down)
    try:
        result = pull(REF, [down.base, a.base], **client)
    finally:
        stop(a)
    assert result.status.status == "published" and result.peers == [a.base]
    assert any(down.base in why for why in result.skipped)


def test_a_tampered_blob_on_the_only_peer_changes_nothing(shared_forge, client, tmp_path) -> None:
    forge = shared_forge.copy(tmp_path / "peer")
    artifact = forge.release.manifest.artifacts[0]
    blob = Store(forge.store).object_path(artifact.sha256)
    blob.chmod(0o644)
    data = bytearray(blob.read_bytes())
    data[1000] ^= 1
    blob.write_bytes(bytes(data))
    before = state_hash(client["dest_root"])
    peer = start(forge.root, forge.store, forge.log_dir)
    try:
        with pytest.raises(Exception) as caught:
            pull(REF, [peer.base], **client)
    finally:
        stop(peer)
    assert peer.base in str(caught.value)
    assert state_hash(client["dest_root"]) == before
    assert not (client["dest_root"] / "registry" / "entries" / "models").exists()


def test_a_revoked_release_is_not_pulled_even_when_the_peer_hides_the_revocation(shared_forge, client,
                                                                                   tmp_path) -> None:
    forge = shared_forge.copy(tmp_path / "peer")
    chain = trust_policy.load_chain(forge.root)
    for who in ("bob", "cat"):
        signer, info = forge.signers[who]
        trust_status.revoke(forge.root, forge.release, signer, info, chain=chain, severity="critical",
                            reason="the weights reproduce a private dataset verbatim")
    forge.log_all()
    for path in (forge.root / "registry" / "entries" / "models" / "sample" / "1.0.0.statements").glob("revocation-*"):
        path.unlink()  # the peer serves the release without its revocations; its log still has them
    peer = start(forge.root, forge.store, forge.log_dir)
    before = state_hash(client["dest_root"])
    try:
        with pytest.raises(PullError, match="is revoked"):
            pull(REF, [peer.base], **client)
        with pytest.raises(PullError, match="no published release of model/sample"):
            pull("sample", [peer.base], **client)
    finally:
        stop(peer)
    assert state_hash(client["dest_root"]) == before
