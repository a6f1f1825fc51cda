"""``peer serve`` and ``peers add|list|remove|sync``: this forge as a read-only peer, and the peers it knows.

Wiring only: the server is :mod:`sharing.peer`, the user's peers file :mod:`sharing.peers`, the
gossip and its log check :mod:`sharing.gossip`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from commonforge.cli.command import add_command

PEER_HELP = """\
This forge as a peer other forges pull from: a read-only HTTP server (the API is in
sharing/peer.py) serving the checkout's registry files, its store's blobs by sha256, the
transparency log's checkpoint and tiles, and the peers you added. Nothing it serves is trusted by
its clients (digests, signatures, the policy and the log decide), so it has no write endpoint.
"""

SERVE_HELP = """\
Serve this checkout (registry/ files, the store's blobs) and your copy of the log (--log, default
$COMMONFORGE_LOG when it holds a checkpoint) until interrupted. It binds 127.0.0.1; another
address makes the whole registry, store and log readable from the network, so it is refused
unless --public is given. --port 0 picks a free port; the URL is printed once it listens.
"""

PEERS_HELP = """\
The peers you added (kept in $COMMONFORGE_PEERS, else $XDG_CONFIG_HOME/commonforge/peers.json):
what `peers sync` contacts and `peer serve` advertises. Peers that your peers advertise are shown
as learned and are never contacted until you add them.
"""

SYNC_HELP = """\
Gossip with every peer you added: ask each for its version, its log and the peers it knows, then
check all their logs (and your own copy, if you have one) for one history under the governance
policy's log key and witnesses, against the checkpoint you accepted last. Records per peer the
last contact, the checkpoint it showed and the peers it advertised (learned: never contacted).
Exit 3 when the log equivocated (both signed checkpoints are printed as evidence), 1 when a log
does not verify, 3 when no peer could be reached; an unreachable peer among others is a warning.
"""


PULL_HELP = """\
Pull a model release from peers into your own registry (not into a checkout: a pulled entry would
dirty it; $COMMONFORGE_USER_REGISTRY, else $XDG_DATA_HOME/commonforge/registry, with its own store).
No peer is trusted. Before anything lands, a pull checks every file against the peers' index,
verifies the governance policy chain (against what you accepted before: no rollback, no other
forge), computes the release's status from its signed statements and the transparency log (whose
checkpoint must extend the one you accepted), and verifies every artifact's sha256; blobs come
from all peers at once, a slow or lying peer is dropped and named. REF: a pinned ref, or a bare
name for the newest published release. --from defaults to the peers you added (`peers add`).
"""


SEED_HELP = """\
Share a release over BitTorrent. Makes its v2 torrent (the same files give the same info-hash on
any machine), writes it beside the release (registry/entries/models/NAME/VERSION.torrent, served by
`peer serve` with the registry), signs a sharing statement naming the info-hash and every file's
sha256 with your maintainer key, and seeds the files from the store until interrupted. The session
listens on 127.0.0.1 unless --listen says otherwise; DHT, local discovery, UPnP, NAT-PMP and peer
exchange are off. Commit the torrent and the statement, and have the log's operator append it.
"""

MIRROR_HELP = """\
Keep a full replica of another forge in DIR (registry/, .forge/store, and log/ for its transparency
log), verified like a pull: the governance chain against the mirror's own pins, the log against the
mirror's own accepted checkpoint (DIR/.forge/log-state.json; a log that does not extend the copy
the mirror holds, a rollback or a fork, is refused and nothing changes), every published or
revoked release with all its artifacts. Run it again to follow the forge: only new log tiles and
new or changed releases are fetched. Serve the mirror with `commonforge peer serve --root DIR
--log DIR/log`. Exit 1 when a release did not verify (the rest is mirrored).
"""


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "pull", cmd_pull, "pull a published release from peers into your own registry, verified",
                    PULL_HELP)
    p.add_argument("ref", metavar="REF", help="e.g. model/forge-small@1.0.0, or forge-small (newest published)")
    p.add_argument("--from", dest="peers", action="append", default=[], metavar="URL",
                   help="a peer to pull from, repeatable (default: the peers you added)")
    p.add_argument("--allow-draft", action="store_true", help="take a draft (not published) release")
    p.add_argument("--allow-revoked", action="store_true",
                   help="take a revoked release named by version (to study it; serve/chat refuse it without "
                        "--allow-revoked too)")
    p.add_argument("--timeout", type=float, default=30.0, metavar="S",
                   help="seconds a request to a peer may take beyond what its size needs (default 30)")
    p.add_argument("--torrent-peer", action="append", default=[], metavar="HOST:PORT",
                   help="fetch the artifacts from this BitTorrent peer (repeatable; `commonforge seed` prints one): "
                        "the torrent must be vouched for by a maintainer's sharing statement, and every file is "
                        "checked against the release; no DHT, trackers or local discovery")

    p = add_command(sub, "seed", cmd_seed, "share a release over BitTorrent (deterministic v2 torrent, signed)",
                    SEED_HELP)
    p.add_argument("ref", metavar="MODEL_REF", help="a pinned ref, e.g. model/forge-small@1.0.0")
    p.add_argument("--key", required=True, metavar="KEY", help="your maintainer key: the sharing statement is signed")
    p.add_argument("--passphrase-file", type=Path, metavar="FILE", help="the key's passphrase (first line of FILE)")
    p.add_argument("--keys-dir", type=Path, metavar="DIR", help="where your keys are (default: COMMONFORGE_KEYS)")
    p.add_argument("--listen", default="127.0.0.1:0", metavar="HOST:PORT",
                   help="where the seeding session listens (default 127.0.0.1, any free port)")
    p.add_argument("--once", action="store_true", help="write the torrent and the statement, do not seed")
    peer = add_command(sub, "peer", _help, "serve this forge, read-only, to other forges (peer serve)", PEER_HELP)
    psub = peer.add_subparsers(dest="peer_command", metavar="ACTION", required=True)
    p = add_command(psub, "serve", cmd_serve, "serve this checkout's registry, store and log over HTTP", SERVE_HELP)
    p.add_argument("--host", default="127.0.0.1", help="the address to bind (default 127.0.0.1; others need --public)")
    p.add_argument("--port", type=int, metavar="N",
                   help="the port (default $COMMONFORGE_PEER_PORT, else 8470; 0: any free port)")
    p.add_argument("--log", type=Path, metavar="DIR",
                   help="the log copy to serve (default $COMMONFORGE_LOG, else $XDG_DATA_HOME/commonforge/log, "
                        "when it holds a checkpoint)")
    p.add_argument("--public", action="store_true",
                   help="allow an address other than loopback (everything served becomes readable from the network)")
    p.add_argument("--root", type=Path, metavar="DIR",
                   help="serve this forge root (its registry/ and its own .forge/store) instead of the checkout, "
                        "e.g. a mirror: `peer serve --root DIR --log DIR/log`")

    peers = add_command(sub, "peers", _help, "the peers you added: add, list, remove, sync (gossip)", PEERS_HELP)
    ssub = peers.add_subparsers(dest="peers_command", metavar="ACTION", required=True)
    p = add_command(ssub, "add", cmd_add, "add a peer (http://HOST:PORT)")
    p.add_argument("url", metavar="URL", help="the peer's base URL, e.g. http://127.0.0.1:8470")
    p.add_argument("--name", metavar="N", help="a short name to refer to it by")
    add_command(ssub, "list", cmd_list, "the peers you added, and those learned from them (never contacted)")
    p = add_command(ssub, "remove", cmd_remove, "forget a peer you added")
    p.add_argument("peer", metavar="URL|NAME", help="the peer's URL or name, as `peers list` shows it")
    p = add_command(ssub, "sync", cmd_sync, "gossip with the peers you added and check their logs", SYNC_HELP)
    p.add_argument("--state", type=Path, metavar="FILE",
                   help="the newest checkpoint you accepted, per log (default: $COMMONFORGE_LOG_STATE, else "
                        "$XDG_STATE_HOME/commonforge/log-state.json)")
    p.add_argument("--log", type=Path, metavar="DIR",
                   help="your own copy of the log, checked with the peers' when it holds a checkpoint "
                        "(default: $COMMONFORGE_LOG)")
    p.add_argument("--timeout", type=float, default=10.0, metavar="S",
                   help="seconds each request to a peer may take, from connect to last byte (default 10)")

    p = add_command(sub, "mirror", cmd_mirror, "keep a verified replica of another forge and follow its log",
                    MIRROR_HELP)
    p.add_argument("url", metavar="URL", help="the peer to mirror, e.g. http://127.0.0.1:8470")
    p.add_argument("--into", type=Path, required=True, metavar="DIR",
                   help="the mirror's root (registry/, .forge/store, log/); made on the first run")
    p.add_argument("--timeout", type=float, default=30.0, metavar="S",
                   help="seconds a request to the peer may take beyond what its size needs (default 30)")


def _help(args: argparse.Namespace) -> int:  # argparse requires an action; never reached
    return 2


def _book():
    from commonforge import settings
    from sharing.peers import PeerBook

    return PeerBook.load(settings.peers_file())


# --- peer serve -------------------------------------------------------------------------------------


def _log_origin_size(directory: Path) -> str:
    """``ORIGIN, size N`` from a checkpoint's first two lines (not verified: the clients verify)."""
    try:
        head = (directory / "checkpoint").read_bytes()[:4096].decode("utf-8", "replace").splitlines()
    except OSError:
        return "unreadable checkpoint"
    return f"{head[0] if head else '?'}, size {head[1] if len(head) > 1 else '?'}"


