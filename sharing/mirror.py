"""``commonforge mirror URL --into DIR``: a full, verified replica of another forge that follows its log.

A mirror is a forge root of its own (``registry/``, ``.forge/store``, and ``log/`` for the copy of
the transparency log) that another peer can serve as it is (``commonforge peer serve --root DIR
--log DIR/log``). It trusts the forge it mirrors no more than a pull does:

1. the governance policy chain is fetched and verified (``sharing.pull``'s checks: every version's
   thresholds, the mirror's own pins in ``DIR/.forge/pins.json``, no rollback of the chain the
   mirror holds); the policy names the log, its key and its witnesses;
2. the peer's log is opened over HTTP (``sharing.logsource.http_source``) and verified with the
   mirror's own accepted checkpoint (``DIR/.forge/log-state.json``, ``trust.log.forge.open_view``):
   signatures, the witness quorum, every entry hashing to the signed root, and — when the mirror
   already holds a copy — a consistency proof that it extends that copy. A log that does not (a
   rollback or a fork) is refused before anything is written;
3. only the tiles the mirror lacks are fetched (full tiles and partials of a given width never
   change; the tiles held are re-verified with the new ones), assembled with the held ones in a
   staging directory, verified there as a directory, then moved in, **the checkpoint last** (the
   tlog-tiles commit point), and the partials the new size no longer names are removed;
4. every release the peer lists is pulled with ``sharing.pull.pull`` (``dest_root`` = the mirror):
   published ones, and revoked ones too, so the mirror serves their revocations. A draft is left
   out. A release whose files the mirror already holds byte for byte is not fetched again.

Running it again therefore fetches only the new tiles and the new or changed releases.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from commonforge.errors import ForgeError, VerificationError
from registry import fsutil
from registry.digest import sha256_file
from sharing import pull as pull_mod
from sharing.fetch import PEER_ERRORS, Timeouts
from trust import policy as trust_policy
from trust.log.client import ClientState
from trust.log.tiles import TILE_WIDTH, tile_path, tiles_for_size

log = logging.getLogger(__name__)

MODELS = "registry/entries/models/"


class MirrorError(VerificationError):
    """A mirror run refused: what the peer did; the mirror is as it was."""


@dataclass
class MirrorReport:
    url: str
    dest: Path
    log_origin: str | None = None
    log_before: int = 0  # the size the mirror held
    log_after: int = 0
    tiles_fetched: list[str] = field(default_factory=list)  # log files fetched this run (relative to log/)
    pulled: list[str] = field(default_factory=list)  # releases fetched (new or changed)
    current: list[str] = field(default_factory=list)  # releases already held byte for byte
    skipped: list[str] = field(default_factory=list)  # releases left out, and why (drafts)
    failed: list[str] = field(default_factory=list)  # releases that did not verify, and why
    blobs: int = 0
    bytes: int = 0
    governance_written: int = 0

    def lines(self) -> list[str]:
        out = [f"mirror of {self.url} in {self.dest}"]
        if self.log_origin:
            grown = self.log_after - self.log_before
            out.append(f"  log {self.log_origin}: size {self.log_before} -> {self.log_after} "
                       f"({grown} new entr{'y' if grown == 1 else 'ies'}, {len(self.tiles_fetched)} file(s) fetched), "
                       "verified")
        else:
            out.append("  log: the policy names none")
        out.append(f"  releases: {len(self.pulled)} fetched ({self.blobs} blob(s), {self.bytes:,} bytes), "
                   f"{len(self.current)} already current")
        out += [f"  pulled {ref}" for ref in self.pulled]
        out += [f"  left out {why}" for why in self.skipped]
        out += [f"  FAILED {why}" for why in self.failed]
        return out


def _release_paths(index: dict[str, pull_mod.IndexEntry]) -> dict[str, list[str]]:
    """ref -> the peer's files of that release (entry, records, statements), from its index."""
    out: dict[str, list[str]] = {}
    for path in index:
        parts = path.split("/")
        if path.startswith(MODELS) and len(parts) == 5 and path.endswith(".yaml"):
            stem = path[: -len(".yaml")]
            ref = f"model/{parts[3]}@{parts[4][: -len('.yaml')]}"
            out[ref] = sorted(p for p in index if p == path or p.startswith(stem + "."))
    return dict(sorted(out.items()))


