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
from dataclasses import dataclass, field
from pathlib import Path

from commonforge.errors import ForgeError
from registry import fsutil
from registry.digest import sha256_file
from sharing import pull as pull_mod
from sharing.fetch import Timeouts
from sharing.logcopy import LogCopyError, LogCopyReport, _commit_log, _follow_log, follow_log, served_files  # noqa: F401
from trust import policy as trust_policy
from trust.log.client import ClientState

log = logging.getLogger(__name__)

MODELS = "registry/entries/models/"


# A mirror run refused: what the peer did; the mirror is as it was (one class for the log and the releases).
MirrorError = LogCopyError


@dataclass
class MirrorReport(LogCopyReport):  # the log part's fields (url, dest, log sizes, tiles fetched), then:
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
            result = pull_mod.pull(ref, [url], dest_root=dest, allow_revoked=True, timeouts=timeouts, keep_log=False,
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
