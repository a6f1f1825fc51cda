"""C2SP checkpoints (c2sp.org/tlog-checkpoint) and witness cosignatures (c2sp.org/tlog-cosignature).

A checkpoint is a signed note whose text is the log's tree head:

    <origin>\\n               the log's identity, e.g. example.com/behind-the-sofa
    <tree size>\\n            ASCII decimal, no leading zeros ("0" for the empty tree)
    <base64 root hash>\\n     the RFC 6962 root, 32 bytes
    <extension line>\\n ...   optional, opaque, non-empty

The log signs it with an Ed25519 note key (type 0x01). Witnesses add cosignature/v1 lines (key
type 0x04) to the same note: ``— <witness> base64(key ID || 8-byte big-endian time || Ed25519 sig)``,
the signature being over ``cosignature/v1\\ntime <t>\\n`` followed by the checkpoint body. A client
accepts a checkpoint when the log's signature verifies and at least ``need`` of the witnesses it
trusts cosigned it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from commonforge.errors import InputError
from trust.log.note import (
    ALG_COSIGNATURE_V1,
    ALG_ED25519,
    MAX_SIGNATURES,
    NoteFormatError,
    NoteSignatureError,
    Signature,
    Signer,
    Verifier,
    b64decode,
    b64encode,
    open_note,
    sign,
    split,
)

HASH_SIZE = 32  # an RFC 6962 SHA-256 node
MAX_SIZE = 2**64 - 1  # tlog-tiles counts leaves in a uint64
_SIZE = re.compile(r"0|[1-9][0-9]*")


class CheckpointError(NoteFormatError):
    """A checkpoint body is malformed (exit 2)."""


class CosignatureError(NoteSignatureError):
    """A checkpoint lacks the log's signature or enough witness cosignatures (exit 1)."""


def _check_line(line: str, what: str) -> None:
    if not line:
        raise CheckpointError(f"the checkpoint's {what} is empty")
    bad = next((c for c in line if c < " "), None)
    if bad is not None:
        raise CheckpointError(f"the checkpoint's {what} holds control character U+{ord(bad):04X}")


@dataclass(frozen=True)
class Checkpoint:
    """A log's signed tree head: ``origin``, ``size`` leaves, ``root_hash`` (32 bytes)."""

    origin: str  # e.g. "example.com/behind-the-sofa"
    size: int
    root_hash: bytes
    extensions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "extensions", tuple(self.extensions))
        _check_line(self.origin, "origin line")
        if isinstance(self.size, bool) or not isinstance(self.size, int) or not 0 <= self.size <= MAX_SIZE:
            raise CheckpointError(f"the checkpoint's tree size {self.size!r} is not an integer in 0..2^64-1")
        if not isinstance(self.root_hash, bytes) or len(self.root_hash) != HASH_SIZE:
            raise CheckpointError(f"the checkpoint's root hash must be {HASH_SIZE} bytes")
        for ext in self.extensions:
            _check_line(ext, "extension line")

    def body(self) -> bytes:
        """The note text: origin, size, base64 root, extensions, each ending in a newline."""
        lines = [self.origin, str(self.size), b64encode(self.root_hash), *self.extensions]
        return "".join(line + "\n" for line in lines).encode()

    @classmethod
    def parse(cls, body: bytes) -> Checkpoint:
        """Parse a checkpoint body (the note text); anything not exactly canonical is refused."""
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            raise CheckpointError("the checkpoint body is not valid UTF-8") from None
        if not text.endswith("\n"):
            raise CheckpointError("the checkpoint body does not end in a newline")
        lines = text[:-1].split("\n")
        if len(lines) < 3:
            raise CheckpointError(f"the checkpoint body has {len(lines)} lines, at least 3 are needed (origin, size, root hash)")
        origin, size, root, *extensions = lines
        _check_line(origin, "origin line")
        if not _SIZE.fullmatch(size) or len(size) > len(str(MAX_SIZE)):
            raise CheckpointError(f"the checkpoint's tree size {size[:40]!r} is not a decimal in 0..2^64-1 without leading zeros")
        if int(size) > MAX_SIZE:
            raise CheckpointError(f"the checkpoint's tree size {size} is not in 0..2^64-1")
        try:
            root_hash = b64decode(root, "the checkpoint's root hash")
        except NoteFormatError as err:
            raise CheckpointError(err.message) from None
        if len(root_hash) != HASH_SIZE:
            raise CheckpointError(f"the checkpoint's root hash is {len(root_hash)} bytes, not {HASH_SIZE}")
        return cls(origin, int(size), root_hash, tuple(extensions))


parse = Checkpoint.parse


class Cosignature(NamedTuple):
    """A witness's verified cosignature: who, and the time (POSIX seconds) it claims."""

    name: str
    key_id: int
    timestamp: int


class OpenedCheckpoint(NamedTuple):
    checkpoint: Checkpoint
    cosignatures: tuple[Cosignature, ...]  # by the trusted witnesses, in note order
    unverified: tuple[Signature, ...]  # signatures by keys the caller did not name


def cosignature_timestamp(sig: Signature) -> int:
    """The POSIX time a cosignature/v1 line claims (not verified: open_checkpoint verifies)."""
    raw = b64decode(sig.b64, f"the cosignature by {sig.name}")
    if len(raw) != 4 + 8 + 64:
        raise NoteFormatError(
            f"the signature by {sig.name} is {len(raw)} bytes, not a cosignature/v1 (key ID, time, signature: 76)"
        )
    return int.from_bytes(raw[4:12], "big")