def _held(dest: Path, index: dict[str, pull_mod.IndexEntry], paths: list[str]) -> bool:
    for path in paths:
        local = dest / path
        if not local.is_file() or local.stat().st_size != index[path].size or sha256_file(local) != index[path].sha256:
            return False
    return True


def served_files(size: int) -> list[tuple[int | str, int, int]]:
    """Every file (level, index, width) a tree of ``size`` entries is served as: hash tiles and entry bundles."""
    bundles = [("entries", n, min(TILE_WIDTH, size - n * TILE_WIDTH)) for n in range(-(-size // TILE_WIDTH))]
    return [*tiles_for_size(size), *bundles]  # type: ignore[list-item]


def _copy_state(state: ClientState, where: Path) -> ClientState:
    where.parent.mkdir(parents=True, exist_ok=True)
    if Path(state.path).is_file():
        shutil.copyfile(state.path, where)
    return ClientState(where)


def _follow_log(url: str, spec: trust_policy.LogSpec, local: Path, state: ClientState, work: Path,
                timeouts: Timeouts | None, report: MirrorReport) -> tuple[Path, ClientState] | None:
    """Verify the peer's log against what the mirror holds and assemble the new copy in ``work``
    (nothing in ``local`` changes here). Returns (the staged log, the state that accepted it)."""
    from sharing.logsource import http_source
    from trust.log import forge as log_forge

    report.log_origin = spec.origin
    trial = _copy_state(state, work / "log-state.json")
    if (local / "checkpoint").is_file():
        try:
            held = log_forge.open_view(spec, local, trial)
        except ForgeError as err:
            raise MirrorError(f"the mirror's own copy of the log ({local}) does not verify: {err.message}",
                              hint="restore it, or mirror into a new directory") from None
        report.log_before = held.size
    try:
        source = http_source(url, timeouts=timeouts)
        view = log_forge.open_view(spec, source, trial)
    except PEER_ERRORS as err:
        raise MirrorError(f"peer {url}: its log could not be read: {err.message}",
                          hint="try again later, or mirror another peer; the mirror is unchanged") from None
    except ForgeError as err:
        raise MirrorError(f"peer {url} serves a log the mirror refuses: {err.message}",
                          hint="a log that does not extend the copy the mirror holds is a rollback or a fork "
                          "(keep the evidence); the mirror is unchanged") from None
    report.log_after = view.size
    staged = work / "log"
    (staged / "tile").mkdir(parents=True)
    tree = view.tree
    for level, index, width in served_files(view.size):
        relative = tile_path(level, index, width)
        target = staged / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        held_file = local / relative
        if held_file.is_file() and not held_file.is_symlink():
            shutil.copyfile(held_file, target)  # re-verified below with the rest
            continue
        try:
            read, _, data = tree._read_tile(level, index, width)  # the peer's bytes, size-bounded
        except PEER_ERRORS as err:
            raise MirrorError(f"peer {url}: {err.message}", hint="try again; the mirror is unchanged") from None
        if read != relative:
            raise MirrorError(f"peer {url} no longer serves {relative} (its log grew while it was mirrored)",
                              hint="run the mirror again; the mirror is unchanged")
        target.write_bytes(data)
        report.tiles_fetched.append(relative)
    (staged / "checkpoint").write_bytes(view.note)
    try:
        from trust.log.tiles import TileLog

        TileLog(staged).verify()
        log_forge.open_view(spec, staged, trial)  # the assembled directory, as any client reads it
    except ForgeError as err:
        raise MirrorError(f"the copy of the log from {url} does not verify as a directory: {err.message}",
                          hint="the peer served tiles that do not match its checkpoint; the mirror is unchanged") from None
    return staged, trial


def _commit_log(staged: Path, trial: ClientState, local: Path, state: ClientState) -> None:
    """New tiles into ``local``, the checkpoint last; then the accepted state; then the stale partials."""
    names = set()
    for path in sorted(staged.rglob("*")):
        if path.is_file() and path.name != "checkpoint":
            relative = path.relative_to(staged)
            names.add(relative.as_posix())
            target = local / relative
            if not (target.is_file() and target.read_bytes() == path.read_bytes()):
                fsutil.atomic_write_bytes(target, path.read_bytes())
    fsutil.atomic_write_bytes(local / "checkpoint", (staged / "checkpoint").read_bytes())
    Path(state.path).parent.mkdir(parents=True, exist_ok=True)
    fsutil.atomic_write_bytes(Path(state.path), Path(trial.path).read_bytes())
    for path in sorted((local / "tile").rglob("*"), reverse=True):
        relative = path.relative_to(local).as_posix()
        if path.is_file() and relative not in names:
            path.unlink()  # a partial the new size has full (or a file no checkpoint names)
        elif path.is_dir() and not any(path.iterdir()):
            path.rmdir()


def follow_log(url: str, spec: trust_policy.LogSpec, local: Path, state: ClientState, *,
               timeouts: Timeouts | None = None) -> MirrorReport:
    """Only the log part of a mirror: bring the log copy at ``local`` (e.g. a client's COMMONFORGE_LOG)
    up to the peer's, verified against ``state`` the same way; nothing changes when it is refused."""
    import tempfile

    local = Path(local)
    report = MirrorReport(url, local)
    local.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".follow-", dir=local.parent) as work:
        staged = _follow_log(url.rstrip("/"), spec, local, state, Path(work), timeouts, report)
        _commit_log(*staged, local, state)
    return report


def mirror(url: str, dest: Path, *, state: ClientState | None = None, pins: trust_policy.Pins | None = None,
           timeouts: Timeouts | None = None) -> MirrorReport:
    """Bring the mirror at ``dest`` up to date with the peer at ``url`` (see the module's docstring).

    ``state`` (default ``dest/.forge/log-state.json``) is the newest checkpoint the mirror accepted;
    ``pins`` (default ``dest/.forge/pins.json``) the policy it accepted. Raises MirrorError, with
    nothing in ``dest`` changed, when the governance chain or the log does not verify."""
    dest = Path(dest).resolve()
    dest.mkdir(parents=True, exist_ok=True)
    state = state if state is not None else ClientState(dest / ".forge" / "log-state.json")
    pins = pins if pins is not None else trust_policy.Pins(dest / ".forge" / "pins.json")
    report = MirrorReport(url, dest)
    peers, indexes, _ = pull_mod._connect([url], timeouts)
    peer = peers[0]
    report.url = peer.url
    index = indexes[peer.url]
    staging = pull_mod.Staging(dest, peers, indexes)
    try:
        try:
            chain = pull_mod._check_chain(staging, dest, pins)
        except ForgeError as err:
            raise MirrorError(f"peer {peer.url}: its governance policy is refused: {err.message}",
                              hint=err.hint or "the mirror is unchanged") from None
        policy = chain.current
        staged_log = None
        if policy is not None and policy.log is not None:
            staged_log = _follow_log(peer.url, policy.log, dest / "log", state, staging.root / ".mirror", timeouts,
                                     report)
        # Everything verified: commit the log, then the governance files, then the releases (each a pull).
        if staged_log is not None:
            _commit_log(*staged_log, dest / "log", state)
        for path, data in sorted(staging.files.items()):
            target = dest / path
            if not (target.is_file() and target.read_bytes() == data):
                fsutil.atomic_write_bytes(target, data)
                report.governance_written += 1
        pins.remember(dest, list(chain.versions))
    finally:
        staging.close()
        for p in peers:
            p.close()
    for ref, paths in _release_paths(index).items():
        if _held(dest, index, paths):
            report.current.append(ref)
            continue
        try:
            result = pull_mod.pull(ref, [url], dest_root=dest, allow_revoked=True, timeouts=timeouts,
                                   state=state, pins=pins)
        except pull_mod.PullError as err:
            if " is draft " in err.message:
                report.skipped.append(f"{ref}: a draft")
            else:
                report.failed.append(f"{ref}: {err.message}")
            continue
        except ForgeError as err:
            report.failed.append(f"{ref}: {err.message}")
            continue
        report.pulled.append(f"{ref} ({result.status.status})")
        report.blobs += result.blobs
        report.bytes += result.bytes
    return report
