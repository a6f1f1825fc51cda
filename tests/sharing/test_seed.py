"""A release over BitTorrent: a maintainer seeds it (deterministic v2 torrent beside the release, a
signed sharing statement, logged), and a client pulls it from the swarm (a real libtorrent session on
loopback), with the HTTP peer serving only the registry: its store is empty, so every byte that
lands came through the torrent and was checked against the manifest."""

from __future__ import annotations

from pathlib import Path

import pytest

from commonforge.errors import VerificationError
from registry.store import Store
from sharing import seed as seeding
from sharing import torrent
from sharing.pull import pull
from tests.sharing.conftest import REF
from tests.sharing.test_peer import start, stop
from tests.sharing.test_pull import FAST, client, state_hash  # noqa: F401 - client is a fixture


def seeded(shared_forge, tmp_path: Path):
    forge = shared_forge.copy(tmp_path / "origin")
    signer, info = forge.signers["cat"]
    data, path, statement = seeding.share(forge.root, Store(forge.store), forge.release, signer, info)
    forge.log_all()
    assert path.read_bytes() == data and statement.name.startswith("sharing-")
    session = torrent.session("127.0.0.1:0")
    torrent.seed(session, data, seeding.seed_directory(forge.root, Store(forge.store), forge.release), timeout=10)
    empty_store = tmp_path / "no-blobs"
    empty_store.mkdir()
    return forge, data, session, start(forge.root, empty_store, forge.log_dir)


def test_a_release_is_pulled_from_the_swarm_and_verified(shared_forge, client, tmp_path) -> None:  # noqa: F811
    forge, data, session, peer = seeded(shared_forge, tmp_path)
    try:
        again, _ = seeding.make_release_torrent(forge.root, Store(forge.store), forge.release)
        assert again == data  # deterministic: the same files give the same torrent
        result = pull(REF, [peer.base], **client,
                      blobs=seeding.torrent_blobs([("127.0.0.1", session.listen_port())], timeout=20))
    finally:
        stop(peer)
        torrent.close_session(session)
    assert result.status.status == "published" and result.blobs == 2
    store = Store(client["dest_root"] / ".forge" / "store")
    assert all(store.verify(a.sha256) for a in result.release.manifest.artifacts)
    assert (client["dest_root"] / "registry/entries/models/sample/1.0.0.torrent").read_bytes() == data


def test_a_torrent_nobody_vouched_for_is_refused(shared_forge, client, tmp_path) -> None:  # noqa: F811
    forge, data, session, peer = seeded(shared_forge, tmp_path)
    statements = forge.root / "registry/entries/models/sample/1.0.0.statements"
    for path in statements.glob("sharing-*"):
        path.unlink()  # the peer serves the torrent without the maintainer's statement
    before = state_hash(client["dest_root"])
    try:
        with pytest.raises(VerificationError, match="no maintainer's sharing statement"):
            pull(REF, [peer.base], **client, blobs=seeding.torrent_blobs([("127.0.0.1", session.listen_port())],
                                                                        timeout=5))
    finally:
        stop(peer)
        torrent.close_session(session)
    assert state_hash(client["dest_root"]) == before
