"""Maintainers' signing keys: generated or imported, kept 0600 outside every repository.

A key lives in the user's key directory (the CLI passes it: ``$XDG_CONFIG_HOME/commonforge/keys``
by default) as two files named by its keyid:

    <keyid>.pem    the private key, PKCS#8 PEM, optionally encrypted with a passphrase (0600)
    <keyid>.json   who it belongs to: name, affiliation, key type, the public key (0600)

Types: ECDSA P-256 (the default: the key type OpenSSF Model Signing's key method accepts, so the
same key can later sign a model directory too) and Ed25519. The **keyid** is the sha256 of the
public key's DER SubjectPublicKeyInfo encoding, in hex: the same bytes for every tool that
reads the key, whatever the file format it came in.

The directory is refused when it lies inside a git work tree: a private key must never be one
``git add`` away from being published.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Annotated, Literal

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.serialization import (
    BestAvailableEncryption,
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
    load_pem_private_key,
    load_pem_public_key,
    load_ssh_private_key,
)
from pydantic import BaseModel, ConfigDict, StringConstraints, ValidationError
from securesystemslib.signer import CryptoSigner, SSlibKey

from commonforge.errors import InputError, NotFoundError
from registry.digest import SHA256_RE
from registry.fsutil import temporary_file
from registry.schema import Timestamp, utc_now

KeyType = Literal["ecdsa", "ed25519"]
KEY_TYPES: tuple[KeyType, ...] = ("ecdsa", "ed25519")
KeyId = Annotated[str, StringConstraints(pattern=SHA256_RE)]
# A person's or an organisation's name: one line, something in it.
Label = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=r"^[^\n\r\t]*\S[^\n\r\t]*$")]
_PEM_RE = r"^-----BEGIN PUBLIC KEY-----\n[A-Za-z0-9+/=\n]+-----END PUBLIC KEY-----\n?$"
PublicKeyPem = Annotated[str, StringConstraints(pattern=_PEM_RE)]

PRIVATE_MODE = 0o600
DIR_MODE = 0o700


def keys_dir(config_home: Path) -> Path:
    """Where keys live under a user's configuration directory (``$XDG_CONFIG_HOME`` or ``~/.config``).

    ``commonforge.settings.keys_dir`` spells the layout, so the CLI's default and this never drift apart.
    """
    from commonforge import settings

    return settings.keys_dir(config_home)


class PublicKey(BaseModel):
    """A maintainer's public key as the policy and ``keys export`` hold it."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    keyid: KeyId
    name: Label
    affiliation: Label
    public_key: PublicKeyPem

    def sslib_key(self) -> SSlibKey:
        """The key securesystemslib verifies with; refuses a keyid that is not this key's."""
        key = sslib_key(self.public_key)
        if key.keyid != self.keyid:
            raise InputError(
                f"key {self.keyid} of {self.name} ({self.affiliation}) holds the public key of {key.keyid}",
                hint="a keyid is the sha256 of the key's DER SubjectPublicKeyInfo: export the key again",
            )
        return key


class KeyInfo(PublicKey):
    """The ``<keyid>.json`` beside a private key."""

    keytype: KeyType
    created_at: Timestamp
    encrypted: bool

    def public(self) -> PublicKey:
        return PublicKey(keyid=self.keyid, name=self.name, affiliation=self.affiliation, public_key=self.public_key)


def keyid_of(public_key: ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey) -> str:
    """sha256 (hex) of the key's DER SubjectPublicKeyInfo."""
    return hashlib.sha256(public_key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)).hexdigest()


def _check_type(public_key: object) -> KeyType:
    if isinstance(public_key, ed25519.Ed25519PublicKey):
        return "ed25519"
    if isinstance(public_key, ec.EllipticCurvePublicKey) and isinstance(public_key.curve, ec.SECP256R1):
        return "ecdsa"
    raise InputError(
        f"unsupported key type {type(public_key).__name__}"
        + (f" on curve {public_key.curve.name}" if isinstance(public_key, ec.EllipticCurvePublicKey) else ""),
        hint="the forge signs with ECDSA P-256 or Ed25519 keys",
    )