def sign_checkpoint(cp: Checkpoint, log_signer: Signer) -> bytes:
    """The checkpoint as a note signed by the log's Ed25519 key."""
    return sign(cp.body(), [log_signer])


def _require_alg(key: Signer | Verifier, alg: int, role: str) -> None:
    if key.alg != alg:
        kind = "an Ed25519 note key (type 0x01)" if alg == ALG_ED25519 else "a cosignature/v1 key (type 0x04)"
        raise InputError(f"{role} key {key.label} is not {kind}", hint="check the keys named in the governance policy")


def cosign(cp_note: bytes, witness_signer: Signer, timestamp: int, *, log_verifier: Verifier | None = None) -> bytes:
    """The witness's cosignature/v1 line for the checkpoint in ``cp_note`` (``— name base64\\n``).

    With ``log_verifier`` the log's signature is checked first. Checking consistency with what
    the witness cosigned before is the caller's duty (``commonforge log witness``).
    """
    _require_alg(witness_signer, ALG_COSIGNATURE_V1, "witness")
    if log_verifier is not None:
        _require_alg(log_verifier, ALG_ED25519, "log")
        text = open_note(cp_note, [log_verifier]).text
    else:
        text, _ = split(cp_note)
    Checkpoint.parse(text)
    raw = witness_signer.key_id.to_bytes(4, "big") + witness_signer.sign(text, timestamp=timestamp)
    return Signature(witness_signer.name, witness_signer.key_id, b64encode(raw)).line()


def add_cosignature(note: bytes, line: bytes) -> bytes:
    """``note`` with the signature ``line`` added; a line by the same key (name and ID) is replaced."""
    text, sigs = split(note)
    if not line.endswith(b"\n") or line.count(b"\n") != 1:
        raise NoteFormatError("a cosignature is one signature line ending in a newline")
    new = split(b"x\n\n" + line)[1][0]
    kept = [s for s in sigs if (s.name, s.key_id) != (new.name, new.key_id)]
    if len(kept) + 1 > MAX_SIGNATURES:
        raise NoteFormatError(f"the note already has {len(kept)} signatures; at most {MAX_SIGNATURES} are accepted")
    return text + b"\n" + b"".join(s.line() for s in kept) + new.line()


def open_checkpoint(
    note: bytes,
    log_verifier: Verifier,
    witnesses: Sequence[Verifier] = (),
    need: int = 0,
    *,
    origin: str | None = None,
) -> OpenedCheckpoint:
    """Verify a checkpoint note: the log's signature, then at least ``need`` witness cosignatures.

    Every signature by a named key must verify (one bad signature rejects the note); signatures
    by other keys are ignored and returned as ``unverified``. ``origin``, when given, must be the
    checkpoint's origin line.
    """
    _require_alg(log_verifier, ALG_ED25519, "log")
    for w in witnesses:
        _require_alg(w, ALG_COSIGNATURE_V1, "witness")
    distinct = {(w.name, w.key_id) for w in witnesses}
    if not 0 <= need <= len(distinct):
        raise InputError(
            f"{need} cosignatures required but only {len(distinct)} witnesses are trusted",
            hint="the policy's witness quorum cannot exceed its list of witnesses",
        )
    try:
        opened = open_note(note, [log_verifier, *witnesses])
    except NoteSignatureError as err:
        if err.bad_key is not None:
            raise CosignatureError(err.message, hint=err.hint, bad_key=err.bad_key, unverified=err.unverified) from None
        raise _missing_log_signature(log_verifier, err.unverified) from None
    if not any((s.name, s.key_id) == (log_verifier.name, log_verifier.key_id) for s in opened.verified):
        raise _missing_log_signature(log_verifier, opened.verified + opened.unverified)
    cp = Checkpoint.parse(opened.text)
    if origin is not None and cp.origin != origin:
        raise CosignatureError(
            f"the checkpoint is for origin {cp.origin!r}, not {origin!r}",
            hint="the log's key signed a checkpoint of another log; do not use it",
        )
    cosigs = tuple(
        Cosignature(s.name, s.key_id, cosignature_timestamp(s)) for s in opened.verified if (s.name, s.key_id) in distinct
    )
    if len(cosigs) < need:
        got = ", ".join(c.name for c in cosigs) or "none"
        missing = ", ".join(sorted(w.label for w in witnesses if (w.name, w.key_id) not in {(c.name, c.key_id) for c in cosigs}))
        raise CosignatureError(
            f"checkpoint {cp.origin} at size {cp.size} has {len(cosigs)} of the {need} required witness"
            f" cosignatures (cosigned by: {got}; missing: {missing})",
            hint="wait for the witnesses to cosign, or fetch the checkpoint from where they published it",
            unverified=opened.unverified,
        )
    return OpenedCheckpoint(cp, cosigs, opened.unverified)


def _missing_log_signature(log_verifier: Verifier, seen: Iterable[Signature]) -> CosignatureError:
    labels = ", ".join(s.label for s in seen) or "none"
    return CosignatureError(
        f"the checkpoint has no signature by the log key {log_verifier.label} (signatures seen: {labels})",
        hint="the checkpoint did not come from this log; do not use it",
    )
