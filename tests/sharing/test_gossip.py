"""``commonforge peers sync`` (gossip) and ``commonforge log monitor --peer`` against real uvicorn peers on
loopback serving a real log (real keys, statements and witnesses: tests/trust/conftest.py's forge,
tests/trust/log/test_forge.py's name_log): checkpoints and advertised peers are recorded, an
advertised peer is never contacted until added, a fork between two peers is an equivocation with
both signed checkpoints as evidence, and an unreachable peer is a warning naming it."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from registry.schema import utc_now
from tests.helpers import forge_env
from tests.sharing.test_peer import start, stop
from tests.sharing.test_peers_cli import Cli
from tests.trust.conftest import forge, trust_forge  # noqa: F401 - fixtures
from tests.trust.log.test_forge import ORIGIN, name_log
from trust import statements as st
from trust.log.operator import LogOperator
from trust.log.tiles import TileLog
from trust.log.witness import Witness


@pytest.fixture
def logged(forge, tmp_path):  # noqa: F811
    """The test forge with policy 2 naming a log, every statement appended and cosigned by both witnesses."""
    logged = name_log(forge, tmp_path)
    logged.append()
    logged.cosign()
    return logged


@pytest.fixture
def cli(logged, tmp_path, capsys) -> Cli:
    return Cli(forge_env(tmp_path, COMMONFORGE_ROOT=str(logged.forge.root),
                         COMMONFORGE_TRUST_PINS=str(logged.forge.pins_path),
                         COMMONFORGE_PEERS=str(tmp_path / "config" / "peers.json"),
                         COMMONFORGE_LOG=str(tmp_path / "own-log"),  # no copy of its own
                         COMMONFORGE_LOG_STATE=str(tmp_path / "state" / "log-state.json")), capsys)


@pytest.fixture
def store(tmp_path) -> Path:
    (tmp_path / "store").mkdir()
    return tmp_path / "store"


def saved_peers(cli: Cli) -> dict[str, dict]:
    return {p["url"]: p for p in json.loads(Path(cli.env["COMMONFORGE_PEERS"]).read_text())["peers"]}


def free_port() -> int:
    """A port nothing listens on (bound, then closed)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fork_of(logged, dest: Path) -> Path:
    """A second history the log key signed, of the same size: the last entry swapped for another
    statement, cosigned by witness b (with a memory of its own, so it has not seen the real one)."""
    entries = list(TileLog(logged.log_dir).entries())
    other = logged.forge.sign("cat", "approval", "other", st.ApprovalPredicate(signed_at=utc_now()))
    op = LogOperator(dest, ORIGIN, logged.log_signer)
    op.append([*entries[:-1], other.read_bytes()])
    wb = Witness(dest.parent / "wb-fork.json", logged.witnesses[1].signer)
    op.add_cosignature(wb.cosign(op.checkpoint_note(), op.verifier, op.prove_consistency), wb.verifier)
    return dest


def test_sync_records_checkpoints_and_learned_peers_and_never_contacts_a_learned_one(logged, cli, store,
                                                                                     tmp_path) -> None:
    root = logged.forge.root
    second = start(root, store, logged.log_dir)  # a real peer, advertised by the first
    listener = socket.socket()  # a second advertised address: any connection to it would queue here
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    silent = f"http://127.0.0.1:{listener.getsockname()[1]}"
    first = start(root, store, logged.log_dir,
                  peers=[second.base, silent + "/", "http://user:pw@127.0.0.1:2", "http://127.0.0.1:1/../x"])
    try:
        cli("peers", "add", first.base, "--name", "first")
        synced = cli("peers", "sync", "--timeout", "2")
        tree = TileLog(logged.log_dir)
        assert f"first ({first.base}): reached; commonforge " in synced.out
        assert f"log {ORIGIN} at size {tree.size}" in synced.out and "advertises 2 peer(s) (2 new)" in synced.out
        assert synced.out.splitlines()[-3].endswith("OK")
        for url in (second.base, silent):
            assert f"learned {url} from first ({first.base}), never contacted" in synced.out
        assert "advertised what is not a peer URL" in synced.err and "/../x" in synced.err

        record = saved_peers(cli)[first.base]
        assert record["last_contact"].endswith("Z") and record["last_error"] is None
        assert record["learned"] == [second.base, silent]
        cp = record["checkpoint"]
        assert (cp["origin"], cp["size"], cp["root"]) == (ORIGIN, tree.size, tree.root().hex())
        assert cp["note"] == (logged.log_dir / "checkpoint").read_text()
        accepted = json.loads(Path(cli.env["COMMONFORGE_LOG_STATE"]).read_text())
        assert str(tree.size) in json.dumps(accepted)

        # Neither advertised peer heard from this client: no request, not even a connection.
        assert second.server.server_state.total_requests == 0
        listener.setblocking(False)
        with pytest.raises(BlockingIOError):
            listener.accept()
        listed = cli("peers", "list").out
        assert f"{second.base}  learned from first ({first.base}), never contacted — `commonforge peers add " \
               f"{second.base}` to use it" in listed

        # Added, it is contacted and recorded; it is no longer a learned peer.
        cli("peers", "add", second.base)
        cli("peers", "sync", "--timeout", "2")
        assert second.server.server_state.total_requests > 0
        assert saved_peers(cli)[second.base]["checkpoint"]["size"] == tree.size
        listed = cli("peers", "list").out
        assert f"{second.base}  learned from" not in listed and f"{silent}  learned from first" in listed
        with pytest.raises(BlockingIOError):
            listener.accept()
    finally:
        stop(first)
        stop(second)
        listener.close()


