"""Signed statements: in-toto Statement v1 payloads in DSSE envelopes, one signature each.

    {"payloadType": "application/vnd.in-toto+json",
     "payload": base64(canonical JSON of the Statement),
     "signatures": [{"keyid": <sha256 of the signer's DER SubjectPublicKeyInfo>, "sig": base64}]}

    Statement: {"_type": "https://in-toto.io/Statement/v1",
                "subject": [{"name": "model/forge-small@1.0.0", "digest": {"sha256": <release digest>}}],
                "predicateType": "urn:commonforge:predicate:<kind>:v1",
                "predicate": {...}}

The subject always names the release digest as well as its ref, so a statement about one build
can never be read as one about another build, version or model. Policy statements name the
policy file instead: ``policy/<N>`` and the canonical digest of that policy version.

Signing and verifying go through securesystemslib (its DSSE ``Envelope``: the pre-auth encoding,
the signature check); parsing is ours and strict, because every statement file is untrusted
input: whatever its bytes, :func:`parse_envelope` either returns a well-formed envelope or raises
:class:`~trust.errors.StatementError`, never anything else (a hypothesis test fuzzes it).

Files: ``registry/entries/models/<name>/<version>.statements/<kind>-<keyid>.json`` for statements
about a release, ``registry/governance/<dir>/<N>.statements/policy-<keyid>.json`` for policy
signatures. One statement per kind and key: signing again replaces the signer's own statement.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError
from securesystemslib.dsse import Envelope
from securesystemslib.exceptions import UnverifiedSignatureError, VerificationError
from securesystemslib.signer import Signature, Signer, SSlibKey

from registry.digest import canonical_json, sha256_bytes
from registry.fsutil import atomic_write_bytes
from registry.refs import Ref
from registry.schema import Prose, RelPath, Sha256, Text, Timestamp
from trust.errors import SignatureError, StatementError
from trust.keys import KeyId, Label, PublicKeyPem

PAYLOAD_TYPE = "application/vnd.in-toto+json"
STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
KINDS = ("build", "approval", "rebuild", "revocation", "publication", "policy", "sharing")
Kind = Literal["build", "approval", "rebuild", "revocation", "publication", "policy", "sharing"]
# A statement is a few hundred bytes; anything this big is hostile. The bound is what one entry of
# the transparency log can hold (a bundle's uint16 length prefix), so every statement that parses
# can be logged: a bigger one would stop every append, revocations included.
MAX_STATEMENT_BYTES = 0xFFFF
# A statement dated further ahead than this is refused: until the transparency log supplies
# trusted times, a signer's clock is all there is, and a date in the future is no clock's.
CLOCK_SKEW = timedelta(minutes=10)


def predicate_type(kind: str) -> str:
    return f"urn:commonforge:predicate:{kind}:v1"


class Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)


class Predicate(Strict):
    signed_at: Timestamp  # the signer's own clock (see docs/trust.md, "Time")


class BuildPredicate(Predicate):
    """Signed by whoever ran ``commonforge release``: ties the release to a builder's key."""

    # The builder need not be a maintainer: the statement carries its public key, which must be
    # the key its keyid names (checked by trust.status before it believes the statement).
    builder: Label
    public_key: PublicKeyPem
    source_commit: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{40}$")] | None = None
    machine: dict[str, str] = {}


Reviewed = Literal["data", "recipe", "evaluations", "card"]


class ApprovalPredicate(Predicate):
    """I reviewed the release's data, recipe, evaluations and card, and vouch for it."""

    reviewed: list[Reviewed] = Field(["data", "recipe", "evaluations", "card"], min_length=1)
    comment: str | None = Field(None, max_length=4000)


class RebuildPredicate(Predicate):
    """A rebuild from the release's source commit (``commonforge reproduce``), signed by the rebuilder."""

    result: Literal["identical", "different"]
    rebuilt_digest: Sha256
    first_differing_stage: str | None = None
    environment_differences: list[str] = []
    machine: dict[str, str] = {}


class RevocationPredicate(Predicate):
    reason: Prose
    severity: Literal["low", "medium", "high", "critical"]


class PublicationPredicate(Predicate):
    """The act of publishing: names the policy version it was checked against and what counted."""

    policy_version: int = Field(ge=1)
    policy_digest: Sha256
    counted: list[Sha256] = Field(min_length=1)  # digests of the statement files that satisfied the policy


class PolicyPredicate(Predicate):
    """I accept policy version ``version`` (the subject's digest) as the forge's governance."""

    version: int = Field(ge=1)