def cmd_serve(args: argparse.Namespace) -> int:
    from commonforge import settings
    from commonforge.errors import InputError
    from sharing import peer as peer_server

    if not peer_server.is_loopback(args.host):
        if not args.public:
            raise InputError(f"--host {args.host} would serve this forge's registry, store and log to the network",
                             hint="keep the default 127.0.0.1, or add --public if that is what you want")
        print(f"warning: serving on {args.host}: anyone who can reach it can read the registry, the store and "
              "the log (nothing can be written)", file=sys.stderr)
    port = settings.peer_port() if args.port is None else args.port
    if not 0 <= port <= 65535:
        raise InputError(f"--port {port} is not a port number", hint="give 1-65535, or 0 for any free port")
    if args.root is not None and not (args.root / "registry").is_dir():
        raise InputError(f"--root {args.root} holds no registry/", hint="name a forge root, e.g. a mirror's --into DIR")
    s = settings.apply(args.root.resolve() if args.root is not None else None)
    root, store = s.root, s.store_dir
    if args.root is not None:
        store = root / ".forge" / "store"  # a root named explicitly serves its own store
    if args.log is not None:
        if not (args.log / "checkpoint").is_file():
            raise InputError(f"--log {args.log} is not a log (no checkpoint)",
                             hint="name a copy of the log (`commonforge log show --log DIR` reads it), or leave --log "
                                  "out")
        log_dir: Path | None = args.log
    else:
        default = settings.log_dir()
        log_dir = default if (default / "checkpoint").is_file() else None
    peers = _book().urls()
    print(f"serving, read-only: the registry of {root}, the store {store}")
    print(f"  log: {log_dir} ({_log_origin_size(log_dir)})" if log_dir else "  log: none")
    print(f"  peers advertised: {', '.join(peers) if peers else 'none'}")

    def started(host: str, bound: int) -> None:
        shown = f"[{host}]" if ":" in host else host
        print(f"listening on http://{shown}:{bound} (Ctrl-C stops)", flush=True)

    sys.stdout.flush()
    peer_server.serve(root, store, log_dir, host=args.host, port=port, peers=peers, on_started=started)
    return 0