def sslib_key(pem: str) -> SSlibKey:
    """A securesystemslib key for a PEM public key, with the forge's keyid."""
    try:
        public_key = load_pem_public_key(pem.encode("ascii"))
    except (ValueError, TypeError, UnicodeEncodeError) as err:
        raise InputError(f"not a PEM public key: {err}", hint="paste the output of `commonforge keys export`") from None
    _check_type(public_key)
    return SSlibKey.from_crypto(public_key, keyid=keyid_of(public_key))  # type: ignore[arg-type]


def check_outside_git(directory: Path) -> Path:
    """``directory`` resolved, refused when it (or a parent) is a git work tree."""
    directory = Path(directory).expanduser().resolve()
    for parent in (directory, *directory.parents):
        if (parent / ".git").exists():
            raise InputError(
                f"refusing to keep private keys in {directory}: it is inside the git work tree {parent}",
                hint="keys belong in your configuration directory, never in a repository; "
                "pass --keys-dir with a folder outside every git checkout",
            )
    return directory


def read_passphrase(path: Path | None) -> bytes | None:
    """The passphrase in ``path`` (its first line), or None for no file."""
    if path is None:
        return None
    try:
        text = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as err:
        raise InputError(f"cannot read the passphrase file {path}: {err.strerror}") from None
    if not text or not text[0]:
        raise InputError(f"the passphrase file {path} is empty", hint="write the passphrase on its first line")
    return text[0].encode("utf-8")


def _write_private(directory: Path, name: str, data: bytes) -> Path:
    target = directory / name
    with temporary_file(directory, prefix=f".tmp-{name}.") as staged:
        staged.file.write(data)
        staged.move_into_place(target, mode=PRIVATE_MODE)
    return target


def _store(directory: Path, private_key, name: str, affiliation: str, passphrase: bytes | None) -> KeyInfo:
    directory = check_outside_git(directory)
    public_key = private_key.public_key()
    keytype = _check_type(public_key)
    keyid = keyid_of(public_key)
    pem = public_key.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo).decode("ascii")
    try:
        info = KeyInfo(keyid=keyid, name=name, affiliation=affiliation, public_key=pem, keytype=keytype,
                       created_at=utc_now(), encrypted=passphrase is not None)
    except ValidationError as err:
        raise InputError(f"bad key owner: {err.errors()[0]['loc'][0]}: {err.errors()[0]['msg']}",
                         hint="name and affiliation are one line of text each") from None
    if (directory / f"{keyid}.pem").exists():
        raise InputError(f"key {keyid} is already in {directory}", hint="`commonforge keys list` shows it")
    directory.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
    os.chmod(directory, DIR_MODE)
    encryption = BestAvailableEncryption(passphrase) if passphrase else NoEncryption()
    _write_private(directory, f"{keyid}.pem", private_key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, encryption))
    _write_private(directory, f"{keyid}.json", info.model_dump_json(indent=2).encode("utf-8") + b"\n")
    return info


def generate(directory: Path, name: str, affiliation: str, keytype: KeyType = "ecdsa",
             passphrase: bytes | None = None) -> KeyInfo:
    """Generate a key of ``keytype`` for ``name`` of ``affiliation`` and keep it in ``directory``."""
    if keytype not in KEY_TYPES:
        raise InputError(f"unknown key type {keytype!r}", hint="choose ecdsa (P-256, the default) or ed25519")
    private_key = ed25519.Ed25519PrivateKey.generate() if keytype == "ed25519" else ec.generate_private_key(ec.SECP256R1())
    return _store(directory, private_key, name, affiliation, passphrase)


