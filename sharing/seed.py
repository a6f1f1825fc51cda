"""Releases over BitTorrent: ``commonforge seed REF`` and ``commonforge pull REF --torrent``.

Seeding makes the release's deterministic v2 torrent (``sharing.torrent.make_torrent``: the same
files give the same info-hash on every machine), keeps the ``.torrent`` file beside the release
(``registry/entries/models/<name>/<version>.torrent``, so every HTTP peer serves it with the
registry), signs a ``sharing`` statement naming its info-hash and the files' sha256 (a maintainer's
key, like every statement about a release; the log takes it like the others), and seeds it from the
store. A pull over the swarm fetches the ``.torrent`` from the HTTP peers, accepts it only when a
maintainer's sharing statement names its info-hash, downloads from the torrent peers the user named
(no DHT, no local discovery, no trackers: ``sharing.torrent.session``), and hands the files to
``sharing.pull``, which checks each against the release's manifest once more before anything lands.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from commonforge.errors import InputError, VerificationError
from registry import fsutil
from registry.catalog import Registry
from registry.refs import Ref
from registry.schema import Release, utc_now
from registry.store import Store
from trust import statements as st_mod
from trust.policy import check_signer, load_chain


def torrent_path(root: Path, release: Release) -> Path:
    return Registry(root).entry_path(Ref("model", release.name, release.version)).with_suffix(".torrent")


def release_files(release: Release) -> dict[str, str]:
    """{path in the torrent: sha256}: every artifact of every variant."""
    return {a.path: a.sha256 for a in release.manifest.artifacts}


def seed_directory(root: Path, store: Store, release: Release) -> Path:
    """The release's files under their torrent paths, hard-linked from the store (copied across
    file systems): what the seeder serves."""
    folder = Path(root) / ".forge" / "seed" / f"{release.name}-{release.version}"
    for path, digest in release_files(release).items():
        target = folder / path
        source = store.path(digest, what=f"{release.ref}:{path}")  # verified before it is offered
        if target.is_file() and os.path.samefile(target, source):
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        target.unlink(missing_ok=True)
        try:
            os.link(source, target)
        except OSError:
            fsutil.atomic_write_bytes(target, source.read_bytes())
    return folder


def make_release_torrent(root: Path, store: Store, release: Release) -> tuple[bytes, Path]:
    from sharing.torrent import make_torrent

    folder = seed_directory(root, store, release)
    data = make_torrent([(p, folder / p) for p in release_files(release)], name=f"{release.name}-{release.version}")
    return data, folder


def share(root: Path, store: Store, release: Release, signer, info) -> tuple[bytes, Path, Path]:
    """The torrent (written beside the release) and the signed sharing statement; returns
    (torrent bytes, torrent file, statement file)."""
    from sharing.torrent import sharing_predicate
    from trust.status import attest_sharing

    data, _ = make_release_torrent(root, store, release)
    predicate = sharing_predicate(data, release_files(release), signed_at=utc_now())
    statement = attest_sharing(root, release, signer, info, predicate)
    path = torrent_path(root, release)
    fsutil.atomic_write_bytes(path, data)
    return data, path, statement


def vouched_torrent(root: Path, release: Release, data: bytes) -> str:
    """The info-hash of the torrent ``data``, if a maintainer's sharing statement beside the release
    names it (under the policy of ``root``); else a VerificationError."""
    from sharing.torrent import info_hash_v2

    info_hash = info_hash_v2(data)
    policy = load_chain(root).current
    statements, _ = st_mod.read_all(st_mod.statements_dir(root, Ref("model", release.name, release.version)))
    subject = (st_mod.release_subject(Ref("model", release.name, release.version)), release.release_digest)
    from datetime import UTC, datetime

    for st in statements:
        if st.kind != "sharing" or (st.subject_name, st.subject_digest) != subject or policy is None:
            continue
        if getattr(st.predicate, "info_hash_v2", None) != info_hash:
            continue
        if not isinstance(check_signer(policy, st, "maintainer", datetime.now(UTC)), str):
            return info_hash
    raise VerificationError(f"no maintainer's sharing statement about {release.ref} names the torrent {info_hash}",
                            hint="the torrent came from a peer and nobody the policy trusts vouched for it; "
                            "pull over HTTP instead")


def parse_peer(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536 or not host:
        raise InputError(f"torrent peer {text!r}: write HOST:PORT", hint="e.g. --torrent-peer 127.0.0.1:6881")
    return host.strip("[]"), int(port)


def torrent_blobs(torrent_peers: Sequence[tuple[str, int]], *, timeout: float = 600.0):
    """A ``blobs=`` transport for ``sharing.pull.pull``: the release's files from a BitTorrent swarm."""
    from sharing.torrent import close_session, download, session

    def swarm(staging, release: Release, missing: dict) -> dict[str, Path]:
        if not missing:
            return {}
        relative = str(torrent_path(staging.root, release).relative_to(staging.root))
        data = staging.fetch(relative)
        vouched_torrent(staging.root, release, data)
        dest = staging.root / ".torrent"
        client = session()
        try:
            download(client, data, dest, peers=list(torrent_peers), expected=release_files(release), timeout=timeout)
        finally:
            close_session(client)
        return {digest: dest / path for path, digest in release_files(release).items() if digest in missing}

    swarm.__name__ = "BitTorrent"
    return swarm
