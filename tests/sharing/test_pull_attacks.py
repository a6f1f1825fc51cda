"""A malicious or broken peer must not hurt the client (issue 14): one test per attack, each against a
peer that really misbehaves on loopback: the real peer app (sharing.peer.create_app) behind a small
ASGI middleware that alters its answers, or a raw socket server where the attack is below HTTP.

In every case the pull raises a ForgeError naming the peer and what it did, and the user registry and
its store hash exactly as before (``state_hash``); where a good peer serves too, the pull succeeds,
verified, and the bad peer is named."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import pytest
import uvicorn

from commonforge.errors import ForgeError
from registry.schema import BuildManifest, Release
from registry.store import Store
from sharing.fetch import Timeouts
from sharing.peer import create_app, guarded_protocol
from sharing.pull import pull
from tests.helpers import REPO, found_forge, make_registry, sample, write_yaml
from tests.sharing.conftest import REF
from tests.sharing.test_pull import state_hash
from trust import policy as trust_policy
from trust import status as trust_status
from trust.log.client import ClientState

FAST = Timeouts(connect=1, read=1.5, total=2, min_rate=64 << 20)  # every request ends within ~2 s
ENTRY = "registry/entries/models/sample/1.0.0.yaml"

# --- a peer that misbehaves -----------------------------------------------------------------------

Send = Callable[[dict], Awaitable[None]]
Act = Callable[[dict, Callable, Send, int, list, bytes], Awaitable[None]]


class Misbehave:
    """ASGI middleware: the real peer answers every request; for paths ``match`` accepts, its whole
    answer (status, headers, body) goes to ``act``, which sends whatever the attack sends instead."""

    def __init__(self, app, match: Callable[[str], bool], act: Act) -> None:
        self.app, self.match, self.act = app, match, act
        self.hits = 0

    async def __call__(self, scope: dict, receive: Callable, send: Send) -> None:
        if scope["type"] != "http" or not self.match(scope["path"]):
            await self.app(scope, receive, send)
            return
        self.hits += 1
        got: dict = {"body": []}

        async def capture(message: dict) -> None:
            if message["type"] == "http.response.start":
                got["status"], got["headers"] = message["status"], list(message.get("headers", []))
            elif message["type"] == "http.response.body":
                got["body"].append(message.get("body", b""))

        await self.app(scope, receive, capture)
        await self.act(scope, receive, send, got["status"], got["headers"], b"".join(got["body"]))


def headers_with(headers: list, **changes: str | None) -> list:
    """``headers`` with each named one (``content_length=``) replaced, or dropped when None."""
    names = {k.replace("_", "-").encode(): v for k, v in changes.items()}
    out = [(k, v) for k, v in headers if k.lower() not in names]
    return out + [(k, v.encode()) for k, v in names.items() if v is not None]


async def answer(send: Send, status: int, headers: list, body: bytes, *, length: int | None = None) -> None:
    """One response, Content-Length ``length`` (default: the body's) whatever the body is."""
    await send({"type": "http.response.start", "status": status,
                "headers": headers_with(headers, content_length=str(len(body) if length is None else length))})
    await send({"type": "http.response.body", "body": body})


async def disconnected(receive: Callable, seconds: float) -> bool:
    """Wait ``seconds``; True as soon as the client hung up (uvicorn's send is silent after that)."""
    end = time.monotonic() + seconds
    while (left := end - time.monotonic()) > 0:
        try:
            message = await asyncio.wait_for(receive(), left)
        except TimeoutError:
            return False
        if message["type"] == "http.disconnect":
            return True
    return False


@dataclass
class Running:
    base: str
    server: uvicorn.Server
    thread: threading.Thread
    app: object


def serve(app, host: str = "127.0.0.1") -> Running:
    """``app`` under the real peer's uvicorn settings on a free port of ``host``."""
    sock = socket.socket()
    sock.bind((host, 0))
    config = uvicorn.Config(app, log_level="critical", access_log=False, lifespan="off", ws="none",
                            http=guarded_protocol(10.0, 32), timeout_graceful_shutdown=1, server_header=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "the peer did not start"
        time.sleep(0.01)
    return Running(f"http://{host}:{sock.getsockname()[1]}", server, thread, app)


def stop(*running: Running) -> None:
    for r in running:
        r.server.should_exit = True
    for r in running:
        r.thread.join(10)


def peer(forge, match: Callable[[str], bool] | None = None, act: Act | None = None, host: str = "127.0.0.1"):
    app = create_app(forge.root, forge.store, forge.log_dir, rate=1000, burst=1000)
    return serve(Misbehave(app, match, act) if match else app, host)


@pytest.fixture
def client(tmp_path):
    """Where pulls land, with this user's own pins and accepted checkpoint, and ~2 s timeouts."""
    return {"dest_root": tmp_path / "user", "state": ClientState(tmp_path / "log-state.json"),
            "pins": trust_policy.Pins(tmp_path / "pins.json"), "timeouts": FAST}


def refused(client, urls: list[str], ref: str = REF, *, names: str, says: str) -> ForgeError:
    """Pull ``ref`` from ``urls``: it must raise a ForgeError naming ``names`` and saying ``says``, and
    leave the user registry and store exactly as they were."""
    before = state_hash(client["dest_root"])
    with pytest.raises(ForgeError) as caught:
        pull(ref, urls, **client)
    text = str(caught.value)
    assert names in text and says in text, text
    assert state_hash(client["dest_root"]) == before
    print(f"REFUSED: {caught.value.message}")
    return caught.value


def blob(digest: str) -> Callable[[str], bool]:
    return lambda path: path == f"/v1/blobs/{digest}"


def big(forge) -> str:
    return max(forge.release.manifest.artifacts, key=lambda a: a.size).sha256


async def flip_one_byte(scope, receive, send, status, headers, body) -> None:
    data = bytearray(body)
    data[len(data) // 2] ^= 0x01
    await answer(send, status, headers, bytes(data))


# --- 1. a tampered blob ------------------------------------------------------------------------------


def test_a_tampered_blob_with_a_good_peer_is_pulled_verified_and_the_liar_named(shared_forge, client) -> None:
    bad = peer(shared_forge, blob(big(shared_forge)), flip_one_byte)
    good = peer(shared_forge)
    try:
        result = pull(REF, [bad.base, good.base], **client)
    finally:
        stop(bad, good)
    assert bad.app.hits >= 1
    assert result.status.status == "published" and list(result.liars) == [bad.base]
    store = Store(client["dest_root"] / ".forge" / "store")
    assert all(store.verify(a.sha256) for a in result.release.manifest.artifacts)


def test_a_tampered_blob_alone_is_refused(shared_forge, client) -> None:
    bad = peer(shared_forge, blob(big(shared_forge)), flip_one_byte)
    try:
        refused(client, [bad.base], names=bad.base, says="whole copy does not hash")
    finally:
        stop(bad)


# --- 2. an entry swapped for another release's ---------------------------------------------------------


def test_an_entry_swapped_for_another_releases_is_refused(shared_forge, client, tmp_path) -> None:
    forge = shared_forge.copy(tmp_path / "peer")
    manifest = sample("manifest")  # another build of model/sample@1.0.0: other weights, same version
    manifest["recipe"]["sha256"] = forge.release.manifest.recipe.sha256
    for artifact, size in zip(manifest["artifacts"], (1000, 2000), strict=True):
        artifact["sha256"], artifact["size"] = Store(forge.store).put_bytes(os.urandom(size))
    other = Release.from_manifest(BuildManifest.model_validate(manifest))
    assert other.release_digest != forge.release.release_digest
    write_yaml(forge.root / ENTRY, other.model_dump(mode="json", exclude_none=True))  # the index follows the file
    bad = peer(forge)
    try:
        refused(client, [bad.base], names=bad.base, says="not pulled")
    finally:
        stop(bad)


# --- 3. truncated and oversize responses ----------------------------------------------------------------


async def truncate(scope, receive, send, status, headers, body) -> None:
    await answer(send, status, headers, body[: len(body) // 2], length=len(body))  # then the connection drops


async def pad(scope, receive, send, status, headers, body) -> None:
    await answer(send, status, headers, body + b"\n# and more" * 1000)


async def endless(scope, receive, send, status, headers, body) -> None:
    """No Content-Length: chunk after chunk until the client hangs up (capped so the server stops)."""
    await send({"type": "http.response.start", "status": status, "headers": headers_with(headers, content_length=None)})
    for _ in range(2000):
        await send({"type": "http.response.body", "body": b"\0" * 65536, "more_body": True})
        if await disconnected(receive, 0):
            return
    await send({"type": "http.response.body", "body": b""})


@pytest.mark.parametrize("attack, says", [(truncate, "dropped the connection"), (pad, "declared")])
def test_a_truncated_or_oversize_registry_file_is_refused(shared_forge, client, attack, says) -> None:
    bad = peer(shared_forge, lambda path: path == "/v1/files/" + ENTRY, attack)
    try:
        refused(client, [bad.base], names=bad.base, says=says)
    finally:
        stop(bad)


@pytest.mark.parametrize("attack, says", [(truncate, "dropped the connection"), (endless, "sent more than")])
def test_a_truncated_or_endless_blob_is_refused(shared_forge, client, attack, says) -> None:
    bad = peer(shared_forge, blob(big(shared_forge)), attack)
    try:
        refused(client, [bad.base], names=bad.base, says=says)
    finally:
        stop(bad)


# --- 4. slowloris ----------------------------------------------------------------------------------------


async def dribble(scope, receive, send, status, headers, body) -> None:
    """The real headers, then a byte a second."""
    await send({"type": "http.response.start", "status": status, "headers": headers})
    for i in range(min(len(body), 30)):
        await send({"type": "http.response.body", "body": body[i:i + 1], "more_body": True})
        if await disconnected(receive, 1.0):
            return
    await send({"type": "http.response.body", "body": b""})


def test_a_blob_sent_a_byte_a_second_is_cut_off_at_the_deadline(shared_forge, client) -> None:
    bad = peer(shared_forge, blob(big(shared_forge)), dribble)
    began = time.monotonic()
    try:
        refused(client, [bad.base], names=bad.base, says="deadline")
    finally:
        stop(bad)
    assert time.monotonic() - began < 8


def test_headers_sent_a_byte_a_second_are_cut_off_at_the_deadline(client) -> None:
    """Below HTTP: a raw socket that answers any request with a status line one byte a second."""
    server = socket.create_server(("127.0.0.1", 0))
    base = f"http://127.0.0.1:{server.getsockname()[1]}"
    done = threading.Event()

    def slow() -> None:
        conn, _ = server.accept()
        with conn:
            for byte in b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n":
                if done.wait(1.0):
                    return
                try:
                    conn.sendall(bytes([byte]))
                except OSError:
                    return

    thread = threading.Thread(target=slow, daemon=True)
    thread.start()
    began = time.monotonic()
    try:
        refused(client, [base], names=base, says="deadline")
    finally:
        done.set()
        thread.join(5)
        server.close()
    assert time.monotonic() - began < 5


# --- 5. redirects ----------------------------------------------------------------------------------------


def test_a_redirect_loop_is_refused_never_followed(shared_forge, client) -> None:
    async def loop(scope, receive, send, status, headers, body) -> None:
        await answer(send, 302, [(b"location", scope["path"].encode())], b"")

    bad = peer(shared_forge, lambda path: path == "/v1/index", loop)
    try:
        refused(client, [bad.base], names=bad.base, says="redirect loop")
    finally:
        stop(bad)
    assert bad.app.hits == 1


def test_a_redirect_to_another_host_is_refused_never_followed(shared_forge, client) -> None:
    elsewhere = peer(shared_forge, lambda path: True, flip_one_byte, host="127.0.0.2")  # counts what reaches it
    digest = big(shared_forge)

    async def away(scope, receive, send, status, headers, body) -> None:
        await answer(send, 307, [(b"location", f"{elsewhere.base}/v1/blobs/{digest}".encode())], b"")

    bad = peer(shared_forge, blob(digest), away)
    try:
        refused(client, [bad.base], names=bad.base, says=f"to another host, {elsewhere.base}")
    finally:
        stop(bad, elsewhere)
    assert bad.app.hits >= 1 and elsewhere.app.hits == 0


# --- 6. a rolled-back or forked log -------------------------------------------------------------------


def grow(forge, entry: bytes) -> None:
    """One more entry in the forge's log, signed by its key and cosigned by its witness."""
    op = forge.op()
    op.append([entry])
    line = forge.witness.cosign(op.checkpoint_note(), op.verifier, op.prove_consistency)
    op.add_cosignature(line, forge.witness.verifier)


def test_a_rolled_back_log_is_refused_and_named(shared_forge, client, tmp_path) -> None:
    forge = shared_forge.copy(tmp_path / "peer")
    old = shared_forge.copy(tmp_path / "old")  # the same forge before its log grew
    grow(forge, b"a later entry\n")
    good = peer(forge)
    try:
        assert pull(REF, [good.base], **client).status.status == "published"
    finally:
        stop(good)
    bad = peer(old)
    try:
        refused(client, [bad.base], names=bad.base, says="not pulled")
    finally:
        stop(bad)


def test_a_forked_log_is_refused_and_named(shared_forge, client, tmp_path) -> None:
    a, b = shared_forge.copy(tmp_path / "a"), shared_forge.copy(tmp_path / "b")
    grow(a, b"entry seen by some\n")
    grow(b, b"entry seen by others\n")  # same key, same size, another tree (b's witness never saw a's)
    good = peer(a)
    try:
        assert pull(REF, [good.base], **client).status.status == "published"
    finally:
        stop(good)
    bad = peer(b)
    try:
        refused(client, [bad.base], names=bad.base, says="not pulled")
    finally:
        stop(bad)


# --- 7. a policy rollback --------------------------------------------------------------------------------


def test_a_policy_rollback_is_refused_and_named(shared_forge, client, tmp_path) -> None:
    forge = shared_forge.copy(tmp_path / "peer")
    good = peer(forge)
    try:
        assert pull(REF, [good.base], **client).status.policy.version == 2
    finally:
        stop(good)
    folder = trust_policy.policy_dir(forge.root)
    (folder / "2.yaml").unlink()  # the chain now stops at 1
    shutil.rmtree(trust_policy.signatures_dir(folder, 2), ignore_errors=True)
    bad = peer(forge)
    try:
        refused(client, [bad.base], names=bad.base, says="rollback")
    finally:
        stop(bad)


def test_a_different_founding_policy_is_refused_and_named(shared_forge, client, tmp_path) -> None:
    good = peer(shared_forge)
    try:
        pull(REF, [good.base], **client)
    finally:
        stop(good)
    other = make_registry(tmp_path / "other")  # another forge: other maintainers, another policy 1
    people = {"eve": ("Evil", ["maintainer"]), "mal": ("Mallory", ["maintainer", "rebuilder"]),
              "oz": ("Oz", ["maintainer"])}
    signers = found_forge(other, tmp_path / "other-keys", people)
    trust_policy.propose(other, trust_policy.changed(trust_policy.load_chain(other).current, log=shared_forge.spec))
    for signer, _ in signers.values():  # as long a chain as the user accepted, so only its founding differs
        trust_policy.sign_proposal(other, signer, 2)
    trust_policy.apply(other)
    app = create_app(other, tmp_path / "other-store", None, rate=1000, burst=1000)
    bad = serve(app)
    try:
        refused(client, [bad.base], names=bad.base, says="founding policy")
    finally:
        stop(bad)


# --- 8. a revoked release served as current ------------------------------------------------------------


def test_a_revoked_release_served_as_current_is_refused(shared_forge, client, tmp_path) -> None:
    forge = shared_forge.copy(tmp_path / "peer")
    chain = trust_policy.load_chain(forge.root)
    for who in ("bob", "cat"):
        signer, info = forge.signers[who]
        trust_status.revoke(forge.root, forge.release, signer, info, chain=chain, severity="critical",
                            reason="the weights reproduce a private dataset verbatim")
    forge.log_all()
    bad = peer(forge)
    try:
        refused(client, [bad.base], names=bad.base, says="is revoked")
        refused(client, [bad.base], "sample", names=bad.base, says="no published release of model/sample")
    finally:
        stop(bad)


# --- 9. kill -9 and 10. a full disk, in the middle of a pull ------------------------------------------------

PULL = textwrap.dedent("""
    import resource, signal, sys
    from commonforge.errors import ForgeError
    from sharing.fetch import Timeouts
    from sharing.pull import pull
    if sys.argv[3] != "0":  # a disk that fills: files may not grow past this many bytes
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # so a write past the limit is an OSError, not a kill
        resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[3]), int(sys.argv[3])))
    try:
        result = pull(sys.argv[1], [sys.argv[2]], timeouts=Timeouts(connect=1, read=10, total=20))
    except ForgeError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(err.exit_code)
    print("pulled", result.release.ref)
""")


def pull_process(tmp_path, url: str, fsize: int = 0) -> subprocess.Popen:
    env = dict(os.environ, COMMONFORGE_USER_REGISTRY=str(tmp_path / "user"), PYTHONPATH=str(REPO),
               COMMONFORGE_LOG_STATE=str(tmp_path / "log-state.json"),
               COMMONFORGE_TRUST_PINS=str(tmp_path / "pins.json"))
    return subprocess.Popen([sys.executable, "-c", PULL, REF, url, str(fsize)], cwd=REPO, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def test_kill_9_in_the_middle_of_a_download_changes_nothing_and_the_next_pull_cleans_up(shared_forge, client,
                                                                                          tmp_path) -> None:
    halfway = threading.Event()

    async def stall(scope, receive, send, status, headers, body) -> None:
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body[: len(body) // 2], "more_body": True})
        halfway.set()
        await disconnected(receive, 20)

    slow = peer(shared_forge, blob(big(shared_forge)), stall)
    before = state_hash(client["dest_root"])
    proc = pull_process(tmp_path, slow.base)
    try:
        assert halfway.wait(20), "the pull never reached the blob: " + (proc.poll() and proc.stderr.read() or "")
        time.sleep(0.3)  # the half is in the staging file by now
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(10) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        stop(slow)
    staging = client["dest_root"] / ".forge" / "pull-staging"
    left_behind = [p for p in staging.rglob("*") if p.is_file()]
    assert left_behind, "the killed pull left no staging: it was not killed mid-pull"
    assert state_hash(client["dest_root"]) == before
    good = peer(shared_forge)
    try:
        assert pull(REF, [good.base], **client).status.status == "published"
    finally:
        stop(good)
    assert not [p for p in staging.rglob("*") if p.is_file()]  # the stale staging, and the resumed partial, gone


def test_a_full_disk_in_the_middle_of_a_pull_fails_clearly_and_changes_nothing(shared_forge, client,
                                                                                tmp_path) -> None:
    good = peer(shared_forge)
    before = state_hash(client["dest_root"])
    try:
        proc = pull_process(tmp_path, good.base, fsize=300_000)  # less than the 600 KB blob
        out, err = proc.communicate(timeout=60)
    finally:
        stop(good)
    assert proc.returncode == 3, err
    assert "could not write" in err and "File too large" in err and "nothing in" in err, err
    assert "Traceback" not in err
    assert state_hash(client["dest_root"]) == before


def test_a_pull_interrupted_mid_download_resumes_the_blob_where_it_stopped(shared_forge, client) -> None:
    """The second pull asks only for the ranges the first one synced no bytes of (the blob is verified whole)."""
    import sharing.pull as pull_mod

    original = pull_mod.download_from
    pull_mod.download_from = lambda *a, **kw: original(*a, **{**kw, "chunk": 65_536})
    digest = big(shared_forge)
    size = next(a.size for a in shared_forge.release.manifest.artifacts if a.sha256 == digest)
    starts: list[int] = []

    def start_of(scope) -> int:
        return int(dict(scope["headers"]).get(b"range", b"bytes=0-").decode().split("=")[1].split("-")[0])

    async def first_half_only(scope, receive, send, status, headers, body) -> None:
        if start_of(scope) >= 300_000:
            await disconnected(receive, 5)  # the peer stalls halfway: the pull times out
            return
        await answer(send, status, headers, body)

    async def counting(scope, receive, send, status, headers, body) -> None:
        starts.append(start_of(scope))
        await answer(send, status, headers, body)

    try:
        stalling = peer(shared_forge, blob(digest), first_half_only)
        before = state_hash(client["dest_root"])
        try:
            with pytest.raises(ForgeError):
                pull(REF, [stalling.base], **{**client, "timeouts": Timeouts(connect=1, read=1, total=1.5)})
        finally:
            stop(stalling)
        assert state_hash(client["dest_root"]) == before
        journal = next((client["dest_root"] / ".forge" / "pull-staging" / "blobs").glob(".*.ranges"))
        held = len(json.loads(journal.read_text()))
        assert held >= 4  # the first 300 KB, in 64 KB ranges, were synced before the peer stalled
        good = peer(shared_forge, blob(digest), counting)
        try:
            result = pull(REF, [good.base], **client)
        finally:
            stop(good)
        assert result.status.status == "published"
        assert len(starts) == -(-size // 65_536) - held and min(starts) >= 65_536 * held - 65_536
    finally:
        pull_mod.download_from = original


# --- found by review: what a peer may not plant ------------------------------------------------------


def test_a_swapped_recipe_is_refused(shared_forge, client, tmp_path) -> None:
    forge = shared_forge.copy(tmp_path / "peer")
    recipe = forge.root / "registry" / "entries" / "recipes" / "sample" / "1.yaml"
    recipe.write_text(recipe.read_text().replace("title:", "title: a different recipe,", 1))
    bad = peer(forge)
    try:
        refused(client, [bad.base], names=bad.base, says="not the sha256:")
    finally:
        stop(bad)


def test_only_signed_governance_and_known_release_files_land(shared_forge, client, tmp_path) -> None:
    forge = shared_forge.copy(tmp_path / "peer")
    planted = ["registry/governance/licenses.yaml", "registry/governance/proposals/9.yaml",
               "registry/entries/models/sample/1.0.0.evil/payload.yaml", "registry/entries/models/sample/1.0.0.notes.yaml"]
    for name in planted:
        (forge.root / name).parent.mkdir(parents=True, exist_ok=True)
        (forge.root / name).write_text("planted: by the peer\n")
    good = peer(forge)
    try:
        assert pull(REF, [good.base], **client).status.status == "published"
    finally:
        stop(good)
    landed = client["dest_root"]
    assert not [name for name in planted if (landed / name).exists()]
    assert (landed / ENTRY).is_file()


def test_an_index_naming_a_path_outside_the_registry_is_refused_not_a_crash(shared_forge, client) -> None:
    async def traversal(scope, receive, send, status, headers, body) -> None:
        await answer(send, 200, headers_with(headers, content_length=None),
                     json.dumps({"api": 1, "files": [{"path": "registry/../../etc/passwd", "sha256": "0" * 64,
                                                      "size": 1}]}).encode())

    bad = peer(shared_forge, lambda path: path == "/v1/index", traversal)
    try:
        refused(client, [bad.base], names=bad.base, says="bad index entry")
    finally:
        stop(bad)


def test_the_newest_log_among_the_peers_decides(shared_forge, client, tmp_path) -> None:
    """A lagging peer listed first, with an older but consistent log, cannot hide a revocation."""
    forge = shared_forge.copy(tmp_path / "origin")
    lagging = tmp_path / "lagging-log"
    shutil.copytree(forge.log_dir, lagging)
    chain = trust_policy.load_chain(forge.root)
    for who in ("bob", "cat"):
        signer, info = forge.signers[who]
        trust_status.revoke(forge.root, forge.release, signer, info, chain=chain, severity="high",
                            reason="the license of a source does not allow redistribution")
    forge.log_all()
    for path in (forge.root / "registry/entries/models/sample/1.0.0.statements").glob("revocation-*"):
        path.unlink()  # both peers serve the registry without the revocations; only the newer log has them
    old_peer = serve(create_app(forge.root, forge.store, lagging, rate=1000, burst=1000))
    new_peer = peer(forge)
    try:
        refused(client, [old_peer.base, new_peer.base], names="as peer http://127.0.0.1:", says="is revoked")
    finally:
        stop(old_peer, new_peer)


def test_an_entry_already_in_the_user_registry_is_never_replaced(shared_forge, client) -> None:
    mine = client["dest_root"] / "registry" / "entries" / "recipes" / "sample" / "1.yaml"
    mine.parent.mkdir(parents=True)
    mine.write_text("# the user's own recipe entry\n")
    good = peer(shared_forge)
    try:
        refused(client, [good.base], names=good.base, says="an entry is never replaced by a pull")
    finally:
        stop(good)
    assert mine.read_text() == "# the user's own recipe entry\n"