class SharedFile(Strict):
    """One file of a shared release: where it sits in the torrent and its plain sha256 (not the v2 pieces root)."""

    path: RelPath
    sha256: Sha256
    size: int = Field(ge=0)


# A magnet for a v2 torrent is the info-hash, the name and a few peers: far below this.
MAX_MAGNET_CHARS = 4096


class SharingPredicate(Predicate):
    """I made this BitTorrent v2 torrent of the release's files (``sharing.torrent``): fetch it by this info-hash.

    The torrent is transport: a downloader still checks every file's sha256 against the release.
    """

    info_hash_v2: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
    magnet: Annotated[str, StringConstraints(min_length=1, max_length=MAX_MAGNET_CHARS, pattern=r"^magnet:\?")]
    files: list[SharedFile] = Field(min_length=1, max_length=10_000)


PREDICATES: dict[str, type[Predicate]] = {
    "build": BuildPredicate,
    "approval": ApprovalPredicate,
    "rebuild": RebuildPredicate,
    "revocation": RevocationPredicate,
    "publication": PublicationPredicate,
    "policy": PolicyPredicate,
    "sharing": SharingPredicate,
}
PREDICATE_KINDS = {predicate_type(k): k for k in PREDICATES}


class Subject(Strict):
    name: Text
    digest: dict[Literal["sha256"], Sha256] = Field(min_length=1)


class StatementDoc(Strict):
    type_: Literal["https://in-toto.io/Statement/v1"] = Field(alias="_type")
    subject: list[Subject] = Field(min_length=1, max_length=1)
    predicateType: str  # noqa: N815 - the in-toto field name
    predicate: dict[str, Any]


class SignatureDoc(Strict):
    keyid: KeyId
    sig: Annotated[str, StringConstraints(min_length=1, max_length=1024)]


class EnvelopeDoc(Strict):
    payload: Annotated[str, StringConstraints(min_length=1)]
    payloadType: Literal["application/vnd.in-toto+json"]  # noqa: N815 - the DSSE field name
    signatures: list[SignatureDoc] = Field(min_length=1, max_length=1)


@dataclass(frozen=True)
class Statement:
    """A statement whose envelope parsed (its signature is not checked yet: see :meth:`verify`)."""

    kind: str
    subject_name: str
    subject_digest: str
    predicate: Predicate
    keyid: str  # who claims to have signed it
    envelope: Envelope
    digest: str  # sha256 of the file's bytes: how a publication names what it counted
    source: str  # the file, for messages
    data: bytes = field(default=b"", repr=False, compare=False)  # the file's bytes (what the log holds)

    @property
    def signed_at(self) -> datetime:
        return parse_time(self.predicate.signed_at)

    def verify(self, key: SSlibKey) -> None:
        """Raise :class:`SignatureError` unless ``key`` (the keyid's key) signed this envelope."""
        if key.keyid != self.keyid:
            raise SignatureError(f"{self.source}: signed by {self.keyid}, not by {key.keyid}")
        try:
            self.envelope.verify([key], 1)
        except (UnverifiedSignatureError, VerificationError, ValueError) as err:
            raise SignatureError(
                f"{self.source}: the signature by {self.keyid} does not verify ({type(err).__name__})",
                hint="the statement was altered or forged; delete it and ask its signer to sign again",
            ) from None


def parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC)


