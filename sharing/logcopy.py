"""A registry's own copy of the forge's transparency log, brought up to a peer's and verified.

``sharing.mirror`` keeps one in a mirror (``DIR/log``) and ``sharing.pull`` in the user registry
(``<root>/.forge/log``, where ``trust.log.forge.default_source`` finds it), so that the status of
what they hold is read offline against the history it was verified with. The peer's log is opened
over HTTP and verified against the copy's own accepted checkpoint; only missing tiles are fetched,
assembled with the held ones in a staging directory, verified there as a directory, and moved in
with the checkpoint last (the tlog-tiles commit point). A log that does not extend the copy (a
rollback or a fork) is refused and nothing changes.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

from commonforge.errors import ForgeError, VerificationError
from registry import fsutil
from sharing.fetch import PEER_ERRORS, Timeouts
from trust import policy as trust_policy
from trust.log.client import ClientState
from trust.log.tiles import TILE_WIDTH, tile_path, tiles_for_size


class LogCopyError(VerificationError):
    """A copy refused: what the peer's log did; the copy is as it was."""


@dataclass
class LogCopyReport:
    url: str
    dest: Path
    log_origin: str | None = None
    log_before: int = 0  # the size the copy held
    log_after: int = 0
    tiles_fetched: list[str] = field(default_factory=list)  # log files fetched (relative to the copy)


def served_files(size: int) -> list[tuple[int | str, int, int]]:
    """Every file (level, index, width) a tree of ``size`` entries is served as: hash tiles and entry bundles."""
    bundles = [("entries", n, min(TILE_WIDTH, size - n * TILE_WIDTH)) for n in range(-(-size // TILE_WIDTH))]
    return [*tiles_for_size(size), *bundles]


def _copy_state(state: ClientState, where: Path) -> ClientState:
    where.parent.mkdir(parents=True, exist_ok=True)
    if Path(state.path).is_file():
        shutil.copyfile(state.path, where)
    return ClientState(where)


def _follow_log(url: str, spec: trust_policy.LogSpec, local: Path, state: ClientState, work: Path,
                timeouts: Timeouts | None, report: LogCopyReport) -> tuple[Path, ClientState] | None:
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
            raise LogCopyError(f"the mirror's own copy of the log ({local}) does not verify: {err.message}",
                              hint="restore it, or mirror into a new directory") from None
        report.log_before = held.size
    try:
        source = http_source(url, timeouts=timeouts)
        view = log_forge.open_view(spec, source, trial)
    except PEER_ERRORS as err:
        raise LogCopyError(f"peer {url}: its log could not be read: {err.message}",
                          hint="try again later, or mirror another peer; the mirror is unchanged") from None
    except ForgeError as err:
        raise LogCopyError(f"peer {url} serves a log the mirror refuses: {err.message}",
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
            raise LogCopyError(f"peer {url}: {err.message}", hint="try again; the mirror is unchanged") from None
        if read != relative:
            raise LogCopyError(f"peer {url} no longer serves {relative} (its log grew while it was mirrored)",
                              hint="run the mirror again; the mirror is unchanged")
        target.write_bytes(data)
        report.tiles_fetched.append(relative)
    (staged / "checkpoint").write_bytes(view.note)
    try:
        from trust.log.tiles import TileLog

        TileLog(staged).verify()
        log_forge.open_view(spec, staged, trial)  # the assembled directory, as any client reads it
    except ForgeError as err:
        raise LogCopyError(f"the copy of the log from {url} does not verify as a directory: {err.message}",
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
        name = path.relative_to(local).as_posix()
        if path.is_file() and name not in names:
            path.unlink()  # a partial the new size has full (or a file no checkpoint names)
        elif path.is_dir() and not any(path.iterdir()):
            path.rmdir()


def follow_log(url: str, spec: trust_policy.LogSpec, local: Path, state: ClientState, *,
               timeouts: Timeouts | None = None) -> LogCopyReport:
    """Only the log part of a mirror: bring the log copy at ``local`` (e.g. a client's COMMONFORGE_LOG)
    up to the peer's, verified against ``state`` the same way; nothing changes when it is refused."""
    import tempfile

    local = Path(local)
    report = LogCopyReport(url, local)
    local.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".follow-", dir=local.parent) as work:
        staged = _follow_log(url.rstrip("/"), spec, local, state, Path(work), timeouts, report)
        if staged is not None:
            _commit_log(*staged, local, state)
    return report