def import_openssh(directory: Path, path: Path, name: str, affiliation: str, passphrase: bytes | None = None) -> KeyInfo:
    """Import an OpenSSH private key (ECDSA P-256 or Ed25519); ``passphrase`` protects the copy (and opens
    a protected key, where the bcrypt package is installed)."""
    try:
        data = Path(path).read_bytes()
    except OSError as err:
        raise InputError(f"cannot read {path}: {err.strerror}") from None
    try:
        try:
            private_key = load_ssh_private_key(data, None)
        except TypeError:  # passphrase-protected: open it with the passphrase
            private_key = load_ssh_private_key(data, passphrase)
    except UnsupportedAlgorithm as err:  # an encrypted OpenSSH key needs bcrypt's KDF, or an odd key type
        raise InputError(f"{path}: {err}", hint="for a passphrase-protected OpenSSH key, import a decrypted copy "
                         "(`ssh-keygen -p -N '' -f COPY`) with --passphrase-file to protect the imported key") from None
    except (ValueError, TypeError) as err:
        hint = ("pass --passphrase-file if the key is encrypted" if passphrase is None
                else "check the passphrase; the file must be an OpenSSH private key (BEGIN OPENSSH PRIVATE KEY)")
        raise InputError(f"{path} is not a usable OpenSSH private key: {err}", hint=hint) from None
    return _store(directory, private_key, name, affiliation, passphrase)


def list_keys(directory: Path) -> list[KeyInfo]:
    """Every key in ``directory``, by name then keyid."""
    directory = Path(directory)
    found = []
    for meta in sorted(directory.glob("*.json")) if directory.is_dir() else ():
        try:
            info = KeyInfo.model_validate(json.loads(meta.read_text(encoding="utf-8")))
        except (ValueError, ValidationError) as err:
            raise InputError(f"{meta} is not a key description: {err}", hint="remove or restore the file") from None
        if info.keyid != meta.stem or info.sslib_key().keyid != info.keyid:
            raise InputError(f"{meta} describes key {info.keyid}, not {meta.stem}", hint="remove or restore the file")
        found.append(info)
    return sorted(found, key=lambda k: (k.name, k.keyid))


def find_key(directory: Path, selector: str) -> KeyInfo:
    """The key whose keyid, keyid prefix (8+ hex digits) or name is ``selector``."""
    keys = list_keys(directory)
    exact = [k for k in keys if selector in (k.keyid, k.name)]
    prefix = [k for k in keys if len(selector) >= 8 and k.keyid.startswith(selector)]
    matches = exact or prefix
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise InputError(f"{selector!r} names {len(matches)} keys in {directory}",
                         hint="name the key by its keyid: " + ", ".join(k.keyid for k in matches))
    raise NotFoundError(f"key {selector}", candidates=[k.name for k in keys] + [k.keyid for k in keys],
                        hint=None if keys else f"no keys in {directory}: `commonforge keys generate` makes one")


def load_signer(directory: Path, selector: str, passphrase: bytes | None = None) -> tuple[CryptoSigner, KeyInfo]:
    """A securesystemslib signer for the key ``selector`` names, and its description."""
    info = find_key(directory, selector)
    path = Path(directory) / f"{info.keyid}.pem"
    if info.encrypted and passphrase is None:
        raise InputError(f"key {info.keyid} ({info.name}) is passphrase-protected", hint="pass --passphrase-file")
    try:
        private_key = load_pem_private_key(path.read_bytes(), passphrase if info.encrypted else None)
    except (ValueError, TypeError) as err:
        raise InputError(f"cannot open the private key {path}: {err}", hint="check the passphrase") from None
    except OSError as err:
        raise InputError(f"cannot read the private key {path}: {err.strerror}") from None
    public = info.sslib_key()
    if keyid_of(private_key.public_key()) != info.keyid:  # type: ignore[arg-type]
        raise InputError(f"{path} does not hold the private half of key {info.keyid}", hint="restore the key files")
    return CryptoSigner(private_key, public), info
