"""C2SP signed notes (c2sp.org/signed-note): text signed by one or more Ed25519 keys.

A note is UTF-8 text ending in a newline, a blank line, then one signature line per key:

    <text, ending in \\n>
    \\n
    — <key name> base64(4-byte big-endian key ID || signature)\\n

The key ID is ``SHA-256(name || 0x0A || type byte || public key)[:4]``. Two key types are
implemented: ``0x01`` plain Ed25519 over the note text (logs sign checkpoints with it) and
``0x04`` the timestamped witness cosignature of c2sp.org/tlog-cosignature (the signature is
``8-byte big-endian POSIX time || Ed25519 signature`` over ``"cosignature/v1\\ntime <t>\\n" || text``;
``trust.log.checkpoint`` builds on it).

Keys travel as text, the format of Go's golang.org/x/mod/sumdb/note (which this module is tested
against byte for byte):

    verifier  <name>+<8 hex digits key ID>+base64(type byte || 32-byte public key)
    signer    PRIVATE+KEY+<name>+<8 hex digits key ID>+base64(type byte || 32-byte seed)

Opening a note verifies every signature whose (name, key ID) is known, reports the others as
unverified (the spec: clients MUST ignore unknown signatures, which is what lets witnesses add
cosignatures a client does not know), rejects the whole note if a known key's signature does not
verify, and rejects a note that no known key signed.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import NamedTuple

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from commonforge.errors import InputError
from trust.errors import SignatureError

ALG_ED25519 = 0x01  # Ed25519 over the note text (signed-note)
ALG_COSIGNATURE_V1 = 0x04  # timestamped Ed25519 witness cosignature (tlog-cosignature)
KEY_TYPES = {ALG_ED25519: "Ed25519", ALG_COSIGNATURE_V1: "Ed25519 cosignature/v1"}

# The spec says verifiers MUST accept at least 16 signatures and SHOULD cap them; Go's note
# package caps at 100, and so do we (a note with more is malformed, whoever signed it).
MAX_SIGNATURES = 100
MAX_TIMESTAMP = 2**63 - 1  # tlog-cosignature: the timestamp MUST NOT exceed 2^63 - 1

SIG_PREFIX = "— "  # U+2014 EM DASH, then a space
_HEX8 = re.compile(r"[0-9a-fA-F]{8}")
_B64 = re.compile(r"(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?")
# The Unicode spaces the spec forbids in key names (Go: unicode.IsSpace).
_SPACES = frozenset("\t\n\v\f\r \x85\xa0\u1680\u2028\u2029\u202f\u205f\u3000") | frozenset(map(chr, range(0x2000, 0x200B)))


class NoteFormatError(InputError):
    """A note, a key or a checkpoint is malformed (bad input: exit 2)."""

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message, hint=hint or "the text is not in the C2SP signed-note format; fetch it again")


class NoteSignatureError(SignatureError):
    """A note's signatures do not verify: a known key's signature is bad, or no known key signed (exit 1).

    ``bad_key`` names (``name+hash``) the known key whose signature failed, None when none did;
    ``unverified`` lists the signatures by keys the verifier did not know (what *was* seen).
    """

    def __init__(
        self,
        message: str,
        *,
        hint: str | None = None,
        bad_key: str | None = None,
        unverified: tuple[Signature, ...] = (),
    ) -> None:
        super().__init__(message, hint=hint)
        self.bad_key = bad_key
        self.unverified = unverified


def is_valid_name(name: str) -> bool:
    """A key name is non-empty and holds no Unicode space, no ``+`` and no control character."""
    return bool(name) and "+" not in name and not any(c in _SPACES or c < " " for c in name)


def key_id(name: str, alg: int, public_key: bytes) -> int:
    """``SHA-256(name || 0x0A || alg || public key)[:4]`` as a big-endian uint32."""
    digest = hashlib.sha256(name.encode() + b"\n" + bytes([alg]) + public_key).digest()
    return int.from_bytes(digest[:4], "big")


def b64decode(text: str, what: str) -> bytes:
    """Strict standard base64 (RFC 4648 §4): the alphabet, correct padding, canonical trailing bits."""
    if not _B64.fullmatch(text):
        raise NoteFormatError(f"{what} is not standard base64: {text[:60]!r}")
    try:
        raw = base64.b64decode(text, validate=True)
    except binascii.Error as err:  # pragma: no cover - the pattern already rules these out
        raise NoteFormatError(f"{what} is not standard base64: {err}") from None
    if base64.b64encode(raw).decode() != text:
        raise NoteFormatError(f"{what} is not canonical base64 (non-zero padding bits): {text[:60]!r}")
    return raw


def b64encode(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def _raw_public(public_key: ed25519.Ed25519PublicKey) -> bytes:
    return public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def cosignature_message(text: bytes, timestamp: int) -> bytes:
    """What a cosignature/v1 signs: ``cosignature/v1\\ntime <t>\\n`` then the checkpoint body."""
    return b"cosignature/v1\ntime " + str(timestamp).encode() + b"\n" + text


@dataclass(frozen=True)
class Verifier:
    """A public key that checks signatures by (name, key_id)."""

    name: str
    key_id: int
    alg: int
    public_key: ed25519.Ed25519PublicKey = field(repr=False, compare=False)
    raw_key: bytes = field(repr=False)  # the 32-byte public key

    @classmethod
    def from_public_key(cls, name: str, public_key: ed25519.Ed25519PublicKey | bytes, alg: int = ALG_ED25519) -> Verifier:
        if not is_valid_name(name):
            raise NoteFormatError(f"invalid key name {name!r}: it must be non-empty, without spaces or '+'")
        if alg not in KEY_TYPES:
            raise NoteFormatError(f"unknown key type 0x{alg:02x}: known are 0x01 (Ed25519) and 0x04 (cosignature/v1)")
        raw = public_key if isinstance(public_key, bytes) else _raw_public(public_key)
        if len(raw) != 32:
            raise NoteFormatError(f"an Ed25519 public key is 32 bytes, not {len(raw)}")
        return cls(name, key_id(name, alg, raw), alg, ed25519.Ed25519PublicKey.from_public_bytes(raw), raw)

    @property
    def label(self) -> str:
        """``name+hash``, how errors name a key."""
        return f"{self.name}+{self.key_id:08x}"

    def as_cosigner(self) -> Verifier:
        """The same public key as a cosignature/v1 (0x04) verifier: witnesses that publish an
        Ed25519 note key (0x01) cosign with it, as transparency-dev's witness does."""
        return Verifier.from_public_key(self.name, self.raw_key, ALG_COSIGNATURE_V1)

    def text(self) -> str:
        """The verifier key text ``name+hash+base64(alg || key)``."""
        return f"{self.label}+{b64encode(bytes([self.alg]) + self.raw_key)}"

    def verify(self, text: bytes, sig: bytes) -> bool:
        """Whether ``sig`` (the bytes after the key ID) is this key's signature of the note text."""
        if self.alg == ALG_COSIGNATURE_V1:
            if len(sig) != 8 + 64:
                return False
            timestamp = int.from_bytes(sig[:8], "big")
            if timestamp > MAX_TIMESTAMP:
                return False
            message, sig = cosignature_message(text, timestamp), sig[8:]
        else:
            if len(sig) != 64:
                return False
            message = text
        try:
            self.public_key.verify(sig, message)
        except InvalidSignature:
            return False
        return True


