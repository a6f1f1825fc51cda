"""The log's monitor (``commonforge log monitor SOURCE...``): is every copy of the log one history?

A client alone cannot see a fork: it is shown one history and checks that history is consistent
with itself. A monitor looks at several copies of the log (the operator's directory, mirrors,
later HTTP sources) side by side and checks, for each source,

- its checkpoint: the log's signature and ``need`` witness cosignatures (checkpoint.open_checkpoint);
- its tiles: they must hash up to the checkpoint's root, and the entries it has that the monitor
  has not seen yet must hash to their leaves and, with the older part of the tree, to that root
  (a truncated tile or a rewritten entry bundle is reported naming the source and the file);

then, across sources, that every pair is one history (same size: same root; different sizes: the
bigger source's RFC 9162 consistency proof verifies), and that each source extends the
checkpoint the monitor accepted on its last run (client.check_extends: rollbacks and forks).
Two checkpoints signed by the log's key that cannot both be true are an **equivocation**: both
notes are kept as evidence. When there is none, the largest verified checkpoint becomes the
accepted one, so the next run lists only the entries added since.

A checkpoint lacking the witness quorum is still compared with the others (and with the local
state): the log's signature alone makes two checkpoints that cannot both be true an equivocation
by the log's key. The quorum is needed only to *accept* a checkpoint and list its entries as new;
a source lacking it is reported as a problem.

Entries are the bytes of signed statement files; :func:`describe_entries` says what they claim in
words ("model/x@1.2.0 published by Cat (Cyan) with approvals from ..."). The keyid of a statement
is only who *claims* to have signed it: with ``keys`` (keyid -> key, every maintainer the policy
ever listed) the monitor verifies each new entry's signature (a build statement with the key it
carries, as ``commonforge status`` does) and reports an entry that does not verify, or whose key
it does not know, as FORGED or unverifiable, so a compromised log key cannot put words in a
maintainer's mouth. Whether a signer *counts* is ``commonforge status``'s question, under the policy.

Sources are read through :func:`open_source`, which turns what the user named into a
:class:`LogSource` (the checkpoint note's bytes and a :class:`TreeReader`); a reader of tlog-tiles
over HTTP plugs in there.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path
from typing import Protocol

from securesystemslib.signer import SSlibKey

from commonforge.errors import ForgeError, InputError
from trust import statements as st
from trust.errors import SignatureError, StatementError
from trust.keys import sslib_key
from trust.log import checkpoint as ck
from trust.log import merkle
from trust.log.checkpoint import Checkpoint
from trust.log.client import ClientState, ForkError, RollbackError, check_extends
from trust.log.merkle import LogError
from trust.log.note import Verifier, split
from trust.log.tiles import TILE_WIDTH, TileLog, tile_path

EXIT_OK, EXIT_PROBLEM, EXIT_EQUIVOCATION = 0, 1, 3


# --- sources --------------------------------------------------------------------------------------


class TreeReader(Protocol):
    """What the monitor reads of a log's tiles (TileLog has it; an HTTP tile reader will too)."""

    size: int  # the size of the checkpoint the reader was opened at
    checkpoint_root: bytes

    def root(self, size: int | None = None) -> bytes: ...

    def hash_at(self, level: int, index: int) -> bytes: ...

    def consistency_proof(self, old: int, new: int | None = None) -> list[bytes]: ...

    def entries(self, start: int = 0, end: int | None = None) -> Iterator[bytes]: ...


@dataclass(frozen=True)
class LogSource:
    """One copy of the log: ``name`` for messages, its checkpoint ``note``, and its ``tree``."""

    name: str
    note: bytes
    tree: TreeReader


def open_directory(directory: Path) -> LogSource:
    """A tlog-tiles directory (``checkpoint``, ``tile/...``) as a source."""
    directory = Path(directory)
    path = directory / "checkpoint"
    if not directory.is_dir():
        raise InputError(f"{directory} is not a directory", hint="name a log directory (it holds `checkpoint` and `tile/`)")
    for _ in range(2):  # the note and the reader must see the same checkpoint: retry once if it moved
        try:
            note = path.read_bytes()
        except FileNotFoundError:
            raise InputError(f"{path} does not exist: {directory} is not a log", hint="name a log directory") from None
        tree = TileLog(directory)
        cp = Checkpoint.parse(split(note)[0])
        if (cp.size, cp.root_hash) == (tree.size, tree.checkpoint_root):
            return LogSource(str(directory), note, tree)
    raise LogError(f"{path} changed while it was read: the log is being appended to", hint="run the monitor again")