def _b64(value: str, what: str, source: str) -> bytes:
    try:
        return base64.b64decode(value.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise StatementError(f"{source}: {what} is not base64", hint="the file is damaged; restore it") from None


def _first_error(err: ValidationError) -> str:
    e = err.errors()[0]
    return f"{'.'.join(str(p) for p in e['loc']) or 'document'}: {e['msg']}"


def _json(data: bytes, message: str, hint: str) -> Any:
    try:
        return json.loads(data.decode("utf-8"))
    # ValueError: bad JSON, and also numbers past Python's digit limit; RecursionError: deep nesting
    except (UnicodeDecodeError, ValueError, RecursionError) as err:
        raise StatementError(f"{message} ({type(err).__name__})", hint=hint) from None


def parse_envelope(data: bytes, source: str = "statement") -> Statement:
    """Parse untrusted bytes into a :class:`Statement`; any defect is a :class:`StatementError`."""
    hint = "the file is not a commonforge statement (a DSSE envelope of an in-toto Statement); delete or restore it"
    if len(data) > MAX_STATEMENT_BYTES:
        raise StatementError(f"{source}: {len(data)} bytes is too large for a statement", hint=hint)
    try:
        doc = EnvelopeDoc.model_validate(_json(data, f"{source}: not JSON", hint))
    except ValidationError as err:
        raise StatementError(f"{source}: not a DSSE envelope ({_first_error(err)})", hint=hint) from None
    payload = _b64(doc.payload, "the payload", source)
    sig = _b64(doc.signatures[0].sig, "the signature", source)
    try:
        statement = StatementDoc.model_validate(_json(payload, f"{source}: the payload is not JSON", hint))
    except ValidationError as err:
        raise StatementError(f"{source}: the payload is not an in-toto Statement v1 ({_first_error(err)})",
                             hint=hint) from None
    kind = PREDICATE_KINDS.get(statement.predicateType)
    if kind is None:
        raise StatementError(f"{source}: unknown predicate type {statement.predicateType!r}",
                             hint="kinds: " + ", ".join(predicate_type(k) for k in PREDICATES))
    try:
        predicate = PREDICATES[kind].model_validate(statement.predicate)
        parse_time(predicate.signed_at)
    except ValidationError as err:
        raise StatementError(f"{source}: bad {kind} predicate ({_first_error(err)})", hint=hint) from None
    except ValueError as err:  # a Timestamp-shaped string that is no date (month 13)
        raise StatementError(f"{source}: bad signed_at ({err})", hint=hint) from None
    keyid = doc.signatures[0].keyid
    envelope = Envelope(payload, doc.payloadType, {keyid: Signature(keyid, sig.hex())})
    subject = statement.subject[0]
    return Statement(kind, subject.name, subject.digest["sha256"], predicate, keyid, envelope,
                     sha256_bytes(data), source, data)


def sign(signer: Signer, kind: str, subject_name: str, subject_digest: str, predicate: Predicate) -> bytes:
    """The bytes of a statement file: ``predicate`` about the subject, signed by ``signer``."""
    if not isinstance(predicate, PREDICATES[kind]):
        raise TypeError(f"a {kind} statement takes a {PREDICATES[kind].__name__}")
    statement = {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": subject_name, "digest": {"sha256": subject_digest}}],
        "predicateType": predicate_type(kind),
        "predicate": predicate.model_dump(mode="json", exclude_none=True),
    }
    envelope = Envelope(canonical_json(statement), PAYLOAD_TYPE, {})
    envelope.sign(signer)
    return json.dumps(envelope.to_dict(), indent=2, sort_keys=True).encode("utf-8") + b"\n"


# --- statements beside a release ----------------------------------------------------------


def release_subject(ref: Ref) -> str:
    return f"model/{ref.name}@{ref.version}"


def statements_dir(root: Path, ref: Ref) -> Path:
    return Path(root) / "registry" / "entries" / "models" / ref.name / f"{ref.version}.statements"


def statement_path(directory: Path, kind: str, keyid: str) -> Path:
    return directory / f"{kind}-{keyid}.json"


def write(directory: Path, kind: str, keyid: str, data: bytes) -> Path:
    """Store a signed statement (atomically) as ``<kind>-<keyid>.json`` in ``directory``."""
    path = statement_path(directory, kind, keyid)
    atomic_write_bytes(path, data)
    return path


@dataclass(frozen=True)
class Rejected:
    """A statement file that does not count, and why (shown by ``commonforge status``)."""

    source: str
    reason: str


def read_all(directory: Path) -> tuple[list[Statement], list[Rejected]]:
    """Every statement file in ``directory`` parsed; the malformed ones rejected with their reason.

    A file must be named after what it holds (``<kind>-<keyid>.json``): a statement copied under
    another signer's name is rejected, so one key can never fill two slots.
    """
    parsed: list[Statement] = []
    rejected: list[Rejected] = []
    for path in sorted(Path(directory).glob("*.json")) if Path(directory).is_dir() else ():
        source = f"{path.parent.name}/{path.name}"
        try:
            if path.is_symlink():
                raise StatementError(f"{source} is a symlink", hint="statements are plain files")
            st = parse_envelope(path.read_bytes(), source)
        except StatementError as err:
            rejected.append(Rejected(source, err.message))
            continue
        except OSError as err:
            rejected.append(Rejected(source, f"unreadable: {err.strerror}"))
            continue
        if path.name != statement_path(path.parent, st.kind, st.keyid).name:
            rejected.append(Rejected(source, f"holds a {st.kind} statement by {st.keyid}: its name must be "
                                             f"{st.kind}-{st.keyid}.json"))
            continue
        parsed.append(st)
    return parsed, rejected
