"""Keys: generated and imported, kept 0600 outside every git work tree, named by the sha256 of their DER SPKI."""

from __future__ import annotations

import hashlib
import shutil
import stat
import subprocess

import pytest
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat, load_pem_public_key, load_ssh_public_key

from commonforge.errors import InputError, NotFoundError
from trust import keys

SSH_KEYGEN = shutil.which("ssh-keygen")


def test_a_generated_key_is_private_named_by_its_der_digest_and_signs(tmp_path):
    home = keys.keys_dir(tmp_path / "config")
    info = keys.generate(home, "Ann Lee", "Acme")
    assert info.keytype == "ecdsa" and not info.encrypted
    der = load_pem_public_key(info.public_key.encode()).public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    assert info.keyid == hashlib.sha256(der).hexdigest()
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    for suffix in (".pem", ".json"):
        assert stat.S_IMODE((home / f"{info.keyid}{suffix}").stat().st_mode) == 0o600
    signer, found = keys.load_signer(home, "Ann Lee")
    assert found == info and signer.public_key.keyid == info.keyid
    assert keys.list_keys(home) == [info]
    assert keys.find_key(home, info.keyid[:10]) == info
    assert set(info.public().model_dump()) == {"keyid", "name", "affiliation", "public_key"}


def test_a_passphrase_protects_the_key(tmp_path):
    (tmp_path / "pass").write_text("s3cret\n")
    info = keys.generate(tmp_path / "k", "Bob", "Beta", "ed25519", keys.read_passphrase(tmp_path / "pass"))
    assert info.encrypted and info.keytype == "ed25519"
    assert b"ENCRYPTED" in (tmp_path / "k" / f"{info.keyid}.pem").read_bytes()
    with pytest.raises(InputError, match="passphrase-protected"):
        keys.load_signer(tmp_path / "k", "Bob")
    with pytest.raises(InputError, match="check the passphrase"):
        keys.load_signer(tmp_path / "k", "Bob", b"wrong")
    assert keys.load_signer(tmp_path / "k", "Bob", b"s3cret")[1] == info


def test_keys_are_never_kept_inside_a_git_work_tree(tmp_path):
    subprocess.run(["git", "init", "-q", str(tmp_path / "repo")], check=True)
    with pytest.raises(InputError, match="inside the git work tree"):
        keys.generate(tmp_path / "repo" / "secrets" / "keys", "Ann", "Acme")
    assert not (tmp_path / "repo" / "secrets").exists()


def test_bad_owners_types_and_selectors_are_refused(tmp_path):
    with pytest.raises(InputError, match="name and affiliation are one line"):
        keys.generate(tmp_path / "k", "Ann\nLee", "Acme")
    with pytest.raises(InputError, match="unknown key type"):
        keys.generate(tmp_path / "k", "Ann", "Acme", "rsa")  # type: ignore[arg-type]
    keys.generate(tmp_path / "k", "Ann", "Acme")
    keys.generate(tmp_path / "k", "Ann", "Acme Labs")
    with pytest.raises(InputError, match="names 2 keys"):
        keys.find_key(tmp_path / "k", "Ann")
    with pytest.raises(NotFoundError):
        keys.find_key(tmp_path / "k", "Zed")


@pytest.mark.skipif(SSH_KEYGEN is None, reason="needs ssh-keygen")
@pytest.mark.parametrize("args, keytype", [(["-t", "ed25519"], "ed25519"), (["-t", "ecdsa", "-b", "256"], "ecdsa")])
def test_an_openssh_key_is_imported(tmp_path, args, keytype):
    subprocess.run([SSH_KEYGEN, *args, "-q", "-N", "", "-C", "", "-f", str(tmp_path / "id")], check=True)
    info = keys.import_openssh(tmp_path / "k", tmp_path / "id", "Cat", "Cyan", b"new passphrase")
    assert info.keytype == keytype and info.encrypted
    ssh_pub = load_ssh_public_key((tmp_path / "id.pub").read_bytes())  # what ssh-keygen wrote beside it
    assert info.keyid == keys.keyid_of(ssh_pub)  # type: ignore[arg-type]
    keys.load_signer(tmp_path / "k", "Cat", b"new passphrase")


@pytest.mark.skipif(SSH_KEYGEN is None, reason="needs ssh-keygen")
@pytest.mark.parametrize("args, message", [
    (["-t", "ecdsa", "-b", "384"], "unsupported key type .* secp384r1"),
    (["-t", "rsa", "-b", "1024"], "unsupported key type"),
    (["-t", "ed25519", "-N", "pw"], "passphrase-protected OpenSSH key|not a usable OpenSSH"),
])
def test_other_openssh_keys_are_refused_with_a_reason(tmp_path, args, message):
    extra = [] if "-N" in args else ["-N", ""]
    subprocess.run([SSH_KEYGEN, *args, *extra, "-q", "-C", "", "-f", str(tmp_path / "id")], check=True)
    with pytest.raises(InputError, match=message):
        keys.import_openssh(tmp_path / "k", tmp_path / "id", "Cat", "Cyan")
    with pytest.raises(InputError, match="not a usable OpenSSH private key"):
        keys.import_openssh(tmp_path / "k", tmp_path / "id.pub", "Cat", "Cyan")