def open_source(source: Path | str | LogSource) -> LogSource:
    """What the user named, opened. URLs are refused until the HTTP reader exists."""
    if isinstance(source, LogSource):
        return source
    if isinstance(source, str) and "://" in source:
        raise InputError(f"{source}: only log directories can be monitored yet", hint="mirror the log to a directory")
    return open_directory(Path(source))


# --- the report -----------------------------------------------------------------------------------


@dataclass
class SourceResult:
    """What one source showed: its checkpoint (when it verified) or why it did not."""

    source: str
    size: int | None = None
    root: bytes | None = None
    note: bytes | None = None
    error: str | None = None  # set with size/root too when only the witness quorum is missing

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(frozen=True)
class Equivocation:
    """Two checkpoints of one log signed by its key that cannot both be true."""

    message: str
    sources: tuple[str, str]  # who showed them ("local state <path>" for the monitor's own record)
    notes: tuple[bytes, bytes]  # the evidence, in the order of ``sources``


@dataclass(frozen=True)
class Problem:
    source: str
    message: str


@dataclass
class MonitorReport:
    origin: str | None
    sources: list[SourceResult] = field(default_factory=list)
    equivocations: list[Equivocation] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    new_entries: list[tuple[int, str]] = field(default_factory=list)  # (index, what the entry says)
    previous_size: int = 0  # accepted before this run (0 without a state)
    accepted: Checkpoint | None = None  # the checkpoint accepted into the state (None: none)
    entries: list[tuple[int, bytes]] = field(default_factory=list, repr=False)  # the new entries' bytes
    names: Mapping[str, tuple[str, str]] = field(default_factory=dict, repr=False)
    keys: Mapping[str, SSlibKey] | None = field(default=None, repr=False)  # None: signatures not checked

    @property
    def ok(self) -> bool:
        return not self.equivocations and not self.problems

    def exit_code(self) -> int:
        """3 when the log equivocated, 1 for any other problem, 0 when all is well."""
        if self.equivocations:
            return EXIT_EQUIVOCATION
        return EXIT_PROBLEM if self.problems else EXIT_OK

    def lines(self) -> list[str]:
        """The report a person reads."""
        unchecked = " (signatures not checked)" if self.keys is None else ""
        out = [f"log {self.origin or '(unknown)'}: {len(self.sources)} source(s){unchecked}"]
        for r in self.sources:
            shown = f"size {r.size}, root {r.root.hex() if r.root else ''}"
            if r.ok:
                out.append(f"  {r.source}: {shown}")
            elif r.size is not None:
                out.append(f"  {r.source}: {shown}: FAILED: {r.error}")
            else:
                out.append(f"  {r.source}: FAILED: {r.error}")
        for e in self.equivocations:
            out.append(f"EQUIVOCATION between {e.sources[0]} and {e.sources[1]}: {e.message}")
            for who, note in zip(e.sources, e.notes):
                out.append(f"  evidence, the checkpoint shown by {who}:")
                out += ["    " + line for line in note.decode("utf-8", "replace").splitlines()]
        for p in self.problems:
            out.append(f"PROBLEM {p.source}: {p.message}")
        if self.equivocations:
            out.append("nothing accepted: keep the evidence above and report the log's equivocation")
        elif self.accepted is None:
            out.append("no checkpoint accepted")
        else:
            size = self.accepted.size
            was = f" (was {self.previous_size})" if self.previous_size else ""
            out.append(f"size {size}{was}: {len(self.entries)} new entr{'y' if len(self.entries) == 1 else 'ies'}")
            out += ["  " + line for line in describe_entries(self.entries, self.names, self.keys)]
        out.append("OK" if self.ok else f"NOT OK (exit {self.exit_code()})")
        return out


# --- checking -------------------------------------------------------------------------------------


@dataclass
class _Verified:
    source: LogSource
    checkpoint: Checkpoint
    entries: list[tuple[int, bytes]]
    quorum_error: str | None = None  # why it lacks the witness quorum (None: it has it)
    state_ok: bool = True  # False: smaller than the accepted tree (a rollback), or a fork of it


