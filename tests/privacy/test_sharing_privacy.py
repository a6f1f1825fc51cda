"""`pull`, `peer serve` and `seed` talk to nobody but the peers named (issue 14).

The socket audit (audit/sitecustomize.py) blocks anything beyond loopback in every Python process
and, with FORGE_AUDIT_ALL=1, records the loopback ports dialled too; libtorrent's sockets are C++
and bypass the hook, so `seed` is checked from the process's own sockets in /proc."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import time
from pathlib import Path

from tests.helpers import REPO, forge_env
from tests.privacy.audit import audited_env, connects, processes, violations
from tests.sharing.conftest import REF, shared_forge  # noqa: F401 - the fixture
from tests.sharing.test_peer import start, stop


def _env(tmp_path: Path, audit: Path) -> dict[str, str]:
    env = audited_env(forge_env(tmp_path), audit)
    env.update(FORGE_AUDIT_ALL="1", COMMONFORGE_USER_REGISTRY=str(tmp_path / "user"),
               COMMONFORGE_LOG_STATE=str(tmp_path / "log-state.json"),
               COMMONFORGE_TRUST_PINS=str(tmp_path / "pins.json"), COMMONFORGE_PEERS=str(tmp_path / "peers.json"))
    env.pop("COMMONFORGE_ROOT", None)
    return env


def test_pull_connects_only_to_the_peers_named(shared_forge, tmp_path) -> None:  # noqa: F811
    audit = tmp_path / "audit"
    peer = start(shared_forge.root, shared_forge.store, shared_forge.log_dir)
    try:
        out = subprocess.run([sys.executable, "-m", "commonforge", "pull", REF, "--from", peer.base, "--timeout", "10"],
                             cwd=tmp_path, env=_env(tmp_path, audit), capture_output=True, text=True, timeout=120)
    finally:
        stop(peer)
    assert out.returncode == 0, out.stderr
    assert violations(audit) == [] and processes(audit)
    dialled = {(c["host"], c["port"]) for c in connects(audit)}
    assert dialled == {("127.0.0.1", peer.port)}, dialled


def test_peer_serve_dials_nobody(shared_forge, tmp_path) -> None:  # noqa: F811
    audit = tmp_path / "audit"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = _env(tmp_path, audit)
    env["COMMONFORGE_ROOT"] = str(shared_forge.root)
    env["COMMONFORGE_STORE"] = str(shared_forge.store)
    proc = subprocess.Popen([sys.executable, "-m", "commonforge", "peer", "serve", "--port", str(port),
                             "--log", str(shared_forge.log_dir)], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        import httpx

        deadline = time.monotonic() + 30
        while True:
            try:
                assert httpx.get(f"http://127.0.0.1:{port}/v1/index", timeout=2).status_code == 200
                break
            except (httpx.HTTPError, OSError):
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise
                time.sleep(0.2)
    finally:
        proc.terminate()
        proc.wait(10)
    assert violations(audit) == [] and processes(audit)
    assert connects(audit) == []  # it only answers


def _sockets(pid: int) -> list[tuple[str, str]]:
    """(protocol, local address) of every socket the process holds, from /proc."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            m = re.fullmatch(r"socket:\[(\d+)\]", str(fd.readlink()))
        except OSError:
            continue
        if m:
            inodes.add(m.group(1))
    found = []
    for proto in ("tcp", "udp", "tcp6", "udp6"):
        for line in Path(f"/proc/{pid}/net/{proto}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[9] in inodes:
                found.append((proto, fields[1]))
    return found


def test_seed_listens_on_loopback_only_and_opens_no_dht_or_discovery_socket(shared_forge, tmp_path) -> None:  # noqa: F811
    forge = shared_forge.copy(tmp_path / "origin")
    signer, info = forge.signers["cat"]
    from registry.store import Store
    from sharing import seed as seeding

    data, _, _ = seeding.share(forge.root, Store(forge.store), forge.release, signer, info)
    # The seeding session as `commonforge seed` opens it (sharing.torrent.session), in a process of its own.
    code = (
        "import sys, time\nfrom pathlib import Path\nfrom sharing import torrent\n"
        "s = torrent.session('127.0.0.1:0')\n"
        "torrent.seed(s, Path(sys.argv[1]).read_bytes(), Path(sys.argv[2]), timeout=20)\n"
        "print(s.listen_port(), flush=True)\ntime.sleep(30)\n"
    )
    (tmp_path / "t.torrent").write_bytes(data)
    folder = seeding.seed_directory(forge.root, Store(forge.store), forge.release)
    proc = subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "t.torrent"), str(folder)], cwd=REPO,
                            env=_env(tmp_path, tmp_path / "audit"), stdout=subprocess.PIPE, text=True)
    try:
        port = int(proc.stdout.readline())
        time.sleep(1)  # let it settle: DHT or LSD would have opened their sockets by now
        held = _sockets(proc.pid)
    finally:
        proc.kill()
        proc.wait(10)
    assert held, "the seeder holds no socket"
    assert any(proto == "tcp" and addr == f"0100007F:{port:04X}" for proto, addr in held), held
    for proto, addr in held:
        assert proto in ("tcp", "udp") and addr.startswith("0100007F:"), (proto, addr)  # 127.0.0.1 only
    assert not any(addr.endswith(":1A6B") for _, addr in held)  # 6771: local service discovery
