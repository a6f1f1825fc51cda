"""``commonforge pull REF --from URL`` through ``commonforge.cli.main`` in this process, against a real
peer on loopback; then, in an empty directory with no checkout, the user registry alone answers
``list``, ``show`` and ``verify``; a refused pull exits 1 naming the peer."""

from __future__ import annotations

import os
import shutil
from types import SimpleNamespace

import pytest

import commonforge.cli as forge_cli
from registry.store import Store
from tests.helpers import forge_env
from tests.sharing.conftest import REF
from tests.sharing.test_peer import start, stop
from tests.sharing.test_pull import state_hash


@pytest.fixture
def cli(tmp_path, capsys, monkeypatch):
    """``cli(*args, code=0)``: ``commonforge *args`` with the user registry, log state and pins under
    ``tmp_path``, run from an empty directory, no checkout (COMMONFORGE_ROOT unset)."""
    env = forge_env(tmp_path, COMMONFORGE_USER_REGISTRY=str(tmp_path / "user"),
                    COMMONFORGE_LOG_STATE=str(tmp_path / "log-state.json"),
                    COMMONFORGE_TRUST_PINS=str(tmp_path / "pins.json"),
                    XDG_CONFIG_HOME=str(tmp_path / "config"), XDG_STATE_HOME=str(tmp_path / "state"),
                    XDG_DATA_HOME=str(tmp_path / "data"))
    for name in list(os.environ):
        if name not in env:
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.chdir(empty)

    def run(*args: str, code: int = 0) -> SimpleNamespace:
        capsys.readouterr()
        got = forge_cli.main(list(args))
        out = capsys.readouterr()
        assert got == code, f"commonforge {' '.join(args)} exited {got}, not {code}:\n{out.out}\n{out.err}"
        return SimpleNamespace(out=out.out, err=out.err)

    run.user = tmp_path / "user"
    return run


def test_pull_then_list_show_verify_without_a_checkout(shared_forge, cli) -> None:
    peer = start(shared_forge.root, shared_forge.store, shared_forge.log_dir)
    try:
        got = cli("pull", REF, "--from", peer.base, "--timeout", "5")
    finally:
        stop(peer)
    assert f"pulled {REF}" in got.out and peer.base in got.out
    store = Store(cli.user / ".forge" / "store")
    assert all(store.verify(a.sha256) for a in shared_forge.release.manifest.artifacts)
    assert "model/sample" in cli("list").out
    shown = cli("show", "sample").out
    assert "1.0.0" in shown and "published" in shown
    # verify checks the release's status against a local copy of the log, which pull does not keep:
    # give it the user's copy (what `commonforge peers sync` / `log monitor` maintain).
    shutil.copytree(shared_forge.log_dir, cli.user.parent / "log-copy")
    os.environ["COMMONFORGE_LOG"] = str(cli.user.parent / "log-copy")
    verified = cli("verify", "sample").out
    assert "all 2 artifacts match" in verified and "published" in verified


def test_a_refused_pull_exits_1_naming_the_peer(shared_forge, cli, tmp_path) -> None:
    forge = shared_forge.copy(tmp_path / "peer")
    blob = Store(forge.store).object_path(forge.release.manifest.artifacts[0].sha256)
    blob.chmod(0o644)
    data = bytearray(blob.read_bytes())
    data[7] ^= 1
    blob.write_bytes(bytes(data))
    before = state_hash(cli.user)
    peer = start(forge.root, forge.store, forge.log_dir)
    try:
        got = cli("pull", REF, "--from", peer.base, "--timeout", "5", code=1)
    finally:
        stop(peer)
    assert peer.base in got.err and "does not hash" in got.err
    assert state_hash(cli.user) == before