def _check_entries(tree: TreeReader, cp: Checkpoint, start: int) -> list[tuple[int, bytes]]:
    """Entries ``start``..size, checked: each against its leaf in the level-0 tile, and all of
    them, hashed up with the tiles' hashes of the older part, against the checkpoint's root."""
    entries = list(zip(range(start, cp.size), tree.entries(start, cp.size)))
    if len(entries) != cp.size - start:
        raise LogError(f"the log gives {len(entries)} entries from {start}, its checkpoint needs {cp.size - start}")
    leaves: dict[int, bytes] = {}
    for i, entry in entries:
        leaves[i] = merkle.leaf_hash(entry)
        if leaves[i] != tree.hash_at(0, i):
            bundle, width = i // TILE_WIDTH, min(TILE_WIDTH, cp.size - i // TILE_WIDTH * TILE_WIDTH)
            raise LogError(
                f"entry {i} in {tile_path('entries', bundle, width)} does not hash to leaf {i % TILE_WIDTH} "
                f"of {tile_path(0, bundle, width)}: the entry bundle or the tile was rewritten"
            )

    def hash_at(level: int, index: int) -> bytes:
        if (index + 1) << level <= start:  # wholly in the part checked on an earlier run
            return tree.hash_at(level, index)
        if level == 0:
            return leaves[index]
        return merkle.node_hash(hash_at(level - 1, 2 * index), hash_at(level - 1, 2 * index + 1))

    computed = merkle.tree_root(cp.size, hash_at)
    if computed != cp.root_hash:
        raise LogError(
            f"entries {start}..{cp.size - 1} hash to root {computed.hex()}, the checkpoint names {cp.root_hash.hex()}"
        )
    return entries


def _open_one(
    source: Path | str | LogSource,
    log_verifier: Verifier,
    witnesses: Sequence[Verifier],
    need: int,
    origin: str | None,
    start_for: dict[str, int],
    state: ClientState | None,
    full: bool,
) -> _Verified:
    opened_source = open_source(source)
    # The log's signature alone is enough to hold the log to what it signed (comparisons, the state);
    # the quorum is checked apart, and only decides whether the checkpoint may be accepted.
    cp = ck.open_checkpoint(opened_source.note, log_verifier, origin=origin).checkpoint
    quorum_error = None
    try:
        ck.open_checkpoint(opened_source.note, log_verifier, witnesses, need, origin=origin)
    except ForgeError as err:
        quorum_error = err.message
    tree = opened_source.tree
    if (tree.size, tree.checkpoint_root) != (cp.size, cp.root_hash):
        raise LogError(f"its tiles were read at size {tree.size}, its checkpoint says {cp.size}")
    from_tiles = tree.root(cp.size)
    if from_tiles != cp.root_hash:
        raise LogError(f"its tiles hash to root {from_tiles.hex()}, its checkpoint names {cp.root_hash.hex()}")
    if cp.origin not in start_for:
        accepted = state.accepted(cp.origin) if state is not None else None
        start_for[cp.origin] = accepted.size if accepted is not None else 0
    start = 0 if full else min(start_for[cp.origin], cp.size)
    return _Verified(opened_source, cp, _check_entries(tree, cp, start), quorum_error)


def _name(source: Path | str | LogSource) -> str:
    return source.name if isinstance(source, LogSource) else str(source)


