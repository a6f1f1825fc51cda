"""Gossip between peers (``commonforge peers sync``) and the policy's log monitor over peers.

For each peer the user *added* (sharing.peers), :func:`sync` asks ``/v1/info`` and ``/v1/peers``
and reads its transparency log (sharing.logsource.http_source); then the monitor
(trust.log.monitor.monitor) checks all those logs, and this machine's own copy when it has one,
for one history under the governance policy's log key and witnesses, against the checkpoint the
user accepted last (so a peer showing an older tree is a rollback, two trees the log key signed
that cannot both be true an equivocation, with both signed checkpoints printed as evidence).

What a sync records per peer (in the peers file): when it was last reached, the checkpoint it
showed (only once its log signature verified), and the peers it advertised. Those advertised
peers are **never contacted** here (nor anywhere) until the user adds them: a peer list is gossip
from an untrusted host, and following it would let any peer make this client dial any address.

Exit codes (:meth:`SyncReport.exit_code`): 3 when the log equivocated; 1 when a log did not
verify (a tampered tile, a rollback, a missing quorum); 3 when no peer could be reached at all;
otherwise 0, an unreachable peer among reachable ones being a warning that names it.

:func:`monitor_log` is what ``commonforge log monitor`` and ``peers sync`` share: the policy's
log key, witnesses and quorum, and every maintainer's key so each new entry's signature is checked.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from commonforge.errors import ForgeError, InputError
from registry.schema import utc_now
from sharing.fetch import PEER_ERRORS, Peer, PeerError, Timeouts
from sharing.logsource import http_source
from sharing.peers import KnownPeer, PeerBook, learned_urls
from trust.log.monitor import (
    EXIT_EQUIVOCATION,
    EXIT_OK,
    EXIT_PROBLEM,
    LogSource,
    MonitorReport,
    Problem,
    SourceResult,
    monitor,
)

if TYPE_CHECKING:
    from securesystemslib.signer import SSlibKey

    from trust.log.client import ClientState
    from trust.policy import Chain, LogSpec

EXIT_UNREACHABLE = 3  # no peer answered: a FetchError's code
MAX_INFO = 64 << 10
MAX_PEERS = 1 << 20


# --- the policy's log, as the monitor needs it ------------------------------------------------------


@dataclass(frozen=True)
class PolicyLog:
    """The log the current policy names, and who may have signed its entries."""

    spec: LogSpec
    names: dict[str, tuple[str, str]]  # keyid -> (name, affiliation), every maintainer any version listed
    keys: dict[str, SSlibKey]  # keyid -> key, the same maintainers (a key not its keyid's is left out)


def maintainer_names(chain: Chain) -> dict[str, tuple[str, str]]:
    """keyid -> (name, affiliation) of every maintainer any policy version lists (the newest wins)."""
    names: dict[str, tuple[str, str]] = {}
    for version in chain.versions:
        names.update({m.keyid: (m.name, m.affiliation) for m in version.maintainers})
    return names


def policy_log(chain: Chain, where: str = "") -> PolicyLog:
    """The current policy's log of ``chain`` (verified by load_chain), or InputError when it names none.

    Every maintainer any policy version lists, newest wins: a key dropped later still signed what it
    signed then. A key that is not its keyid's is left out, so the entries claiming it are reported
    unverifiable, never lent a name."""
    policy = chain.current
    if policy is None or policy.log is None:
        number = policy.version if policy is not None else 0
        raise InputError(f"policy {number}{where} names no transparency log",
                         hint="name one in a policy change: `commonforge policy propose --log-origin ORIGIN "
                              "--log-key KEY --witness ...` (keys from `commonforge log keygen`)")
    names = maintainer_names(chain)
    keys: dict[str, SSlibKey] = {}
    for version in chain.versions:
        for m in version.maintainers:
            try:
                keys[m.keyid] = m.public().sslib_key()
            except InputError:
                continue
    return PolicyLog(policy.log, names, keys)


def open_peer_logs(urls: Sequence[str], timeout: float) -> tuple[list[LogSource], list[tuple[str, str]]]:
    """Each peer's log as a monitor source, and (url, why) for those that could not be opened
    (unreachable, no log, a checkpoint that is not one): a peer's failure is never a traceback."""
    sources: list[LogSource] = []
    failed: list[tuple[str, str]] = []
    for url in urls:
        try:
            sources.append(http_source(url, timeout=timeout))
        except ForgeError as err:
            failed.append((url, err.message))
    return sources, failed


