"""The Peers page, and the Model page's "Where to pull it from", under Streamlit's AppTest.

The peers file is written by the real ``peers sync`` (sharing.gossip.sync) against a real peer
(uvicorn on loopback, tests.sharing.test_peer.start) serving the sharing tests' published forge,
plus an added peer that is down. The real peer advertises a third URL: a listening socket that
counts the connections it is offered, so "a learned peer is never contacted" is measured, not
assumed, through both the sync and the page's **Ask the peers now**.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from commonforge.settings import PRIVACY_ENV
from sharing import gossip
from sharing.peers import PeerBook
from tests.sharing.conftest import REF, SharedForge, shared_forge  # noqa: F401 - the fixture is used below
from tests.sharing.test_peer import start, stop
from trust import policy as trust_policy
from trust.log.client import ClientState

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest  # noqa: E402

import explorer  # noqa: E402

APP = Path(explorer.__file__).resolve().parent / "app.py"


class Listener:
    """A TCP port that listens and never answers: every connection made to it waits in its backlog,
    so :meth:`connections` counts them afterwards (a learned peer must see none)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.setblocking(False)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.seen = 0

    def connections(self) -> int:
        while True:
            try:
                conn, _ = self.sock.accept()
            except BlockingIOError:
                return self.seen
            conn.close()
            self.seen += 1


def free_port_url() -> str:
    """The URL of a loopback port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


def point_at(monkeypatch, tmp_path: Path, root: Path, store: Path, log: Path | None = None) -> Path:
    """This process (the AppTest) pointed at the checkout ``root``; returns the peers file it reads."""
    for key, value in PRIVACY_ENV.items():
        monkeypatch.setenv(key, value)
    peers = tmp_path / "peers.json"
    env = {"COMMONFORGE_ROOT": root, "COMMONFORGE_STORE": store, "COMMONFORGE_PEERS": peers,
           "COMMONFORGE_USER_REGISTRY": tmp_path / "user", "COMMONFORGE_EXPLORER_CACHE": tmp_path / "cache",
           "COMMONFORGE_TRUST_PINS": tmp_path / "pins.json", "COMMONFORGE_LOG": log or tmp_path / "no-log",
           "COMMONFORGE_LOG_STATE": tmp_path / "log-state.json"}
    for key, value in env.items():
        monkeypatch.setenv(key, str(value))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    return peers


def page_text(at: AppTest) -> str:
    out = []
    for kind in ("title", "header", "subheader", "markdown", "caption", "info", "warning", "error", "success"):
        out += [str(e.value) for e in getattr(at, kind)]
    out += [str(c.value) for c in at.code]
    return "\n".join(out)


def open_page(page: str, at: AppTest | None = None, **query: str) -> AppTest:
    if at is None:
        at = AppTest.from_file(str(APP), default_timeout=60)
        at.run()
    at.switch_page(f"app_pages/{page}.py")
    at.query_params.clear()
    at.query_params.update(query)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


@pytest.fixture
def synced(shared_forge: SharedForge, tmp_path, monkeypatch):  # noqa: F811 - the sharing tests' fixture
    """A peers file as ``peers sync`` leaves it: ``lab`` (a real peer, reached, its checkpoint verified),
    ``down`` (nothing listens there) and the URL ``lab`` advertises (learned), and that URL's listener."""
    listener = Listener()
    running = start(shared_forge.root, shared_forge.store, shared_forge.log_dir, peers=[listener.url])
    try:
        peers = point_at(monkeypatch, tmp_path, shared_forge.root, shared_forge.store, shared_forge.log_dir)
        down = free_port_url()
        book = PeerBook(peers)
        book.add(running.base, name="lab")
        book.add(down, name="down")
        report = gossip.sync(book, log=gossip.policy_log(trust_policy.load_chain(shared_forge.root)),
                             state=ClientState(tmp_path / "sync-state.json"), timeout=3.0)
        book.save()
        assert book.find("lab").checkpoint and book.find("down").last_error, report.lines()
        assert [lp.url for lp in book.learned()] == [listener.url]
        yield running, down, listener, peers
    finally:
        stop(running)
        listener.sock.close()


def test_no_peers_says_how_to_add_one(shared_forge, tmp_path, monkeypatch) -> None:  # noqa: F811
    point_at(monkeypatch, tmp_path, shared_forge.root, shared_forge.store)
    at = open_page("peers")
    assert "You have added no peers." in page_text(at) and "commonforge peers add URL" in page_text(at)
    assert not at.button and not at.dataframe
    at = open_page("model", at, ref=REF, tab="Artifacts")
    text = page_text(at)
    assert "Where to pull it from" in text and "On this machine it is in the checkout." in text
    assert f"commonforge pull {REF} --from URL" in text and "commonforge peers add URL" in text


def test_peers_listed_asked_on_demand_and_the_model_page_says_where_to_pull(synced) -> None:
    running, down, listener, peers = synced
    lab = PeerBook.load(peers).find("lab")
    at = open_page("peers")
    rows = at.dataframe[0].value
    by_peer = {r["peer"]: r for r in rows.to_dict("records")}
    assert set(by_peer) == {f"lab ({running.base})", f"down ({down})", listener.url}
    assert by_peer[f"lab ({running.base})"]["last contact"] == lab.last_contact
    assert lab.checkpoint["root"][:16] in by_peer[f"lab ({running.base})"]["log checkpoint"]
    assert by_peer[f"down ({down})"]["last contact"] == "never" and by_peer[f"down ({down})"]["last error"]
    learned = by_peer[listener.url]
    assert learned["kind"] == "learned" and learned["last contact"] == "never (learned, not contacted)"
    assert "lab" in learned["last error"]  # who advertised it
    assert "Not asked yet in this session." in page_text(at)

    # Before asking: the Model page offers every added peer.
    at = open_page("model", at, ref=REF, tab="Artifacts")
    assert f"commonforge pull {REF} --from {running.base} --from {down}" in page_text(at)

    at = open_page("peers", at)
    at.button[0].click().run()
    assert not at.exception, [e.value for e in at.exception]
    text = page_text(at)
    assert f"Could not use {down}" in "\n".join(str(e.value) for e in at.error)
    assert down in "\n".join(str(c.value) for c in at.code)  # the client's message names the peer too
    assert f"Could not use {running.base}" not in text
    available = at.dataframe[1].value
    assert REF in list(available["release"])
    assert f"commonforge pull {REF} --from {running.base}" in list(available["pull"])
    assert listener.connections() == 0  # neither the sync nor the page dialled the learned peer

    # After asking: the Model page names the peer that listed it, and only that one.
    at = open_page("model", at, ref=REF, tab="Artifacts")
    code = "\n".join(str(c.value) for c in at.code if "commonforge pull" in str(c.value))
    assert code == f"commonforge pull {REF} --from {running.base}"
    assert "1 of your 2 peer(s) listed it" in page_text(at)
    assert listener.connections() == 0
    socket.create_connection(("127.0.0.1", int(listener.url.rsplit(":", 1)[1])), timeout=2).close()
    assert listener.connections() == 1  # the probe itself counts a connection when one is made