def monitor(
    sources: Sequence[Path | str | LogSource],
    log_verifier: Verifier,
    witnesses: Sequence[Verifier] = (),
    need: int = 0,
    state: ClientState | None = None,
    *,
    origin: str | None = None,
    names: Mapping[str, tuple[str, str]] | None = None,
    keys: Mapping[str, SSlibKey] | None = None,
    full: bool = False,
) -> MonitorReport:
    """Check ``sources`` (see the module's docstring) and report; accept into ``state`` the largest
    verified checkpoint when no source equivocates. ``names`` (keyid -> (name, affiliation))
    words the new entries; ``keys`` (keyid -> key) verifies their signatures (None: not checked,
    and the report says so); ``full`` re-checks every entry, not only those new since ``state``.

    A new entry that does not verify under ``keys`` is a problem of the run that lists it; it is in
    the log all the same, so the checkpoint is still accepted and the next run does not list it again.

    What a source shows never raises: it is a line of the report. Bad arguments (no sources, a
    quorum larger than the witnesses) and a damaged ``state`` file raise InputError."""
    if not sources:
        raise InputError("no log sources to monitor", hint="name one or more log directories")
    if not 0 <= need <= len({(w.name, w.key_id) for w in witnesses}):
        raise InputError(
            f"{need} cosignatures required but only {len(witnesses)} witnesses are trusted",
            hint="the policy's witness quorum cannot exceed its list of witnesses",
        )
    names = dict(names or {})
    report = MonitorReport(origin, names=names, keys=None if keys is None else dict(keys))
    start_for: dict[str, int] = {}
    verified: list[_Verified] = []

    # Each source on its own: signature, cosignatures, tiles, entries.
    for source in sources:
        result = SourceResult(_name(source))
        report.sources.append(result)
        try:
            v = _open_one(source, log_verifier, witnesses, need, origin, start_for, state, full)
        except ForgeError as err:
            result.error = err.message
            report.problems.append(Problem(result.source, err.message))
            continue
        result.size, result.root, result.note = v.checkpoint.size, v.checkpoint.root_hash, v.source.note
        if v.quorum_error is not None:
            result.error = v.quorum_error
            report.problems.append(Problem(result.source, v.quorum_error))
        if report.origin is None:
            report.origin = v.checkpoint.origin
        if v.checkpoint.origin != report.origin:
            result.size = result.root = None
            result.error = f"it is log {v.checkpoint.origin!r}, the other sources are log {report.origin!r}"
            report.problems.append(Problem(result.source, result.error + "; monitor one log at a time"))
            continue
        verified.append(v)

    # Every pair of sources: one history?
    for small, big in combinations(sorted(verified, key=lambda v: v.checkpoint.size), 2):
        _compare(small, big, report)

    # Each source against what was accepted on the last run.
    previous = None
    if state is not None and report.origin is not None:
        previous = state.accepted(report.origin)
        previous_note = state.accepted_note(report.origin) or b""
        report.previous_size = previous.size if previous is not None else 0
        who = f"local state {state.path}"
        if previous is not None:
            for v in verified:
                v.state_ok = _check_state(previous, previous_note, v, who, report)

    # Accept the largest checkpoint with its quorum, and say what is new since the last run.
    candidates = [v for v in verified if v.state_ok and v.quorum_error is None]
    if report.equivocations or not candidates:
        return report
    best = max(candidates, key=lambda v: (v.checkpoint.size, len(split(v.source.note)[1])))
    if state is not None:
        try:
            state.accept(best.source.note, log_verifier, witnesses, need, best.source.tree.consistency_proof, origin=origin)
        except ForgeError as err:
            report.problems.append(Problem(best.source.name, f"not accepted: {err.message}"))
            return report
    report.accepted = best.checkpoint
    report.entries = [(i, e) for i, e in best.entries if i >= report.previous_size]
    report.new_entries = [(i, describe_entry(i, e, names, report.keys)) for i, e in report.entries]
    for i, e in report.entries:
        if report.keys is not None and isinstance(s := _parse(i, e), st.Statement) and _unverified(s, report.keys):
            report.problems.append(Problem(f"entry {i}", describe_entry(i, e, names, report.keys)))
    return report


def _proof(big: _Verified, old_size: int, report: MonitorReport) -> list[bytes] | None:
    """``big``'s consistency proof from ``old_size``, or None (recorded as ``big``'s problem) when its
    tiles cannot give one: a damaged mirror is not evidence against the log."""
    try:
        return big.source.tree.consistency_proof(old_size, big.checkpoint.size)
    except ForgeError as err:
        report.problems.append(Problem(big.source.name, f"cannot prove it extends size {old_size}: {err.message}"))
        return None


def _compare(small: _Verified, big: _Verified, report: MonitorReport) -> None:
    """Record an equivocation unless ``big`` shows ``small``'s tree or proves that it extends it."""
    a, b = small.checkpoint, big.checkpoint
    who = (small.source.name, big.source.name)
    notes = (small.source.note, big.source.note)
    if a.size == b.size:
        if a.root_hash != b.root_hash:
            report.equivocations.append(Equivocation(
                f"fork: log {a.origin} at size {a.size} has root {a.root_hash.hex()} in {who[0]} and root "
                f"{b.root_hash.hex()} in {who[1]}; its key signed both", who, notes))
        return
    proof = _proof(big, a.size, report)
    if proof is None:
        return
    try:
        merkle.verify_consistency(a.size, b.size, a.root_hash, b.root_hash, proof)
    except LogError as err:
        report.equivocations.append(Equivocation(
            f"fork: log {a.origin} in {who[1]} (size {b.size}, root {b.root_hash.hex()}) does not extend the tree in "
            f"{who[0]} (size {a.size}, root {a.root_hash.hex()}): {err.message}; its key signed both", who, notes))