# --- peers add / list / remove ------------------------------------------------------------------------


def cmd_add(args: argparse.Namespace) -> int:
    book = _book()
    known = book.add(args.url, args.name)
    book.save()
    print(f"added {known.label}; `commonforge peers sync` contacts it")
    return 0


def cmd_remove(args: argparse.Namespace) -> int:
    book = _book()
    gone = book.remove(args.peer)
    book.save()
    print(f"removed {gone.label}")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from sharing.gossip import describe_checkpoint

    book = _book()
    if not book.peers:
        print("no peers added; `commonforge peers add URL` adds one")
    for p in book.peers:
        contact = f"last contact {p.last_contact}" if p.last_contact else "never contacted yet"
        print(f"{p.label}  added {p.added}; {contact}; {describe_checkpoint(p.checkpoint)}; advertises "
              f"{len(p.learned)} peer(s)")
        if p.last_error:
            print(f"  last sync: {p.last_error}")
    learned = book.learned()
    if learned:
        print("learned (advertised by your peers):")
    for lp in learned:
        print(f"  {lp.url}  learned from {', '.join(lp.advertised_by)}, never contacted — "
              f"`commonforge peers add {lp.url}` to use it")
    return 0


# --- peers sync -----------------------------------------------------------------------------------------


def cmd_sync(args: argparse.Namespace) -> int:
    from commonforge import settings
    from commonforge.errors import InputError
    from sharing import gossip
    from trust.log.client import ClientState

    if args.timeout <= 0:
        raise InputError(f"--timeout {args.timeout} is not a positive number of seconds", hint="e.g. --timeout 10")
    book = _book()
    if not book.peers:
        print("no peers added; `commonforge peers add URL` adds one", file=sys.stderr)
        return 0
    log, unchecked = gossip.policy_log_or_why(settings.apply)  # no log to check: gossip all the same
    report = gossip.sync(book, log=log, state=ClientState(args.state or settings.log_state()),
                         local_log=args.log or settings.log_dir(), timeout=args.timeout, unchecked=unchecked)
    book.save()
    print("\n".join(report.lines()))
    for line in report.warnings():
        print(line, file=sys.stderr)
    return report.exit_code()


