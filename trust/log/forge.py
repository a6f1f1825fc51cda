"""The forge's transparency log: which statements go in, and how a checkout reads them back.

The log named in the governance policy (``log:``: its origin line, its Ed25519 note key, its
witnesses and how many must cosign) holds the exact bytes of every statement the forge vouches
for: policy signatures, build, approval, rebuild, publication and revocation statements. Entries
are appended by the log's operator (``commonforge log append``), who verifies each statement
against the policy first; nothing else writes the log.

A client reads a copy of the log (a directory in the tlog-tiles layout: the operator's own, or
one a peer or mirror serves) and trusts nothing in it until

1. the checkpoint carries the log key's signature and the policy's quorum of witness
   cosignatures (checkpoint.open_checkpoint);
2. it is the newest this client has accepted, or is proven to extend it (client.ClientState:
   a rollback or a fork is refused and named);
3. the entries hash to the checkpoint's root (every byte of every entry is checked, so a copy
   that drops, reorders or rewrites an entry is refused).

Only then is it a :class:`LogView`, from which ``trust.status`` takes two things: which
statements are logged, and at which position (the log's order is the forge's trusted time: a key
declared compromised from entry N counts only for statements logged before N), and the logged
statements a checkout may lack (a revocation deleted from a git remote is still in the log).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from commonforge.errors import ForgeError, InputError
from registry.digest import sha256_bytes
from trust import statements as st_mod
from trust.log import merkle, note
from trust.log.checkpoint import OpenedCheckpoint
from trust.log.client import ClientState
from trust.log.merkle import LogError
from trust.log.tiles import MAX_ENTRY, TileLog
from trust.statements import Statement, StatementError

if TYPE_CHECKING:
    from trust.log.monitor import LogSource
    from trust.policy import LogSpec


# --- where things are ---------------------------------------------------------------------


def default_source(root: Path | None = None) -> Path:
    """Where a registry's copy of the forge's log is: the copy kept with it (``<root>/.forge/log``,
    what ``pull`` and ``mirror`` keep in the registries they fill), else this machine's
    (``COMMONFORGE_LOG``: the operator's log, or one the user follows)."""
    from commonforge import settings

    if root is not None and (Path(root) / ".forge" / "log" / "checkpoint").is_file():
        return Path(root) / ".forge" / "log"
    return settings.log_dir()


def default_state() -> ClientState:
    """This user's newest accepted checkpoint per log (outside every repository)."""
    from commonforge import settings

    return ClientState(settings.log_state())


# --- entries ------------------------------------------------------------------------------


@dataclass(frozen=True)
class LogEntry:
    """Entry ``index`` of the log: the statement's bytes, parsed (or why they do not parse)."""

    index: int
    data: bytes
    statement: Statement | None
    error: str | None = None

    @property
    def digest(self) -> str:
        return self.statement.digest if self.statement else sha256_bytes(self.data)


def parse_entry(index: int, data: bytes) -> LogEntry:
    try:
        return LogEntry(index, data, st_mod.parse_envelope(data, f"log#{index}"))
    except StatementError as err:
        return LogEntry(index, data, None, err.message)


@dataclass
class LogView:
    """A copy of the log that verified (see the module's docstring), as of ``opened``."""

    spec: LogSpec
    source: Path
    note: bytes
    opened: OpenedCheckpoint
    entries: list[LogEntry]
    _by_digest: dict[str, int] = field(default_factory=dict)
    tree: Any = field(default=None, repr=False)  # the reader the entries came from (proofs are asked of it)

    def __post_init__(self) -> None:
        for e in self.entries:
            self._by_digest.setdefault(e.digest, e.index)

    @property
    def size(self) -> int:
        return self.opened.checkpoint.size

    def position(self, st: Statement) -> int | None:
        """Where ``st`` (by the digest of its file's bytes) is in the log, or None."""
        return self._by_digest.get(st.digest)

    def about(self, subject_name: str) -> list[LogEntry]:
        return [e for e in self.entries if e.statement and e.statement.subject_name == subject_name]

    def inclusion_proof(self, index: int) -> list[bytes]:
        return (self.tree or TileLog(self.source)).inclusion_proof(index, self.size)

    def prove(self, index: int) -> list[bytes]:
        """The inclusion proof of entry ``index``, checked against the accepted root before it is returned."""
        proof = self.inclusion_proof(index)
        merkle.verify_inclusion(merkle.leaf_hash(self.entries[index].data), index, self.size, proof,
                                self.opened.checkpoint.root_hash)
        return proof

    def describe(self) -> str:
        cp = self.opened.checkpoint
        cosigned = ", ".join(c.name for c in self.opened.cosignatures) or "no witness"
        return (f"log {cp.origin}: size {cp.size}, root {cp.root_hash.hex()[:16]}…, cosigned by {cosigned} "
                f"({len(self.opened.cosignatures)} of {self.spec.witnesses_required} required)")


def _read_consistent(source: Path) -> tuple[bytes, TileLog]:
    """The checkpoint note and a reader of the same tree (monitor.open_source: the one seam where
    an HTTP source will plug in)."""
    from trust.log.monitor import open_source

    if not (Path(source) / "checkpoint").exists():
        raise InputError(f"no log at {source}: {Path(source) / 'checkpoint'} does not exist",
                         hint="point COMMONFORGE_LOG (or --log) at a copy of the forge's log; "
                         "the operator makes one with `commonforge log append`")
    opened = open_source(Path(source))
    return opened.note, opened.tree  # type: ignore[return-value]


_CACHE: dict[tuple[str, str, str, bytes], LogView] = {}


def open_view(spec: LogSpec, source: Path | LogSource | None = None, state: ClientState | None = None) -> LogView:
    """Verify the copy of the log at ``source`` (default: this machine's; a directory, or an opened
    :class:`~trust.log.monitor.LogSource` such as a peer's, ``sharing.logsource.http_source``) and
    accept its checkpoint into ``state`` (default: the user's); raise a LogError or a signature
    error naming what is wrong."""
    from trust.log.monitor import LogSource

    state = state if state is not None else default_state()
    if isinstance(source, LogSource):
        data, log, name = source.note, source.tree, source.name
    else:
        source = Path(source) if source is not None else default_source()
        data, log = _read_consistent(source)
        name = str(source.resolve())
    key = (name, str(state.path), spec.model_dump_json(), data)
    cached = _CACHE.get(key)
    if cached is not None and state.accepted(spec.origin) == cached.opened.checkpoint:
        return cached
    opened = state.accept(data, spec.verifier(), spec.witness_verifiers(), spec.witnesses_required,
                          consistency_proof_fn=log.consistency_proof, origin=spec.origin)
    raw = list(log.entries())
    computed = merkle.root([merkle.leaf_hash(e) for e in raw])
    if computed != opened.checkpoint.root_hash:
        raise LogError(f"the log at {name} does not hold the tree its checkpoint signs (size {opened.checkpoint.size}):"
                       f" its entries hash to {computed.hex()}, not {opened.checkpoint.root_hash.hex()}",
                       hint="an entry was dropped, reordered or rewritten in this copy; fetch the log from another source")
    view = LogView(spec, source if isinstance(source, Path) else Path(name), data, opened,
                   [parse_entry(i, e) for i, e in enumerate(raw)], tree=log)
    _CACHE.clear()
    _CACHE[key] = view
    return view


def try_view(spec: LogSpec, source: Path | LogSource | None = None, state: ClientState | None = None) -> LogView | str:
    """:func:`open_view`, or the reason there is no verified view (for status lines)."""
    try:
        return open_view(spec, source, state)
    except ForgeError as err:
        return err.message
    except OSError as err:  # a copy whose tile is a directory, or unreadable: a broken or hostile mirror
        where = getattr(source, "name", None) or source or default_source()
        return f"the copy of the log at {where} cannot be read: {err}"


# --- the operator ---------------------------------------------------------------------------


def load_note_key(path: Path) -> note.Signer:
    """A note signing key (``PRIVATE+KEY+name+hash+base64``) from a file only its owner can read."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        raise InputError(f"no key file {path}", hint="make one with `commonforge log keygen NAME`") from None
    if os.name == "posix" and path.stat().st_mode & 0o077:
        raise InputError(f"{path} can be read by others: a log or witness key must be private",
                         hint=f"chmod 600 {path}")
    return note.parse_signer(text)


def save_note_key(path: Path, signer_text: str) -> Path:
    path = Path(path)
    if path.exists():
        raise InputError(f"{path} exists; a key is never overwritten", hint="choose another name")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path.with_name(path.name + ".tmp"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(signer_text + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(path.with_name(path.name + ".tmp"), path)
    return path


def operator(spec: LogSpec, signer: note.Signer, directory: Path | None = None):
    """The operator of the policy's log at ``directory`` (default: this machine's copy), if
    ``signer`` is the log key the policy names."""
    from trust.log.operator import LogOperator

    mine = signer.verifier()
    if (mine.name, mine.key_id, mine.public_key) != (spec.verifier().name, spec.verifier().key_id,
                                                     spec.verifier().public_key):
        raise InputError(f"the key {signer.label} is not the log key the policy names ({spec.verifier().label})",
                         hint="use the log's own key; only its operator can append")
    return LogOperator(Path(directory) if directory is not None else default_source(), spec.origin, signer)


def order(statements: Iterable[Statement]) -> list[Statement]:
    """The order in which unlogged statements are appended: policy signatures by version, then by time."""
    def key(st: Statement) -> tuple:
        version = int(st.subject_name.split("/", 1)[1]) if st.kind == "policy" else 1 << 30
        return (version, st.signed_at, st.kind, st.keyid)
    return sorted(statements, key=key)


def append(op, statements: Sequence[Statement], already: Iterable[str] | None = None) -> list[LogEntry]:
    """Append the file bytes of each statement not yet logged (by digest) in one commit; returns
    the new entries. ``already``: the digests logged (default: read from the operator's log)."""
    seen = set(already) if already is not None else {sha256_bytes(e) for e in op.log.entries()}
    new: list[Statement] = []
    for st in order(statements):
        if st.digest in seen:
            continue
        seen.add(st.digest)
        new.append(st)
    if not new:
        return []
    data = [st.data for st in new]
    too_big = [st.source for st, d in zip(new, data, strict=True) if len(d) > MAX_ENTRY]
    if too_big:
        raise InputError(f"statements too large for a log entry (over {MAX_ENTRY} bytes): {', '.join(too_big)}",
                         hint="a statement is a few hundred bytes; these are not genuine")
    start = op.size
    op.append(data)
    return [parse_entry(start + i, d) for i, d in enumerate(data)]
