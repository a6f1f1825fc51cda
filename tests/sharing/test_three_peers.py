"""The issue's scenario, end to end with the real CLI: three peers and a client on loopback ports, each
with its own root.

    A  a forge with the REAL tiny model (the session's ``tiny_forge`` build: its registry and store,
       copied), given governance (three affiliations, a policy naming a log and a witness), the
       release attested, approved, rebuilt identically, published, logged and cosigned; served with
       ``commonforge peer serve --root A --log A/log``
    B  ``commonforge mirror A --into B``, served the same way
    C  a second peer over the same mirror copy
    A stops; the client pulls from B and C at once into a fresh user registry, verifies with
    ``commonforge verify`` in an empty directory (no checkout), serves the model with
    ``commonforge serve`` and gets a completion through the real ``openai`` client.

The transcript (the commands and their key output) is printed and written to
/tmp/cf/three-peers-transcript.txt.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from registry.catalog import Registry
from tests.helpers import forge_env
from tests.serving.conftest import start_server, stop_server
from tests.sharing.conftest import publish_with_log

NAME = "forge-tiny"  # what tests/serving serves (start_server serves this name)
REF = f"model/{NAME}@1.0.0"
ORIGIN = "forge-a.test/log"
TRANSCRIPT = Path("/tmp/cf/three-peers-transcript.txt")


class Transcript:
    def __init__(self) -> None:
        self.lines: list[str] = []
        self.t0 = time.perf_counter()

    def step(self, text: str) -> None:
        self.lines.append(f"[{time.perf_counter() - self.t0:5.1f}s] {text}")

    def output(self, text: str, keep: int = 12) -> None:
        self.lines += [f"    {line}" for line in text.strip().splitlines()[:keep]]

    def write(self) -> str:
        text = "\n".join(self.lines) + "\n"
        try:
            TRANSCRIPT.parent.mkdir(parents=True, exist_ok=True)
            TRANSCRIPT.write_text(text, encoding="utf-8")
        except OSError:
            pass
        print("\n" + text)
        return text


def commonforge(*args: str, cwd: Path, env: dict, timeout: float = 120) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", "commonforge", *args], cwd=cwd, env=env, text=True,
                          capture_output=True, timeout=timeout)
    assert done.returncode == 0, f"commonforge {' '.join(args)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return done


@dataclass
class PeerProcess:
    url: str
    process: subprocess.Popen
    out: Path

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def peer_serve(root: Path, env: dict, tmp: Path, name: str) -> PeerProcess:
    out = tmp / f"peer-{name}.out"
    with open(out, "w") as fo, open(tmp / f"peer-{name}.err", "w") as fe:
        proc = subprocess.Popen([sys.executable, "-m", "commonforge", "peer", "serve", "--root", str(root),
                                 "--log", str(root / "log"), "--port", "0"], cwd=tmp, env=env, stdout=fo, stderr=fe)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        text = out.read_text()
        if "listening on http://" in text:
            return PeerProcess(text.split("listening on ", 1)[1].split()[0], proc, out)
        if proc.poll() is not None:
            raise AssertionError(f"peer {name} exited {proc.returncode}:\n{(tmp / f'peer-{name}.err').read_text()}")
        time.sleep(0.1)
    proc.kill()
    raise AssertionError(f"peer {name} did not start")


def forge_a(tiny_forge, base: Path) -> tuple[Path, object]:
    """Peer A's root: the tiny forge's registry files and store, a governance policy with a log, the
    release published and every statement logged and cosigned."""
    root = base / "a"
    for part in ("entries", "governance"):
        shutil.copytree(tiny_forge.root / "registry" / part, root / "registry" / part,
                        ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    shutil.copytree(tiny_forge.state / "store", root / ".forge" / "store")
    (root / "pyproject.toml").write_text("[project]\nname='forge-a'\n")
    release = Registry(root).release(REF)
    publish_with_log(root, root / ".forge" / "store", root / "log", base, release, origin=ORIGIN)
    return root, release


def test_three_peers_publish_mirror_pull_from_two_while_the_first_is_down_verify_and_serve(tiny_forge,
                                                                                             tmp_path) -> None:
    import openai

    log = Transcript()
    ref = REF
    root_a, release = forge_a(tiny_forge, tmp_path)
    log.step(f"A: {ref} ({NAME}, built for real) published under policy 2 in {root_a}; log + cosign")

    # The client's whole world: a fresh user registry, pins, accepted checkpoint and peers, no checkout.
    client = tmp_path / "client"
    empty = tmp_path / "empty"
    empty.mkdir()
    env = forge_env(client, COMMONFORGE_USER_REGISTRY=str(client / "registry"),
                    COMMONFORGE_TRUST_PINS=str(client / "trust-pins.json"),
                    COMMONFORGE_LOG_STATE=str(client / "log-state.json"), COMMONFORGE_LOG=str(client / "log"),
                    COMMONFORGE_PEERS=str(client / "peers.json"), COMMONFORGE_KEYS=str(client / "keys"))
    env.pop("COMMONFORGE_STORE")  # the user registry keeps its own store
    peers_env = dict(env)

    peers: list[PeerProcess] = []
    try:
        a = peer_serve(root_a, peers_env, tmp_path, "a")
        peers.append(a)
        log.step(f"$ commonforge peer serve --root A --log A/log --port 0   -> {a.url}")
        root_b = tmp_path / "b"
        done = commonforge("mirror", a.url, "--into", str(root_b), cwd=tmp_path, env=peers_env)
        log.step(f"$ commonforge mirror {a.url} --into B")
        log.output(done.stdout)
        assert f"pulled {ref} (published)" in done.stdout
        b = peer_serve(root_b, peers_env, tmp_path, "b")
        c = peer_serve(root_b, peers_env, tmp_path, "c")  # a second peer over the same mirror copy
        peers += [b, c]
        log.step(f"$ commonforge peer serve --root B --log B/log --port 0   -> {b.url}")
        log.step(f"$ commonforge peer serve --root B --log B/log --port 0   -> {c.url}   (peer C)")
        a.stop()
        log.step(f"A stopped (exit {a.process.returncode})")

        done = commonforge("pull", NAME, "--from", a.url, "--from", b.url, "--from", c.url, cwd=empty,
                           env=env)
        log.step(f"$ commonforge pull {NAME} --from {a.url} --from {b.url} --from {c.url}")
        log.output("\n".join(line for line in (done.stdout + done.stderr).splitlines()
                              if line.startswith(("pulled", "use it", "warning:"))))
        assert f"pulled {ref} (sha256:{release.release_digest})" in done.stdout and "published" in done.stdout
        assert f"from {b.url}, {c.url}" in done.stdout and a.url in done.stderr  # A is down: named, skipped
        # The pull kept the log it verified against in the user registry (what `verify` and `serve` read).
        kept = client / "registry" / ".forge" / "log" / "checkpoint"
        assert kept.is_file()
        log.step(f"client: the pull kept its verified copy of the log in {kept.parent} (size "
                 f"{kept.read_bytes().splitlines()[1].decode()})")
    finally:
        for p in peers:
            p.stop()

    assert not any(empty.iterdir())
    done = commonforge("verify", NAME, cwd=empty, env=env)
    log.step(f"$ commonforge verify {NAME}   (in an empty directory, no checkout)")
    log.output(done.stdout)
    assert "all" in done.stdout and "status: published" in done.stdout, done.stdout
    assert not any(empty.iterdir())

    @dataclass
    class NoCheckout:
        root: Path
        env: dict

    (tmp_path / "serve").mkdir()
    server = start_server(NoCheckout(empty, env), tmp_path / "serve", "--timeout", "60")
    try:
        log.step(f"$ commonforge serve {NAME} --port 0   -> {server.url} as '{server.model}'")
        api = openai.OpenAI(base_url=server.url, api_key="unused", max_retries=0, timeout=60)
        reply = api.completions.create(model=server.model, prompt="Once upon a time", max_tokens=12, temperature=0)
        text = reply.choices[0].text
        log.step(f"openai.completions.create(model={server.model!r}, prompt='Once upon a time', max_tokens=12)")
        log.output(f"-> {text!r} ({reply.usage.completion_tokens} tokens, finish_reason={reply.choices[0].finish_reason})")
        assert reply.usage.completion_tokens > 0 and text
    finally:
        stop_server(server)
    log.write()
    assert os.environ.get("COMMONFORGE_USER_REGISTRY") != env["COMMONFORGE_USER_REGISTRY"]