# --- pull and seed -----------------------------------------------------------------------------------


def cmd_seed(args: argparse.Namespace) -> int:
    import time

    from commonforge.cli.trust_cmds import _release, signer_from_args
    from commonforge.settings import apply
    from registry.store import Store
    from sharing import seed as seeding
    from sharing import torrent

    settings = apply()
    release = _release(settings.root, args.ref)
    signer, info = signer_from_args(args)
    store = Store(settings.store_dir)
    data, path, statement = seeding.share(settings.root, store, release, signer, info)
    print(f"torrent of {release.ref}: {path.relative_to(settings.root)} (info-hash v2 {torrent.info_hash_v2(data)})")
    print(f"magnet: {torrent.magnet(data)}")
    print(f"signed the sharing statement: {statement.relative_to(settings.root)}")
    if args.once:
        return 0
    session = torrent.session(args.listen)
    torrent.seed(session, data, seeding.seed_directory(settings.root, store, release))
    host = args.listen.rpartition(":")[0]
    print(f"seeding on {host}:{session.listen_port()} until interrupted; "
          f"pull with `commonforge pull {release.ref} --from PEER --torrent-peer {host}:{session.listen_port()}`",
          flush=True)
    while True:
        time.sleep(3600)


def cmd_pull(args: argparse.Namespace) -> int:
    from commonforge.errors import InputError
    from sharing.fetch import Timeouts
    from sharing.pull import pull

    peers = args.peers or _book().urls()
    if not peers:
        raise InputError("no peer to pull from", hint="name one with --from URL, or add one: `commonforge peers add URL`")
    bars: dict[str, object] = {}

    def progress(path: str, done: int, total: int) -> None:
        from tqdm import tqdm

        bar = bars.get(path)
        if bar is None:
            bar = bars[path] = tqdm(total=total, unit="B", unit_scale=True, desc=path, leave=False, file=sys.stderr)
        bar.update(done - bar.n)  # type: ignore[attr-defined]

    swarm = None
    if args.torrent_peer:
        from sharing.seed import parse_peer, torrent_blobs

        swarm = torrent_blobs([parse_peer(p) for p in args.torrent_peer], timeout=max(args.timeout, 60.0))
    try:
        result = pull(args.ref, peers, allow_draft=args.allow_draft, allow_revoked=args.allow_revoked,
                      timeouts=Timeouts(total=args.timeout), progress=progress, blobs=swarm)
    finally:
        for bar in bars.values():
            bar.close()  # type: ignore[attr-defined]
    for why in result.skipped:
        print(f"warning: {why}", file=sys.stderr)
    for peer, ranges in result.liars.items():
        print(f"warning: peer {peer} sent {len(ranges)} range(s) that did not verify; they were fetched again "
              "from another peer", file=sys.stderr)
    print(f"pulled {result.release.ref} (sha256:{result.release.release_digest}) into {result.root}: "
          f"{result.status.status} under policy {result.status.policy.version if result.status.policy else 0}; "
          f"{result.blobs} artifact(s), {result.bytes:,} bytes, from {', '.join(result.peers)}")
    print(f"use it: `commonforge chat {result.release.name}` or `commonforge serve {result.release.ref}`")
    return 0


# --- mirror ---------------------------------------------------------------------------------------------


def cmd_mirror(args: argparse.Namespace) -> int:
    from commonforge.errors import InputError
    from sharing.fetch import Timeouts
    from sharing.mirror import mirror

    if args.timeout <= 0:
        raise InputError(f"--timeout {args.timeout} is not a positive number of seconds", hint="e.g. --timeout 30")
    report = mirror(args.url, args.into, timeouts=Timeouts(total=args.timeout))
    print("\n".join(report.lines()))
    if report.log_origin:
        print(f"serve it: `commonforge peer serve --root {report.dest} --log {report.dest / 'log'}`")
    return 1 if report.failed else 0
