"""``sharing.mirror``: a full replica of the shared forge, mirrored from a real peer (uvicorn on
loopback), verified as a directory afterwards, following the origin's log on a second run, and
refusing a forked origin log with the mirror left byte for byte as it was."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest

from registry.catalog import Registry
from registry.store import Store
from sharing.fetch import Timeouts
from sharing.mirror import MirrorError, mirror, served_files
from tests.sharing.conftest import REF
from tests.sharing.test_peer import start, stop
from trust import policy as trust_policy
from trust import status as trust_status
from trust.log import forge as log_forge
from trust.log.client import ClientState
from trust.log.operator import LogOperator
from trust.log.tiles import TileLog, tile_path
from trust.log.witness import Witness

FAST = Timeouts(connect=1, read=2, total=5)


def tree_hash(root: Path) -> str:
    """Every file of the mirror (the pull staging area, emptied after each run, is not the mirror)."""
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file() and "pull-staging" not in p.parts and not p.name.endswith(".lock"):
            h.update(str(p.relative_to(root)).encode() + b"\0" + p.read_bytes())
    return h.hexdigest()


def log_files(log_dir: Path) -> set[str]:
    return {p.relative_to(log_dir).as_posix() for p in log_dir.rglob("*") if p.is_file() and p.name != ".lock"}


def published_in(root: Path, spec) -> trust_status.ReleaseStatus:
    """The release's status read from the mirror alone: its registry, and its log copy with a fresh client state."""
    view = log_forge.open_view(spec, root / "log", ClientState(root.parent / f"reader-{root.name}.json"))
    release = Registry(root).release(REF)
    return trust_status.release_status(root, release, chain=trust_policy.load_chain(root), view=view)


def test_a_mirror_is_a_verified_replica_that_follows_the_origin(shared_forge, tmp_path) -> None:
    origin = shared_forge.copy(tmp_path / "origin")
    dest = tmp_path / "mirror"
    peer = start(origin.root, origin.store, origin.log_dir)
    try:
        first = mirror(peer.base, dest, timeouts=FAST)
        size = TileLog(origin.log_dir).size
        assert (first.log_before, first.log_after) == (0, size) and not first.failed, first.lines()
        assert first.pulled == [f"{REF} (published)"] and first.blobs == 2 and first.bytes == 640_000
        assert set(first.tiles_fetched) | {"checkpoint"} == log_files(dest / "log")
        TileLog(dest / "log").verify()
        assert (dest / "log" / "checkpoint").read_bytes() == (origin.log_dir / "checkpoint").read_bytes()
        status = published_in(dest, origin.spec)
        assert status.status == "published", status.explain()
        store = Store(dest / ".forge" / "store")
        assert all(store.verify(a.sha256) for a in origin.release.manifest.artifacts)

        # The origin logs one more statement (an approval with a comment): the mirror fetches that only.
        ann = origin.signers["ann"]
        statement = trust_status.approve(origin.root, origin.release, *ann, comment="checked again after the audit",
                                         chain=trust_policy.load_chain(origin.root))
        origin.log_all()
        held = log_files(dest / "log")
        second = mirror(peer.base, dest, timeouts=FAST)
        assert (second.log_before, second.log_after) == (size, size + 1), second.lines()
        wanted = {tile_path(level, index, width) for level, index, width in served_files(size + 1)}
        assert wanted <= log_files(origin.log_dir)
        assert set(second.tiles_fetched) == wanted - held and second.tiles_fetched  # only the new tiles
        assert log_files(dest / "log") == wanted | {"checkpoint"}  # the partials of the old size are gone
        assert second.blobs == 0 and second.pulled == [f"{REF} (published)"]  # the changed release, no blob again
        relative = statement.relative_to(origin.root)
        assert (dest / relative).read_bytes() == statement.read_bytes()
        TileLog(dest / "log").verify()
        assert published_in(dest, origin.spec).status == "published"

        third = mirror(peer.base, dest, timeouts=FAST)  # nothing new: nothing fetched
        assert third.tiles_fetched == [] and third.pulled == [] and third.current == [REF]
    finally:
        stop(peer)


def test_a_forked_origin_log_is_refused_and_the_mirror_is_unchanged(shared_forge, tmp_path) -> None:
    origin = shared_forge.copy(tmp_path / "origin")
    dest = tmp_path / "mirror"
    peer = start(origin.root, origin.store, origin.log_dir)
    try:
        mirror(peer.base, dest, timeouts=FAST)
    finally:
        stop(peer)
    # The log's operator shows another history: the same entries but the last, then two others, signed
    # with the real log key and cosigned by the real witness key (a fresh witness state: a colluding witness).
    entries = list(TileLog(origin.log_dir).entries())
    forked = tmp_path / "forked-log"
    op = LogOperator(forked, origin.spec.origin, origin.log_signer)
    op.append(entries[:-1] + [b"a statement that was never made", entries[-1]])
    witness = Witness(tmp_path / "colluding-witness.json", origin.witness.signer)
    op.add_cosignature(witness.cosign(op.checkpoint_note(), op.verifier, op.prove_consistency), witness.verifier)
    before = tree_hash(dest)
    peer = start(origin.root, origin.store, forked)
    try:
        with pytest.raises(MirrorError) as caught:
            mirror(peer.base, dest, timeouts=FAST)
    finally:
        stop(peer)
    message = caught.value.message
    assert peer.base in message and "fork" in message.lower(), message
    assert tree_hash(dest) == before
    TileLog(dest / "log").verify()

    # A rolled-back origin (the log as it was a few entries ago) is refused the same way.
    old = tmp_path / "old-log"
    shutil.rmtree(old, ignore_errors=True)
    op = LogOperator(old, origin.spec.origin, origin.log_signer)
    op.append(entries[:-2])
    witness = Witness(tmp_path / "colluding-witness-2.json", origin.witness.signer)
    op.add_cosignature(witness.cosign(op.checkpoint_note(), op.verifier, op.prove_consistency), witness.verifier)
    peer = start(origin.root, origin.store, old)
    try:
        with pytest.raises(MirrorError, match="rollback"):
            mirror(peer.base, dest, timeouts=FAST)
    finally:
        stop(peer)
    assert tree_hash(dest) == before