@dataclass(frozen=True)
class Signer:
    """A private key that signs notes (type 0x01) or cosigns checkpoints (type 0x04)."""

    name: str
    key_id: int
    alg: int
    private_key: ed25519.Ed25519PrivateKey = field(repr=False, compare=False)
    seed: bytes = field(repr=False)

    @classmethod
    def from_seed(cls, name: str, seed: bytes, alg: int = ALG_ED25519) -> Signer:
        if len(seed) != 32:
            raise NoteFormatError(f"an Ed25519 seed is 32 bytes, not {len(seed)}")
        private_key = ed25519.Ed25519PrivateKey.from_private_bytes(seed)
        verifier = Verifier.from_public_key(name, private_key.public_key(), alg)
        return cls(name, verifier.key_id, alg, private_key, seed)

    @property
    def label(self) -> str:
        return f"{self.name}+{self.key_id:08x}"

    def as_cosigner(self) -> Signer:
        """The same private key as a cosignature/v1 (0x04) signer (see Verifier.as_cosigner)."""
        return Signer.from_seed(self.name, self.seed, ALG_COSIGNATURE_V1)

    def text(self) -> str:
        """The signer key text ``PRIVATE+KEY+name+hash+base64(alg || seed)`` (a secret)."""
        return f"PRIVATE+KEY+{self.label}+{b64encode(bytes([self.alg]) + self.seed)}"

    def verifier(self) -> Verifier:
        return Verifier.from_public_key(self.name, self.private_key.public_key(), self.alg)

    def sign(self, text: bytes, *, timestamp: int | None = None) -> bytes:
        """The signature bytes that follow the key ID: 64 bytes (0x01), or time || 64 bytes (0x04)."""
        if self.alg == ALG_COSIGNATURE_V1:
            if timestamp is None or not 0 <= timestamp <= MAX_TIMESTAMP:
                raise InputError(
                    f"a cosignature needs a timestamp in 0..2^63-1, not {timestamp!r}",
                    hint="pass the POSIX time of signing",
                )
            return timestamp.to_bytes(8, "big") + self.private_key.sign(cosignature_message(text, timestamp))
        if timestamp is not None:
            raise InputError("an Ed25519 note signature carries no timestamp", hint="use a cosignature (type 0x04) key")
        return self.private_key.sign(text)


