"""A log client's memory: the newest checkpoint it accepted, per log, and the rules for moving on.

Every client (pull, verify, serve) and every witness keeps the newest checkpoint it has accepted
for each log origin. A new checkpoint is accepted only when

- its log signature and enough witness cosignatures verify (checkpoint.open_checkpoint);
- it is not smaller than the accepted one (else: a **rollback**, e.g. a revocation hidden by
  showing an older tree);
- at the same size it has the same root (else: a **fork**, the log showed two histories);
- when bigger, the log proves it extends the accepted tree (an RFC 9162 consistency proof), so
  nothing accepted before was dropped, reordered or rewritten.

Entries are then checked against the accepted root with inclusion proofs (:meth:`verify_entry`).
The state is a small JSON file, written atomically under a lock, so two processes of one client
can never move it backwards.
"""

from __future__ import annotations

import fcntl
import json
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from commonforge.errors import InputError
from registry import fsutil
from trust.log import checkpoint as ck
from trust.log import merkle
from trust.log.checkpoint import Checkpoint, OpenedCheckpoint
from trust.log.merkle import LogError
from trust.log.note import Verifier, b64encode, split

ConsistencyProofFn = Callable[[int, int], Sequence[bytes]]  # (old size, new size) -> proof
STATE_FORMAT = "commonforge-log-state/1"


class RollbackError(LogError):
    """A checkpoint of a smaller tree than one already accepted for the same log."""


class ForkError(LogError):
    """Two checkpoints of one log that cannot both be true: same size with different roots, or
    a bigger tree that is not proven to extend the accepted one. ``seen`` holds both notes (the
    accepted one first): signed by the log's key, they are evidence of its equivocation."""

    def __init__(self, message: str, *, hint: str | None = None, seen: tuple[bytes, bytes] = (b"", b"")) -> None:
        super().__init__(message, hint=hint)
        self.seen = seen


def _describe(cp: Checkpoint) -> str:
    return f"size {cp.size} with root {cp.root_hash.hex()}"


def check_extends(
    old: Checkpoint,
    new: Checkpoint,
    consistency_proof_fn: ConsistencyProofFn | None,
    *,
    old_note: bytes = b"",
    new_note: bytes = b"",
    verb: str = "accepted",
) -> None:
    """Raise unless checkpoint ``new`` of a log is ``old`` or an extension of it, proven.

    ``verb`` words the messages for who holds ``old`` ("accepted" for a client, "cosigned" for
    a witness).
    """
    if old.origin != new.origin:
        raise InputError(f"checkpoints of two logs ({old.origin!r} and {new.origin!r}) cannot be compared")
    seen = (old_note, new_note)
    if new.size < old.size:
        raise RollbackError(
            f"rollback: you {verb} size {old.size} before, this checkpoint says {new.size} "
            f"(log {new.origin}; {verb}: root {old.root_hash.hex()}, shown: root {new.root_hash.hex()})",
            hint="the source shows an older tree than you have seen (it may hide newer entries, such as a "
            "revocation); fetch the log from another source",
        )
    if new.size == old.size:
        if new.root_hash != old.root_hash:
            raise ForkError(
                f"fork: log {new.origin} at size {new.size} has root {old.root_hash.hex()} (you {verb} it) "
                f"and root {new.root_hash.hex()} (this checkpoint); its key signed both",
                hint="the log showed two different histories; keep both checkpoints as evidence and report it",
                seen=seen,
            )
        return
    if consistency_proof_fn is None:
        raise LogError(
            f"log {new.origin}: cannot move from {_describe(old)} ({verb}) to {_describe(new)} without a consistency proof",
            hint="ask the log (or a mirror) for the consistency proof between the two sizes",
        )
    try:
        proof = list(consistency_proof_fn(old.size, new.size))
        merkle.verify_consistency(old.size, new.size, old.root_hash, new.root_hash, proof)
    except LogError as err:
        raise ForkError(
            f"fork: log {new.origin} at {_describe(new)} does not extend the tree you {verb} ({_describe(old)}): {err.message}",
            hint="an entry you saw was dropped, reordered or rewritten, or the proof is wrong; keep both checkpoints",
            seen=seen,
        ) from None


