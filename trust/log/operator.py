"""The log's operator: the one process that holds the log's private key and appends to the log.

It wraps a :class:`~trust.log.tiles.TileLog` (the static tlog-tiles files) with the log's
identity (its origin line) and its Ed25519 note key: every append commits with a checkpoint
signed by that key, and witnesses' cosignatures are added to the checkpoint file only after they
verify against the checkpoint that is there now. Clients (client.py) and witnesses (witness.py)
never trust the operator: they check its signature, its consistency proofs and its inclusion
proofs. The operator's job is only to never sign two different trees of one size.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from commonforge.errors import InputError
from registry import fsutil
from trust.log import checkpoint as ck
from trust.log.checkpoint import Checkpoint, CosignatureError, OpenedCheckpoint
from trust.log.merkle import LogError
from trust.log.note import ALG_ED25519, Signer, Verifier, split
from trust.log.tiles import TileLog


class LogOperator:
    """The log ``origin`` in ``directory``, signed by ``signer`` (an Ed25519 note key, type 0x01)."""

    def __init__(self, directory: Path, origin: str, signer: Signer) -> None:
        if signer.alg != ALG_ED25519:
            raise InputError(
                f"the log key {signer.label} is not an Ed25519 note key (type 0x01)",
                hint="generate the log's key with note.generate_key(name) and name it in the governance policy",
            )
        Checkpoint(origin, 0, bytes(32))  # the origin line must be one a checkpoint can carry
        self.directory = Path(directory)
        self.origin = origin
        self.signer = signer
        self.verifier: Verifier = signer.verifier()
        self.log = TileLog(self.directory)
        if self.log.size or (self.directory / "checkpoint").exists():
            self.opened()  # a log of another origin, or signed by another key, is refused here

    # --- the checkpoint -----------------------------------------------------------------------

    @property
    def size(self) -> int:
        return self.log.size

    def checkpoint_note(self) -> bytes:
        """The checkpoint file's bytes: the signed note, with the cosignatures gathered so far."""
        path = self.directory / "checkpoint"
        try:
            return path.read_bytes()
        except FileNotFoundError:
            raise InputError(f"{path} does not exist: the log is empty", hint="append the first entries") from None

    def opened(self, witnesses: Sequence[Verifier] = (), need: int = 0) -> OpenedCheckpoint:
        """The current checkpoint, verified with the log's own key (and ``witnesses``)."""
        opened = ck.open_checkpoint(self.checkpoint_note(), self.verifier, witnesses, need, origin=self.origin)
        if (opened.checkpoint.size, opened.checkpoint.root_hash) != (self.log.size, self.log.checkpoint_root):
            self.log = TileLog(self.directory)  # another process appended since we read the log
        if (opened.checkpoint.size, opened.checkpoint.root_hash) != (self.log.size, self.log.checkpoint_root):
            raise LogError(
                f"{self.directory / 'checkpoint'} changed while it was read (size {opened.checkpoint.size}, "
                f"then {self.log.size}): another process is appending; try again"
            )
        return opened

    def _sign(self, size: int, root: bytes) -> bytes:
        return ck.sign_checkpoint(Checkpoint(self.origin, size, root), self.signer)

    # --- writing ------------------------------------------------------------------------------

    def append(self, entries: list[bytes]) -> OpenedCheckpoint:
        """Append ``entries`` and commit them with a newly signed checkpoint (crash-safe: the
        checkpoint's rename is the commit point, see tiles.py). An append drops the previous
        checkpoint's cosignatures: they vouch for the old tree, the witnesses cosign the new one."""
        if not entries:
            raise InputError("nothing to append", hint="pass at least one entry")
        self.log.append(entries, self._sign)
        return self.opened()

    def add_cosignature(self, line: bytes, witness: Verifier) -> OpenedCheckpoint:
        """Add ``witness``'s cosignature ``line`` to the checkpoint file (see :func:`add_cosignature`)."""
        opened = add_cosignature(self.directory, self.origin, self.verifier, line, witness)
        self.log = TileLog(self.directory)
        return opened

    # --- reading (every read is checked: a damaged tile or bundle is refused by name) ---------

    def entry(self, index: int) -> bytes:
        return self.log.read_entry(index)

    def prove_inclusion(self, index: int, size: int | None = None) -> list[bytes]:
        """The RFC 9162 inclusion proof of entry ``index`` in the tree of ``size`` (default: now)."""
        return self.log.inclusion_proof(index, size)

    def prove_consistency(self, old: int, new: int | None = None) -> list[bytes]:
        """The RFC 9162 consistency proof from the tree of ``old`` entries to that of ``new``."""
        return self.log.consistency_proof(old, new)


def add_cosignature(directory: Path, origin: str, log_verifier: Verifier, line: bytes, witness: Verifier,
                    *, cosigned: bytes | None = None) -> OpenedCheckpoint:
    """Add ``witness``'s cosignature ``line`` to the checkpoint file in ``directory``, after checking
    that it verifies against the checkpoint there now; a later line by the same key replaces an
    earlier one. Under the appends' lock, written atomically. Needs no log key (a witness, or
    whoever relays its line, can add it). ``cosigned``: the checkpoint text the witness signed;
    an append since then is refused by name (the line vouches for the old tree)."""
    path = Path(directory) / "checkpoint"
    with TileLog(directory)._locked():  # the appends' lock: one writer of `checkpoint`
        try:
            current = path.read_bytes()
        except FileNotFoundError:
            raise InputError(f"{path} does not exist: the log is empty", hint="append the first entries") from None
        if cosigned is not None and split(current)[0] != cosigned:
            raise LogError(f"{path} changed while the witness cosigned it: the log was appended to",
                           hint="ask the witness to cosign the new checkpoint")
        line_key = split(b"x\n\n" + line)[1][0] if line.endswith(b"\n") else None
        if line_key is None or (line_key.name, line_key.key_id) != (witness.name, witness.key_id):
            seen = "an unreadable line" if line_key is None else f"a line by {line_key.label}"
            raise CosignatureError(
                f"the cosignature should be by {witness.label}; it is {seen}",
                hint="pass the witness key that made the cosignature",
            )
        try:
            # The new line replaces any earlier one by the same key, so the one that verifies is it.
            candidate = ck.add_cosignature(current, line)
            opened = ck.open_checkpoint(candidate, log_verifier, [witness], 1, origin=origin)
        except CosignatureError as err:
            size = ck.Checkpoint.parse(split(current)[0]).size
            raise CosignatureError(
                f"the cosignature by {witness.label} is not one of the checkpoint at size {size}: {err.message}",
                hint="the log may have grown since the witness was asked; ask it to cosign the current checkpoint",
                bad_key=err.bad_key,
            ) from None
        fsutil.atomic_write_bytes(path, candidate)
        return opened