def test_sync_and_monitor_catch_a_fork_between_two_peers(logged, cli, store, tmp_path) -> None:
    fork = fork_of(logged, tmp_path / "fork")
    real, forked = start(logged.forge.root, store, logged.log_dir), start(logged.forge.root, store, fork)
    try:
        cli("peers", "add", real.base)
        cli("peers", "add", forked.base)
        synced = cli("peers", "sync", "--timeout", "2", code=3).out
        assert f"EQUIVOCATION between {real.base} and {forked.base}" in synced
        assert "nothing accepted" in synced and synced.rstrip().splitlines()[-1] == "NOT OK (exit 3)"
        for directory, url in ((logged.log_dir, real.base), (fork, forked.base)):
            assert f"evidence, the checkpoint shown by {url}:" in synced
            for line in (directory / "checkpoint").read_text().splitlines():
                assert "    " + line in synced  # each signed checkpoint, signatures and all
        assert not Path(cli.env["COMMONFORGE_LOG_STATE"]).exists()  # neither was accepted

        watched = cli("log", "monitor", "--peer", real.base, "--peer", forked.base, "--timeout", "2",
                      "--state", str(tmp_path / "monitor.json"), code=3).out
        assert f"EQUIVOCATION between {real.base} and {forked.base}" in watched
        assert watched.count("evidence, the checkpoint shown by") == 2
        # A directory and a peer side by side: the same fork.
        mixed = cli("log", "monitor", str(fork), "--peer", real.base, "--timeout", "2",
                    "--state", str(tmp_path / "mixed.json"), code=3).out
        assert f"EQUIVOCATION between {fork} and {real.base}" in mixed or \
            f"EQUIVOCATION between {real.base} and {fork}" in mixed
    finally:
        stop(real)
        stop(forked)


def test_an_unreachable_peer_is_a_warning_naming_it(logged, cli, store, tmp_path) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    alive = start(logged.forge.root, store, logged.log_dir)
    try:
        cli("peers", "add", dead, "--name", "gone")
        cli("peers", "add", alive.base)
        synced = cli("peers", "sync", "--timeout", "2")
        assert f"warning: peer {dead} cannot be reached" in synced.err
        assert f"gone ({dead}): NOT REACHED" in synced.out and synced.out.rstrip().endswith("OK")
        record = saved_peers(cli)
        assert record[dead]["last_contact"] is None and "cannot be reached" in record[dead]["last_error"]
        assert record[alive.base]["checkpoint"]["size"] == TileLog(logged.log_dir).size

        watched = cli("log", "monitor", "--peer", dead, "--peer", alive.base, "--timeout", "2",
                      "--state", str(tmp_path / "monitor.json"), code=1).out
        assert f"PROBLEM {dead}: peer {dead} cannot be reached" in watched and f"  {alive.base}: size " in watched
        assert "bad input" not in watched
        assert "is not an http(s) URL" in cli("log", "monitor", "--peer", "ftp://x", code=2).err

        cli("peers", "remove", alive.base)
        alone = cli("peers", "sync", "--timeout", "2", code=3)
        assert "no peer could be reached (1 tried)" in alone.out and f"warning: peer {dead}" in alone.err
    finally:
        stop(alive)


def test_sync_without_a_log_in_the_policy_still_gossips(trust_forge, tmp_path, capsys, store) -> None:  # noqa: F811
    plain = trust_forge.copy(tmp_path / "plain")  # policy 1 names no log
    cli = Cli(forge_env(tmp_path, COMMONFORGE_ROOT=str(plain.root), COMMONFORGE_TRUST_PINS=str(plain.pins_path),
                        COMMONFORGE_PEERS=str(tmp_path / "peers.json"),
                        COMMONFORGE_LOG_STATE=str(tmp_path / "state.json")), capsys)
    peer = start(plain.root, store, None, peers=["http://127.0.0.1:8123"])
    try:
        cli("peers", "add", peer.base)
        synced = cli("peers", "sync", "--timeout", "2")
        assert "no log" in synced.out and "warning: no log checked: policy 1 names no transparency log" in synced.err
        assert saved_peers(cli)[peer.base]["learned"] == ["http://127.0.0.1:8123"]
        assert saved_peers(cli)[peer.base]["checkpoint"] is None
    finally:
        stop(peer)