class ClientState:
    """The newest checkpoint accepted per log origin, in the JSON file ``path``:

    ``{"format": "commonforge-log-state/1", "logs": {origin: {"size": n, "root": base64, "checkpoint": note}}}``
    """

    def __init__(self, path: Path, *, verb: str = "accepted") -> None:
        self.path = Path(path)
        self.verb = verb

    # --- the file -----------------------------------------------------------------------------

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_name(self.path.name + ".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _load(self) -> dict[str, dict]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (ValueError, UnicodeDecodeError) as err:
            raise InputError(f"{self.path} is not valid JSON: {err}", hint="restore it from a backup; do not delete it") from None
        except OSError as err:
            raise InputError(f"{self.path} cannot be read: {err.strerror}", hint="it must be a file you can read") from None
        if not isinstance(data, dict) or data.get("format") != STATE_FORMAT or not isinstance(data.get("logs"), dict):
            raise InputError(f"{self.path} is not a {STATE_FORMAT} file", hint="restore it from a backup; do not delete it")
        return data["logs"]

    def _save(self, logs: dict[str, dict]) -> None:
        text = json.dumps({"format": STATE_FORMAT, "logs": logs}, indent=2, sort_keys=True, ensure_ascii=False)
        fsutil.atomic_write_text(self.path, text + "\n")

    def _record(self, logs: dict[str, dict], origin: str) -> tuple[Checkpoint, bytes] | None:
        record = logs.get(origin)
        if record is None:
            return None
        try:
            note = record["checkpoint"].encode("utf-8")
            text, _ = split(note)
            cp = Checkpoint.parse(text)
            if (cp.origin, cp.size, b64encode(cp.root_hash)) != (origin, record["size"], record["root"]):
                raise ValueError("its size or root does not match its checkpoint")
        except (KeyError, TypeError, AttributeError, ValueError) as err:
            raise InputError(
                f"{self.path}: the record for log {origin} is damaged ({err})", hint="restore it from a backup"
            ) from None
        return cp, note

    # --- the rules ----------------------------------------------------------------------------

    def accepted(self, origin: str) -> Checkpoint | None:
        """The newest checkpoint accepted for ``origin``, or None."""
        record = self._record(self._load(), origin)
        return None if record is None else record[0]

    def accepted_note(self, origin: str) -> bytes | None:
        record = self._record(self._load(), origin)
        return None if record is None else record[1]

    def accept(
        self,
        note: bytes,
        log_verifier: Verifier,
        witnesses: Sequence[Verifier] = (),
        need: int = 0,
        consistency_proof_fn: ConsistencyProofFn | None = None,
        *,
        origin: str | None = None,
    ) -> OpenedCheckpoint:
        """Verify ``note`` (see the module's docstring) and make it the accepted checkpoint of its
        log. ``consistency_proof_fn(old, new)`` is asked only when the tree grew."""
        opened = ck.open_checkpoint(note, log_verifier, witnesses, need, origin=origin)
        new = opened.checkpoint
        with self._locked():
            logs = self._load()
            previous = self._record(logs, new.origin)
            if previous is not None:
                check_extends(previous[0], new, consistency_proof_fn, old_note=previous[1], new_note=note, verb=self.verb)
                if new.size == previous[0].size and len(split(note)[1]) <= len(split(previous[1])[1]):
                    return opened  # the same tree: keep the note with the most signatures
            logs[new.origin] = {"size": new.size, "root": b64encode(new.root_hash), "checkpoint": note.decode("utf-8")}
            self._save(logs)
        return opened

    def verify_entry(self, entry: bytes, index: int, size: int, proof: Sequence[bytes], *, origin: str | None = None) -> None:
        """Raise unless ``proof`` shows ``entry`` at ``index`` in the accepted tree of ``origin``
        (which may be left out when the state holds one log). ``size`` is the tree the proof is
        for, and must be the accepted size: accept a newer checkpoint first to check a newer entry."""
        logs = self._load()
        if origin is None:
            if len(logs) != 1:
                raise InputError(
                    f"{self.path} holds {len(logs)} logs; say which origin the entry is in",
                    hint="pass origin=",
                )
            origin = next(iter(logs))
        record = self._record(logs, origin)
        if record is None:
            raise InputError(f"no checkpoint of log {origin} accepted yet", hint="accept one before checking entries")
        cp = record[0]
        if size != cp.size:
            raise LogError(
                f"the inclusion proof is for a tree of size {size}; the accepted checkpoint of {origin} is size {cp.size}",
                hint=f"ask the log for a proof at size {cp.size}, or accept its newer checkpoint first",
            )
        try:
            merkle.verify_inclusion(merkle.leaf_hash(entry), index, size, proof, cp.root_hash)
        except LogError as err:
            raise LogError(
                f"entry {index} is not in log {origin} as accepted ({_describe(cp)}): {err.message}",
                hint="the entry or its proof came from another tree; do not trust it",
            ) from None
