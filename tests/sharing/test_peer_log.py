"""A peer serves the forge's log over HTTP, and a client's status reads it: the release counts as
published from a peer's copy, a lagging peer after a newer one is a rollback, and a peer whose
entries were rewritten is refused (real uvicorn peer, real keys and statements)."""

from __future__ import annotations

import shutil
from pathlib import Path

from sharing.logsource import http_source
from tests.sharing.test_peer import start, stop
from tests.trust.conftest import forge, trust_forge  # noqa: F401 - fixtures
from tests.trust.log.test_forge import name_log
from trust import status as trust_status
from trust.log import forge as log_forge
from trust.log.client import ClientState


def status_from(logged, url: str, state: ClientState):
    view = log_forge.try_view(logged.spec, http_source(url, timeout=2), state)
    return trust_status.release_status(logged.forge.root, logged.forge.releases["published"],
                                       pins=logged.forge.pins(), view=view)


def test_a_release_is_published_from_a_peers_copy_of_the_log(forge, tmp_path: Path) -> None:  # noqa: F811
    logged = name_log(forge, tmp_path)
    logged.append()
    logged.cosign()
    old = tmp_path / "old-log"
    shutil.copytree(logged.log_dir, old)
    for who in ("bob", "cat"):
        trust_status.revoke(forge.root, forge.releases["published"], forge.signer(who), forge.keys[who],
                            reason="the weights memorised a private address book", severity="critical")
    logged.append()
    logged.cosign()
    # The checkout lost the revocation files (a git remote dropped them): only the log has them.
    for path in (forge.root / "registry" / "entries" / "models" / "sample" / "1.0.0.statements").glob("revocation-*"):
        path.unlink()
    store = tmp_path / "store"
    store.mkdir()
    current, lagging = start(forge.root, store, logged.log_dir), start(forge.root, store, old)
    try:
        state = ClientState(tmp_path / "client.json")
        assert status_from(logged, lagging.base, state).status == "published"  # before the revocation
        assert status_from(logged, current.base, state).status == "revoked"
        rolled_back = status_from(logged, lagging.base, state)  # the peer shows the older tree again
        assert rolled_back.status == "draft" and "rollback" in rolled_back.check("log").detail
        bundle = max((p for p in (logged.log_dir / "tile" / "entries").rglob("*") if p.is_file()),
                     key=lambda p: p.stat().st_size)
        data = bytearray(bundle.read_bytes())
        data[50] ^= 1
        bundle.write_bytes(bytes(data))
        tampered = status_from(logged, current.base, ClientState(tmp_path / "fresh.json"))
        assert tampered.status == "draft" and "does not hold the tree its checkpoint signs" in tampered.check("log").detail
        assert current.base in tampered.check("log").detail
    finally:
        stop(current)
        stop(lagging)