def _check_state(previous: Checkpoint, previous_note: bytes, v: _Verified, who: str, report: MonitorReport) -> bool:
    """True when source ``v`` is the accepted tree or proves that it extends it; else the rollback
    (a problem) or the fork (an equivocation) is recorded."""
    proof: list[bytes] | None = []
    if v.checkpoint.size > previous.size and (proof := _proof(v, previous.size, report)) is None:
        return False
    try:
        check_extends(previous, v.checkpoint, lambda _old, _new: proof or [], old_note=previous_note,
                      new_note=v.source.note)
    except RollbackError as err:
        report.problems.append(Problem(v.source.name, err.message))
        return False
    except ForkError as err:
        report.equivocations.append(Equivocation(err.message, (who, v.source.name), err.seen))
        return False
    return True


# --- what the entries say -------------------------------------------------------------------------


def _who(keyid: str, names: Mapping[str, tuple[str, str]]) -> str:
    if keyid in names:
        name, affiliation = names[keyid]
        return f"{name} ({affiliation})"
    return keyid[:12]


def _entries_text(indices: Sequence[int]) -> str:
    """entry 3 / entries 0-2, 5, 6: runs of three or more as ranges."""
    runs: list[list[int]] = []
    for i in sorted(set(indices)):
        if runs and i == runs[-1][1] + 1:
            runs[-1][1] = i
        else:
            runs.append([i, i])
    text = ", ".join(f"{a}" if a == b else f"{a}, {b}" if b == a + 1 else f"{a}-{b}" for a, b in runs)
    return f"entr{'y' if len(set(indices)) == 1 else 'ies'} {text}"


def _indices(indices: Sequence[int]) -> str:
    return f"({_entries_text(indices)})"


def _parse(index: int, data: bytes) -> st.Statement | str:
    """The statement in an entry, or why it is not one."""
    source = f"entry {index}"
    try:
        return st.parse_envelope(data, source)
    except StatementError as err:
        return err.message.removeprefix(f"{source}: ")
    except Exception as err:  # noqa: BLE001 - an entry is untrusted bytes: describe it, never crash on it
        return f"unreadable ({type(err).__name__})"


def _unverified(s: st.Statement, keys: Mapping[str, SSlibKey] | None) -> str | None:
    """Why ``s``'s signature does not verify under ``keys`` (None: it does, or ``keys`` is None).

    A build statement verifies with the key it carries (its builder need not be a maintainer);
    the forge's keyids are the sha256 of the key, so that key is the claimed keyid's or it fails."""
    if keys is None:
        return None
    try:
        if isinstance(s.predicate, st.BuildPredicate):
            key = sslib_key(s.predicate.public_key)
        elif (found := keys.get(s.keyid)) is not None:
            key = found
        else:
            return "no policy version names its key"
        s.verify(key)
    except (SignatureError, InputError):
        return "its signature does not verify"
    except Exception as err:  # noqa: BLE001 - an entry is untrusted bytes: report it, never crash on it
        return f"its signature cannot be checked ({type(err).__name__})"
    return None


def _forged(s: st.Statement, why: str) -> str:
    """A statement that does not verify, in words that lend it no name: only the keyid it claims."""
    return f"FORGED or unverifiable: claims to be {s.kind} of {s.subject_name} by {s.keyid[:12]} ({why})"


def _join(people: list[str]) -> str:
    return ", ".join(dict.fromkeys(people))  # each once, in the order they appear


def describe_entry(
    index: int, data: bytes, names: Mapping[str, tuple[str, str]] = {},  # noqa: B006
    keys: Mapping[str, SSlibKey] | None = None,
) -> str:
    """One entry in words, e.g. ``approval of model/x@1.2.0 by Ann (Acme)``; with ``keys``, an entry
    whose signature does not verify is ``FORGED or unverifiable: claims to be ...``."""
    s = _parse(index, data)
    if isinstance(s, str):
        return f"not a signed statement: {s}"
    if (why := _unverified(s, keys)) is not None:
        return _forged(s, why)
    who = _who(s.keyid, names)
    if s.kind == "policy":
        return f"policy {s.subject_name.removeprefix('policy/')} signed by {who}"
    detail = ""
    if isinstance(s.predicate, st.RevocationPredicate):
        detail = f" ({s.predicate.severity}: {s.predicate.reason})"
    elif isinstance(s.predicate, st.RebuildPredicate):
        detail = f" ({s.predicate.result})"
    elif isinstance(s.predicate, st.PublicationPredicate):
        detail = f" under policy {s.predicate.policy_version}"
    return f"{s.kind} of {s.subject_name} by {who}{detail}"


