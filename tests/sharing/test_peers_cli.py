"""``commonforge peers add|list|remove`` and ``commonforge peer serve`` through the real CLI: the peers
file round trip (atomic JSON, normalised URLs), refusal of URLs that are not a peer's base URL, and
a real ``peer serve --port 0`` process that reports its URL and serves /v1/info and the added peers."""

from __future__ import annotations

import json
import os
import selectors
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest

import commonforge.cli as forge_cli
from tests.helpers import VENV_BIN, forge_env, make_registry


class Cli:
    """``cli(*args, code=0)``: ``commonforge *args`` in this process under ``env``; stdout and stderr."""

    def __init__(self, env: dict[str, str], capsys) -> None:
        self.env, self.capsys = env, capsys

    def __call__(self, *args: str, code: int = 0) -> SimpleNamespace:
        saved = dict(os.environ)
        os.environ.clear()
        os.environ.update(self.env)
        try:
            self.capsys.readouterr()
            got = forge_cli.main(list(args))
            out = self.capsys.readouterr()
        finally:
            os.environ.clear()
            os.environ.update(saved)
        assert got == code, f"commonforge {' '.join(args)} exited {got}, not {code}:\n{out.out}\n{out.err}"
        return SimpleNamespace(out=out.out, err=out.err)


@pytest.fixture
def cli(tmp_path, capsys) -> Cli:
    return Cli(forge_env(tmp_path, COMMONFORGE_PEERS=str(tmp_path / "config" / "peers.json")), capsys)


def peers_file(cli: Cli) -> dict:
    return json.loads(Path(cli.env["COMMONFORGE_PEERS"]).read_text())


def test_peers_add_list_remove_round_trip(cli) -> None:
    assert "no peers added" in cli("peers", "list").out
    assert "added lab (http://127.0.0.1:8470)" in cli("peers", "add", "http://127.0.0.1:8470/", "--name", "lab").out
    cli("peers", "add", "HTTPS://Forge.Example:443")  # the default port and the case are spelled away
    cli("peers", "add", "http://[::1]:9000")
    saved = peers_file(cli)
    assert saved["version"] == 1
    assert [p["url"] for p in saved["peers"]] == ["http://127.0.0.1:8470", "https://forge.example", "http://[::1]:9000"]
    lab = saved["peers"][0]
    assert lab["name"] == "lab" and lab["added"].endswith("Z") and lab["last_contact"] is None
    assert lab["checkpoint"] is None and lab["learned"] == []

    # The same peer in another spelling is the same peer; a name is one peer's.
    assert "already added" in cli("peers", "add", "http://127.0.0.1:8470", code=2).err
    assert "is already http://127.0.0.1:8470" in cli("peers", "add", "http://127.0.0.1:1", "--name", "lab", code=2).err

    listed = cli("peers", "list").out
    assert "lab (http://127.0.0.1:8470)  added " in listed and "never contacted yet" in listed
    assert "https://forge.example" in listed and "learned" not in listed

    assert "removed lab (http://127.0.0.1:8470)" in cli("peers", "remove", "lab").out
    assert "removed https://forge.example" in cli("peers", "remove", "https://FORGE.example/").out
    assert "is not a peer you added" in cli("peers", "remove", "lab", code=2).err
    assert [p["url"] for p in peers_file(cli)["peers"]] == ["http://[::1]:9000"]
    leftovers = [p.name for p in Path(cli.env["COMMONFORGE_PEERS"]).parent.iterdir()]
    assert leftovers == ["peers.json"]  # atomic writes leave no temporaries


@pytest.mark.parametrize("url, why", [
    ("ftp://127.0.0.1:21", "is not an http(s) URL"),
    ("file:///etc/passwd", "is not an http(s) URL"),
    ("127.0.0.1:8470", "is not an http(s) URL"),
    ("http://127.0.0.1:8470/v1/info", "has a path, query or fragment"),
    ("http://127.0.0.1:8470?x=1", "has a path, query or fragment"),
    ("http://127.0.0.1:8470#frag", "has a path, query or fragment"),
    ("http://user:secret@127.0.0.1:8470", "holds user info"),
    ("http://127.0.0.1:99999", "is not a peer URL"),
    ("http://127.0.0.1:0", "names port 0"),
    ("http://", "names no host"),
    ("http://exa mple.org", "holds spaces"),
])
def test_a_url_that_is_not_a_peers_base_url_is_refused_and_nothing_is_written(cli, url, why) -> None:
    cli("peers", "add", "http://127.0.0.1:8470")
    before = Path(cli.env["COMMONFORGE_PEERS"]).read_bytes()
    err = cli("peers", "add", url, code=2).err
    assert why in err and "hint: name a peer as http://HOST:PORT" in err
    assert Path(cli.env["COMMONFORGE_PEERS"]).read_bytes() == before


def test_a_damaged_peers_file_is_reported_not_overwritten(cli) -> None:
    path = Path(cli.env["COMMONFORGE_PEERS"])
    path.parent.mkdir(parents=True)
    path.write_text('{"version": 1, "peers": [{"url": "gopher://x"}]}')
    assert "is damaged" in cli("peers", "add", "http://127.0.0.1:8470", code=2).err
    assert "gopher" in path.read_text()


def test_peer_serve_refuses_a_public_address_unless_asked(cli, tmp_path) -> None:
    root = make_registry(tmp_path / "forge")
    cli.env["COMMONFORGE_ROOT"] = str(root)
    err = cli("peer", "serve", "--host", "0.0.0.0", code=2).err
    assert "would serve this forge's registry, store and log to the network" in err and "--public" in err


def test_peer_serve_reports_its_url_and_serves_the_checkout_and_the_added_peers(cli, tmp_path) -> None:
    root = make_registry(tmp_path / "forge")
    cli("peers", "add", "http://127.0.0.1:8123", "--name", "friend")
    env = {**cli.env, "COMMONFORGE_ROOT": str(root), "COMMONFORGE_LOG": str(tmp_path / "no-log")}
    proc = subprocess.Popen([str(VENV_BIN / "commonforge"), "peer", "serve", "--port", "0"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url, shown = None, []
        sel = selectors.DefaultSelector()
        sel.register(proc.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + 20
        while url is None and time.monotonic() < deadline and proc.poll() is None:
            if sel.select(timeout=0.5):
                line = proc.stdout.readline()
                shown.append(line)
                if line.startswith("listening on "):
                    url = line.split()[2]
        assert url is not None, f"no URL reported: {shown} {proc.poll()}"
        assert url.startswith("http://127.0.0.1:") and not url.endswith(":0")
        text = "".join(shown)
        assert f"the registry of {root.resolve()}" in text and "log: none" in text
        assert "peers advertised: http://127.0.0.1:8123" in text
        info = httpx.get(url + "/v1/info", timeout=2).json()
        assert info["api"] == 1 and info["forge"] == "commonforge" and info["log"] is None
        assert httpx.get(url + "/v1/peers", timeout=2).json()["peers"] == ["http://127.0.0.1:8123"]
        index = httpx.get(url + "/v1/index", timeout=2).json()["files"]
        assert index and all(f["path"].startswith("registry/") for f in index)
        assert httpx.post(url + "/v1/info", timeout=2).status_code == 405
    finally:
        proc.terminate()
        proc.wait(10)