KEY_HINT = "a verifier key reads name+hash+base64 and a signer key PRIVATE+KEY+name+hash+base64; copy it again"


def _split_key(text: str, parts: int, what: str) -> list[str]:
    fields = text.split("+", parts - 1)
    if len(fields) != parts or any(f == "" for f in fields):
        raise NoteFormatError(f"malformed {what} key: expected {parts} '+'-separated fields", hint=KEY_HINT)
    return fields


def _check_key_fields(name: str, hash16: str, key64: str, what: str) -> tuple[int, int, bytes]:
    if not is_valid_name(name):
        raise NoteFormatError(f"malformed {what} key: invalid key name {name!r}", hint=KEY_HINT)
    if not _HEX8.fullmatch(hash16):
        raise NoteFormatError(f"malformed {what} key: key ID {hash16!r} is not 8 hex digits", hint=KEY_HINT)
    raw = b64decode(key64, f"the {what} key material")
    if len(raw) != 33:
        raise NoteFormatError(f"malformed {what} key: key material is {len(raw)} bytes, expected 1 + 32", hint=KEY_HINT)
    if raw[0] not in KEY_TYPES:
        raise NoteFormatError(f"{what} key {name}: unknown key type 0x{raw[0]:02x}", hint=KEY_HINT)
    return int(hash16, 16), raw[0], raw[1:]


def parse_verifier(text: str) -> Verifier:
    """Parse ``name+hash+base64(alg || pubkey)``; the hash must be the key's."""
    name, hash16, key64 = _split_key(text, 3, "verifier")
    claimed, alg, raw = _check_key_fields(name, hash16, key64, "verifier")
    try:
        verifier = Verifier.from_public_key(name, raw, alg)
    except ValueError as err:
        raise NoteFormatError(f"verifier key {name}: not an Ed25519 public key ({err})", hint=KEY_HINT) from None
    if verifier.key_id != claimed:
        raise NoteFormatError(f"verifier key {name}: key ID {hash16} is not the key's ({verifier.key_id:08x})", hint=KEY_HINT)
    return verifier


def parse_signer(text: str) -> Signer:
    """Parse ``PRIVATE+KEY+name+hash+base64(alg || seed)``; the hash must be the derived public key's."""
    private, key, name, hash16, key64 = _split_key(text, 5, "signer")
    if (private, key) != ("PRIVATE", "KEY"):
        raise NoteFormatError("malformed signer key: it must start with PRIVATE+KEY+", hint=KEY_HINT)
    claimed, alg, seed = _check_key_fields(name, hash16, key64, "signer")
    signer = Signer.from_seed(name, seed, alg)
    if signer.key_id != claimed:
        raise NoteFormatError(f"signer key {name}: key ID {hash16} is not the key's ({signer.key_id:08x})", hint=KEY_HINT)
    return signer


def generate_key(name: str, alg: int = ALG_ED25519) -> tuple[str, str]:
    """A fresh key pair as texts: ``(signer_text, verifier_text)``."""
    seed = ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    signer = Signer.from_seed(name, seed, alg)
    return signer.text(), signer.verifier().text()


class Signature(NamedTuple):
    """One signature line: the key's name and ID and the base64 of ``key ID || signature``."""

    name: str
    key_id: int
    b64: str

    @property
    def label(self) -> str:
        return f"{self.name}+{self.key_id:08x}"

    @property
    def sig(self) -> bytes:
        """The signature bytes after the key ID."""
        return base64.b64decode(self.b64)[4:]

    def line(self) -> bytes:
        return f"{SIG_PREFIX}{self.name} {self.b64}\n".encode()


class OpenedNote(NamedTuple):
    """A note whose signatures were checked: ``verified`` by known keys, ``unverified`` by unknown ones."""

    text: bytes
    verified: tuple[Signature, ...]
    unverified: tuple[Signature, ...]