def monitor_log(log: PolicyLog, sources: Sequence[Path | str | LogSource], state: ClientState | None, *,
                failed: Sequence[tuple[str, str]] = (), full: bool = False) -> MonitorReport:
    """The monitor's report on ``sources`` under the policy's log; ``failed`` sources (url, why) are
    reported as sources that showed nothing, each a problem naming it."""
    spec = log.spec
    if sources:
        report = monitor(sources, spec.verifier(), spec.witness_verifiers(), spec.witnesses_required, state,
                         origin=spec.origin, names=log.names, keys=log.keys, full=full)
    else:  # every source failed to open: nothing to compare, nothing accepted
        report = MonitorReport(spec.origin, names=log.names, keys=log.keys)
    for url, why in failed:
        report.sources.append(SourceResult(url, error=why))
        report.problems.append(Problem(url, why))
    return report


# --- gossip -------------------------------------------------------------------------------------------


@dataclass
class PeerContact:
    """What one added peer answered this sync (``error``: why it could not be reached or read)."""

    peer: KnownPeer
    error: str | None = None
    version: str | None = None
    log_origin: str | None = None
    learned: list[str] = field(default_factory=list)
    new: list[str] = field(default_factory=list)  # advertised and neither added nor advertised before
    dropped: list[str] = field(default_factory=list)  # advertised entries that are not peer URLs
    log_error: str | None = None


@dataclass
class SyncReport:
    contacts: list[PeerContact]
    monitor: MonitorReport | None  # None: the logs were not checked (see ``unchecked``)
    unchecked: str | None = None
    book: PeerBook | None = None

    @property
    def reached(self) -> list[PeerContact]:
        return [c for c in self.contacts if c.error is None]

    def warnings(self) -> list[str]:
        out = [f"warning: {c.error}" for c in self.contacts if c.error is not None]
        out += [f"warning: peer {c.peer.url} advertised what is not a peer URL: {', '.join(c.dropped[:5])}"
                for c in self.contacts if c.dropped]
        if self.unchecked:
            out.append(f"warning: no log checked: {self.unchecked}")
        return out

    def exit_code(self) -> int:
        if self.monitor is not None and self.monitor.equivocations:
            return EXIT_EQUIVOCATION
        if self.contacts and not self.reached:
            return EXIT_UNREACHABLE
        if self.monitor is not None and self.monitor.problems:
            return EXIT_PROBLEM
        return EXIT_OK

    def lines(self) -> list[str]:
        out: list[str] = []
        for c in self.contacts:
            if c.error is not None:
                out.append(f"{c.peer.label}: NOT REACHED ({c.error})")
                continue
            log = f"log {c.log_origin}" if c.log_origin else "no log"
            cp = c.peer.checkpoint
            seen = f" at size {cp['size']}, root {cp['root'][:16]}…" if cp and c.log_origin else ""
            new = f" ({len(c.new)} new)" if c.new else ""
            out.append(f"{c.peer.label}: reached; commonforge {c.version}; {log}{seen}; advertises "
                       f"{len(c.learned)} peer(s){new}")
            if c.log_error:
                out.append(f"  its log could not be read: {c.log_error}")
        if self.monitor is not None:
            out += self.monitor.lines()
        if self.book is not None:
            learned = self.book.learned()
            for lp in learned:
                out.append(f"learned {lp.url} from {', '.join(lp.advertised_by)}, never contacted — "
                           f"`commonforge peers add {lp.url}` to use it")
        code = self.exit_code()
        if code == EXIT_UNREACHABLE and not (self.monitor and self.monitor.equivocations):
            out.append(f"no peer could be reached ({len(self.contacts)} tried)")
        return out