def describe_entries(
    entries: Sequence[tuple[int, bytes]], names: Mapping[str, tuple[str, str]] = {},  # noqa: B006
    keys: Mapping[str, SSlibKey] | None = None,
) -> list[str]:
    """Entries ``(index, bytes)`` in words, a line per subject (and one per revocation reason, so a
    revocation stands out), each ending with the entries it is drawn from, in order of first entry.
    With ``keys`` each statement's signature is verified first: one that does not verify gets a
    FORGED line of its own and is left out of the subject's line (no name is lent to a forgery)."""
    groups: dict[tuple[str, str], dict[str, list[tuple[int, st.Statement]]]] = {}
    garbage: dict[str, list[int]] = {}  # why an entry is no statement -> the entries it holds for
    lines: list[tuple[int, str]] = []
    for index, data in entries:
        s = _parse(index, data)
        if isinstance(s, str):
            garbage.setdefault(s, []).append(index)
            continue
        if (why := _unverified(s, keys)) is not None:
            lines.append((index, f"{_forged(s, why)} {_indices([index])}"))
            continue
        groups.setdefault((s.subject_name, s.subject_digest), {}).setdefault(s.kind, []).append((index, s))
    digests: dict[str, set[str]] = {}
    for name, digest in groups:
        digests.setdefault(name, set()).add(digest)

    for reason, indices in garbage.items():
        verb = "is not a signed statement" if len(indices) == 1 else "are not signed statements"
        lines.append((indices[0], f"{_entries_text(indices)} {verb}: {reason}"))
    for (name, digest), kinds in groups.items():
        # The same name with two digests is two different things under one version: show which.
        subject = f"{name} (sha256 {digest[:12]})" if len(digests[name]) > 1 else name

        def people(kind: str, _kinds: dict = kinds) -> str:
            return _join([_who(s.keyid, names) for _, s in _kinds.get(kind, [])])

        clauses: list[str] = []
        used: list[int] = []
        if "policy" in kinds:
            clauses.append(f"signed by {people('policy')}")
            used += [i for i, _ in kinds["policy"]]
            subject = f"policy {name.removeprefix('policy/')}"
        if "build" in kinds:
            clauses.append(f"built by {people('build')}")
            used += [i for i, _ in kinds["build"]]
        if "publication" in kinds:
            versions = _join([f"policy {getattr(s.predicate, 'policy_version', '?')}" for _, s in kinds["publication"]])
            clause = f"published by {people('publication')} under {versions}"
            if "approval" in kinds:
                clause += f" with approvals from {people('approval')}"
            clauses.append(clause)
            used += [i for i, _ in kinds["publication"]]
        elif "approval" in kinds:
            clauses.append(f"approved by {people('approval')}")
        used += [i for i, _ in kinds.get("approval", [])]
        for result in ("identical", "different"):
            rebuilt = [(i, s) for i, s in kinds.get("rebuild", []) if getattr(s.predicate, "result", None) == result]
            if rebuilt:
                clauses.append(f"rebuilt {'identically' if result == 'identical' else 'DIFFERENTLY'} by "
                               + _join([_who(s.keyid, names) for _, s in rebuilt]))
                used += [i for i, _ in rebuilt]
        if clauses:
            lines.append((min(used), f"{subject} {'; '.join(clauses)} {_indices(used)}"))
        # Revocations: a line per (severity, reason), so none hides in a list.
        reasons: dict[tuple[str, str], list[tuple[int, st.Statement]]] = {}
        for i, s in kinds.get("revocation", []):
            pred = s.predicate
            assert isinstance(pred, st.RevocationPredicate)
            reasons.setdefault((pred.severity, pred.reason), []).append((i, s))
        for (severity, reason), revs in reasons.items():
            by = _join([_who(s.keyid, names) for _, s in revs])
            lines.append((revs[0][0], f"{subject} REVOKED by {by} ({severity}: {reason}) {_indices([i for i, _ in revs])}"))
    return [text for _, text in sorted(lines, key=lambda pair: pair[0])]