def _check_chars(data: bytes, what: str) -> str:
    try:
        decoded = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise NoteFormatError(f"{what} is not valid UTF-8 (byte {err.start})") from None
    for i, c in enumerate(decoded):
        if c < " " and c != "\n":
            raise NoteFormatError(f"{what} holds control character U+{ord(c):04X} at character {i}")
    return decoded


def parse_signature_line(line: str) -> Signature:
    """Parse one ``— name base64`` line (without its newline)."""
    if not line.startswith(SIG_PREFIX):
        raise NoteFormatError(f"signature line does not start with an em dash and a space: {line[:60]!r}")
    name, _, b64 = line[len(SIG_PREFIX) :].partition(" ")
    if not is_valid_name(name):
        raise NoteFormatError(f"signature line has an invalid key name {name!r}")
    raw = b64decode(b64, f"the signature by {name}")
    if len(raw) < 5:
        raise NoteFormatError(f"the signature by {name} is {len(raw)} bytes: too short for a key ID and a signature")
    return Signature(name, int.from_bytes(raw[:4], "big"), b64)


def split(note: bytes) -> tuple[bytes, list[Signature]]:
    """Parse a note's structure without verifying: its text and its signature lines, in order."""
    _check_chars(note, "the note")
    cut = note.rfind(b"\n\n")
    if cut < 0:
        raise NoteFormatError("the note has no blank line before its signatures")
    text, block = note[: cut + 1], note[cut + 2 :]
    if not block:
        raise NoteFormatError("the note has no signature lines")
    if not block.endswith(b"\n"):
        raise NoteFormatError("the note's last signature line does not end in a newline")
    lines = block[:-1].decode().split("\n")
    if len(lines) > MAX_SIGNATURES:
        raise NoteFormatError(f"the note has {len(lines)} signatures, more than the {MAX_SIGNATURES} accepted")
    return text, [parse_signature_line(line) for line in lines]


def _index(known: Iterable[Verifier]) -> dict[tuple[str, int], Verifier]:
    index: dict[tuple[str, int], Verifier] = {}
    for v in known:
        other = index.setdefault((v.name, v.key_id), v)
        if other.raw_key != v.raw_key or other.alg != v.alg:
            raise InputError(
                f"ambiguous key {v.label}: two different known keys share its name and key ID",
                hint="the list of trusted keys is corrupt; compare it with the governance policy",
            )
    return index


def open_note(note: bytes, known: Iterable[Verifier]) -> OpenedNote:
    """Parse ``note`` and verify its signatures by the ``known`` keys.

    Raises NoteFormatError for a malformed note, NoteSignatureError when a known key's signature
    does not verify or when no known key signed. Repeated lines by the same key count once.
    """
    index = _index(known)
    text, sigs = split(note)
    verified: list[Signature] = []
    unverified: list[Signature] = []
    seen: set[tuple[str, int]] = set()
    for sig in sigs:
        verifier = index.get((sig.name, sig.key_id))
        if verifier is None:
            if sig not in unverified:
                unverified.append(sig)
            continue
        if (sig.name, sig.key_id) in seen:
            continue
        seen.add((sig.name, sig.key_id))
        if not verifier.verify(text, sig.sig):
            raise NoteSignatureError(
                f"invalid signature for key {sig.label}: the note was altered or the signature forged",
                hint="do not use this note; fetch it again from another source",
                bad_key=sig.label,
                unverified=tuple(unverified),
            )
        verified.append(sig)
    if not verified:
        seen_names = ", ".join(s.label for s in unverified) or "none"
        raise NoteSignatureError(
            f"the note has no signature by a known key (signatures seen: {seen_names})",
            hint="check that the trusted keys are the ones that sign this note",
            unverified=tuple(unverified),
        )
    return OpenedNote(text, tuple(verified), tuple(unverified))


verify = open_note


def sign(text: bytes, signers: Iterable[Signer]) -> bytes:
    """The note: ``text`` (ending in a newline), a blank line, one Ed25519 signature line per signer."""
    _check_chars(text, "the note text")
    if not text.endswith(b"\n"):
        raise NoteFormatError("the note text must end in a newline")
    lines = []
    for signer in signers:
        if signer.alg != ALG_ED25519:
            raise InputError(
                f"key {signer.label} is a cosignature key; it signs checkpoints with trust.log.checkpoint.cosign",
                hint="sign notes with an Ed25519 (type 0x01) key",
            )
        raw = signer.key_id.to_bytes(4, "big") + signer.sign(text)
        lines.append(Signature(signer.name, signer.key_id, b64encode(raw)).line())
    if not lines:
        raise InputError("a note needs at least one signer", hint="pass the log's signer key")
    return text + b"\n" + b"".join(lines)
