"""Fixtures for the serving tests, all on the shared tiny forge (forge-tiny built once per run).

``tiny_settings`` / ``tiny_loaded`` / ``tiny_engine``: the release loaded in this process.
``server``: ``commonforge serve forge-tiny --port 0`` for real (``python -m commonforge``) in
a subprocess under the privacy audit, on a free 127.0.0.1 port.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from commonforge.settings import PRIVACY_ENV, Settings
from tests.privacy.audit import audited_env

REF = "model/forge-tiny@1.0.0"
SERVE_ARGS = ("--max-batch", "8", "--max-queue", "16", "--timeout", "60")


def settings_for(forge) -> Settings:
    return dataclasses.replace(Settings.load(forge.root), store_dir=(forge.state / "store").resolve())


@pytest.fixture(scope="session")
def tiny_settings(tiny_forge) -> Settings:
    return settings_for(tiny_forge)


@pytest.fixture(scope="session")
def tiny_loaded(tiny_settings):
    from serving.loader import load_release

    return load_release(REF, device="cpu", settings=tiny_settings)


@pytest.fixture(scope="module")
def tiny_engine(tiny_loaded):
    from serving.engine import Engine

    engine = Engine(tiny_loaded, max_batch=4, max_queue=4).start()
    yield engine
    engine.stop()


@dataclass
class Server:
    url: str  # http://127.0.0.1:PORT/v1
    base: str  # http://127.0.0.1:PORT
    model: str
    process: subprocess.Popen
    audit: Path
    log: Path


def start_server(forge, tmp: Path, *args: str, env: dict | None = None, audit: Path | None = None,
                 timeout: float = 120, model: str = "forge-tiny") -> Server:
    audit = audit or tmp / "audit"
    env = audited_env(env or forge.env, audit)
    for var in PRIVACY_ENV:
        env.pop(var, None)  # serve must switch telemetry off itself
    out, err = tmp / "serve.out", tmp / "serve.err"
    with open(out, "w") as fo, open(err, "w") as fe:
        proc = subprocess.Popen(
            [sys.executable, "-m", "commonforge", "serve", model, "--port", "0", *args],
            cwd=forge.root, env=env, stdout=fo, stderr=fe, text=True,
        )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = out.read_text()
        if " at http://" in text:
            url = text.split(" at ", 1)[1].split()[0]
            model = text.split(" as '", 1)[1].split("'", 1)[0]
            return Server(url, url.rsplit("/v1", 1)[0], model, proc, audit, err)
        if proc.poll() is not None:
            raise AssertionError(f"serve exited with {proc.returncode}:\n{err.read_text()[-3000:]}")
        time.sleep(0.2)
    proc.kill()
    raise AssertionError(f"serve did not start in {timeout} s:\n{err.read_text()[-3000:]}")


def stop_server(server: Server) -> None:
    if server.process.poll() is not None:
        return
    server.process.terminate()
    try:
        server.process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait()


@pytest.fixture(scope="module")
def server(tiny_forge, tmp_path_factory):
    srv = start_server(tiny_forge, tmp_path_factory.mktemp("serve"), *SERVE_ARGS)
    yield srv
    stop_server(srv)


@pytest.fixture(scope="module")
def client(server):
    import openai

    return openai.OpenAI(base_url=server.url, api_key="unused", max_retries=0, timeout=60)