def _contact(known: KnownPeer, timeouts: Timeouts, already: set[str]) -> PeerContact:
    """GET /v1/info and /v1/peers of one added peer (and nothing it names)."""
    contact = PeerContact(known)
    peer = Peer(known.url, timeouts=timeouts)
    try:
        info = peer.get_json("v1/info", MAX_INFO)
        if not isinstance(info, dict) or info.get("api") != 1 or info.get("forge") != "commonforge":
            raise PeerError(known.url, "answered /v1/info with something that is not a commonforge peer (API 1)",
                            hint="check the URL: it must be a `commonforge peer serve`")
        log = info.get("log")
        origin = log.get("origin") if isinstance(log, dict) else None
        contact.log_origin = origin if isinstance(origin, str) else None
        contact.version = str(info.get("version", "?"))[:40]
        contact.learned, contact.dropped = learned_urls(peer.get_json("v1/peers", MAX_PEERS), known.url)
    except PEER_ERRORS as err:
        contact.error = err.message
    finally:
        peer.close()
    contact.new = [u for u in contact.learned if u not in already]
    return contact


def sync(book: PeerBook, *, log: PolicyLog | None, state: ClientState | None, local_log: Path | None = None,
         timeout: float = 10.0, unchecked: str | None = None) -> SyncReport:
    """Gossip with every added peer of ``book`` and monitor their logs (see the module docstring);
    updates ``book`` in memory (the caller saves it). ``log`` None: peers are contacted but no log is
    checked (``unchecked`` says why) and no checkpoint is recorded."""
    timeouts = Timeouts(connect=timeout, read=timeout, total=timeout)
    already = {u for p in book.peers for u in p.learned} | set(book.urls())
    contacts = [_contact(known, timeouts, already) for known in book.peers]
    now = utc_now()
    for c in contacts:
        if c.error is None:
            c.peer.last_contact, c.peer.learned, c.peer.last_error = now, c.learned, None
        else:
            c.peer.last_error = c.error
    if log is None:
        return SyncReport(contacts, None, unchecked or "no policy log to check against", book)

    with_log = [c for c in contacts if c.error is None and c.log_origin]
    sources, failed = open_peer_logs([c.peer.url for c in with_log], timeout)
    for url, why in failed:
        next(c for c in with_log if c.peer.url == url).log_error = why
    named: list[Path | str | LogSource] = list(sources)
    if local_log is not None and (Path(local_log) / "checkpoint").is_file():
        named.append(Path(local_log))
    report = monitor_log(log, named, state, failed=failed)
    by_name = {r.source: r for r in report.sources}
    for c in with_log:
        result = by_name.get(c.peer.url)
        if result is not None and result.size is not None and result.root is not None and result.note is not None:
            c.peer.checkpoint = {"origin": log.spec.origin, "size": result.size, "root": result.root.hex(),
                                 "note": result.note.decode("utf-8", "replace"), "seen": now}
    return SyncReport(contacts, report, None, book)


def describe_checkpoint(cp: dict[str, Any] | None) -> str:
    if not cp:
        return "no checkpoint seen"
    return f"log {cp.get('origin')} size {cp.get('size')} root {str(cp.get('root', ''))[:16]}… (seen {cp.get('seen')})"


def policy_log_or_why(root_finder) -> tuple[PolicyLog | None, str | None]:
    """``policy_log`` of the checkout ``root_finder()`` resolves (``commonforge.settings.apply``), or
    why there is none (no checkout, or a policy without a log): gossip goes on without a log check."""
    from trust.policy import load_chain, user_pins

    try:
        return policy_log(load_chain(root_finder().root, pins=user_pins())), None
    except InputError as err:
        return None, err.message
