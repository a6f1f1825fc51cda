"""Signed notes (trust/log/note.py) against the reference implementation's vectors, byte for byte."""

from __future__ import annotations

import random

import pytest

from commonforge.errors import ForgeError
from trust.log import note
from trust.log.note import NoteFormatError, NoteSignatureError

# --- Vectors from Go's golang.org/x/mod/sumdb/note, note_test.go (TestNewVerifier, TestNewSigner,
# TestSign, TestOpen): the reference implementation of c2sp.org/signed-note.
PETER_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
PETER_SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
ENOCH_VKEY = "EnochRoot+af0cfe78+ATtqJ7zOtqQtYqOo0CpvDXNlMhV3HeJDpjrASKGLWdop"
TEXT = b"If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n"
PETER_B64 = "x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM="
ENOCH_B64 = "rwz+eBzmZa0SO3NbfRGzPCpDckykFXSdeX+MNtCOXm2/5n2tiOHp+vAF1aGrQ5ovTG01oOTGwnWLox33WWd1RvMc+QQ="
PETER_SIG = f"— PeterNeumann {PETER_B64}\n".encode()
ENOCH_SIG = f"— EnochRoot {ENOCH_B64}\n".encode()
GO_SIGNED = TEXT + b"\n" + PETER_SIG  # TestSign's `want`

# --- A real checkpoint of the Go checksum database (sum.golang.org/latest, 2024-09-23, as quoted
# in transparency-dev's checkpoint tests) and sum.golang.org's published key (Go's
# src/cmd/go/internal/modfetch/key.go): a signature nothing here produced.
SUMDB_VKEY = "sum.golang.org+033de0ae+Ac4zctda0e5eza+HJyk9SxEdh+s3Ux18htTTAD8OuAn8"
SUMDB_NOTE = (
    "go.sum database tree\n30055305\nmXfgRcJ0bG0j3CPdKwgGWtUzBUbX67saZGRmFuJGGsM=\n\n"
    "— sum.golang.org Az3grpgEild5qw7+5dtV13Kf1C2Xurm8q4fhdxvcsDHnqNTaxL2AFjBY+2TyGKevucFcAAlWFJJYle3EJlDCrQ+y3A8=\n"
).encode()

# --- The c2sp.org/signed-note example note (no public key is published for it: structure only).
C2SP_NOTE = (
    "Ognuno sta solo sul cuor della terra\ntrafitto da un raggio di sole:\n\ned è subito sera.\n\n"
    "— quasimodo.example/salvatore NnugSzTjtVAewIS+Z/iJhUPeFDkO/5QQ2i5ddnGITLlC+EhfLW9oJKONrMouFSQU0xMcXxj99ihAQwaqP3ZekRwNtIc=\n"
).encode()


@pytest.fixture(scope="module")
def peter() -> note.Verifier:
    return note.parse_verifier(PETER_VKEY)


@pytest.fixture(scope="module")
def enoch() -> note.Verifier:
    return note.parse_verifier(ENOCH_VKEY)


def test_go_keys_parse_with_their_key_ids(peter: note.Verifier, enoch: note.Verifier) -> None:
    signer = note.parse_signer(PETER_SKEY)
    assert (peter.name, peter.key_id, peter.alg) == ("PeterNeumann", 0xC74F20A3, note.ALG_ED25519)
    assert enoch.key_id == 0xAF0CFE78
    # the key ID is SHA-256(name || 0x0A || 0x01 || pubkey)[:4], recomputed from the key bytes
    assert note.key_id("PeterNeumann", 0x01, peter.raw_key) == 0xC74F20A3
    assert signer.verifier() == peter
    assert signer.verifier().text() == PETER_VKEY and signer.text() == PETER_SKEY
    assert peter.text() == PETER_VKEY and enoch.text() == ENOCH_VKEY


def test_sign_gives_go_bytes_exactly() -> None:
    assert note.sign(TEXT, [note.parse_signer(PETER_SKEY)]) == GO_SIGNED


def test_open_go_note_known_and_unknown_keys(peter: note.Verifier, enoch: note.Verifier) -> None:
    both = TEXT + b"\n" + PETER_SIG + ENOCH_SIG
    one = note.open_note(both, [peter])
    assert one.text == TEXT
    assert one.verified == (note.Signature("PeterNeumann", 0xC74F20A3, PETER_B64),)
    assert one.unverified == (note.Signature("EnochRoot", 0xAF0CFE78, ENOCH_B64),)
    two = note.verify(both, [peter, enoch])
    assert [s.name for s in two.verified] == ["PeterNeumann", "EnochRoot"] and two.unverified == ()
    with pytest.raises(NoteSignatureError, match="no signature by a known key.*PeterNeumann\\+c74f20a3") as err:
        note.open_note(both, [])
    assert err.value.exit_code == 1 and len(err.value.unverified) == 2


def test_known_key_with_a_bad_signature_rejects_the_note(peter: note.Verifier) -> None:
    # Go TestOpen "Invalid signature": four base64 characters spliced into the signature
    bad = TEXT + b"\n" + PETER_SIG[:60] + b"ABCD" + PETER_SIG[60:]
    with pytest.raises(NoteSignatureError, match="invalid signature for key PeterNeumann\\+c74f20a3") as err:
        note.open_note(bad, [peter])
    assert err.value.bad_key == "PeterNeumann+c74f20a3" and err.value.exit_code == 1


def test_repeated_signatures_count_once(peter: note.Verifier) -> None:
    # Go TestOpen "Duplicated verified and unverified signatures"
    enoch_abcd = ENOCH_SIG[:60] + b"ABCD" + ENOCH_SIG[60:]
    opened = note.open_note(TEXT + b"\n" + PETER_SIG * 2 + ENOCH_SIG * 2 + enoch_abcd, [peter])
    assert [s.name for s in opened.verified] == ["PeterNeumann"]
    assert [s.b64 for s in opened.unverified] == [ENOCH_B64, ENOCH_B64[:46] + "ABCD" + ENOCH_B64[46:]]  # byte 60 of the line


def test_signature_limit(peter: note.Verifier) -> None:
    assert note.open_note(TEXT + b"\n" + PETER_SIG * note.MAX_SIGNATURES, [peter]).verified
    for known in ([peter], []):
        with pytest.raises(NoteFormatError, match="101 signatures, more than the 100"):
            note.open_note(TEXT + b"\n" + PETER_SIG * 101, known)


@pytest.mark.parametrize(
    ("msg", "why"),
    [  # Go TestOpen badMsgs, then a few of our own
        (TEXT, "no blank line"),
        (TEXT + b"\n", "no blank line|no signature lines"),
        (TEXT + b"\n" + PETER_SIG[:-1], "does not end in a newline"),
        (b"\x01" + GO_SIGNED, "control character U\\+0001"),
        (b"\xff" + GO_SIGNED, "not valid UTF-8"),
        (TEXT + b"\n" + f"— Bad Name {PETER_B64}".encode(), "does not end in a newline"),
        (TEXT + b"\n" + f"— Bad Name {PETER_B64}\n".encode(), "not standard base64"),
        (GO_SIGNED + b"Unexpected line.\n", "does not start with an em dash"),
        (TEXT + b"\n" + PETER_SIG.replace("—".encode(), b"-"), "does not start with an em dash"),
        (TEXT + b"\n" + PETER_SIG.replace(b"Neumann ", b"Neumann  "), "not standard base64"),
        (TEXT + b"\n" + PETER_SIG.replace(b"Peter", b"Pe+ter"), "invalid key name"),
        (TEXT + b"\n" + PETER_SIG.replace(b"Peter", "Pe\u00a0ter".encode()), "invalid key name"),
        (TEXT + b"\n" + b"\xe2\x80\x94  " + PETER_B64.encode() + b"\n", "invalid key name ''"),
        (TEXT + b"\n" + PETER_SIG.replace(b"AM=", b"AN="), "not canonical base64"),
        (TEXT + b"\n" + b"\xe2\x80\x94 PeterNeumann AAAAAA==\n", "too short"),
        (TEXT.replace(b"\n", b"\r\n") + b"\n" + PETER_SIG, "control character U\\+000D"),
    ],
)
def test_malformed_notes_are_input_errors(peter: note.Verifier, msg: bytes, why: str) -> None:
    with pytest.raises(NoteFormatError, match=why) as err:
        note.open_note(msg, [peter])
    assert err.value.exit_code == 2


def test_every_mangled_verifier_key_is_refused() -> None:
    # Go TestNewVerifier: every proper substring and every single-byte increment fails
    b = PETER_VKEY
    for i in range(len(b) + 1):
        for j in range(i + 1, len(b) + 1):
            if (i, j) != (0, len(b)):
                with pytest.raises(NoteFormatError):
                    note.parse_verifier(b[i:j])
    for i in range(len(b)):
        with pytest.raises(NoteFormatError):
            note.parse_verifier(b[:i] + chr(ord(b[i]) + 1) + b[i + 1 :])
    # wrong key length and unknown algorithm, each with a key ID adjusted to match (Go's vectors)
    # (its "KEY==" also leaves non-zero padding bits, which we refuse first)
    with pytest.raises(NoteFormatError, match="canonical base64|1 \\+ 32"):
        note.parse_verifier("PeterNeumann+cc469956+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TWBADKEY==")
    with pytest.raises(NoteFormatError, match="unknown key type 0x65"):
        note.parse_verifier("PeterNeumann+173116ae+ZRpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW")


def test_every_mangled_signer_key_is_refused() -> None:
    # Go TestNewSigner
    b = PETER_SKEY
    for i in range(len(b) + 1):
        for j in range(i + 1, len(b) + 1):
            if (i, j) != (0, len(b)):
                with pytest.raises(NoteFormatError):
                    note.parse_signer(b[i:j])
    for i in range(len(b)):
        with pytest.raises(NoteFormatError):
            note.parse_signer(b[:i] + chr(ord(b[i]) + 1) + b[i + 1 :])


def test_real_sumdb_checkpoint_verifies_and_any_flipped_byte_fails() -> None:
    sumdb = note.parse_verifier(SUMDB_VKEY)  # its base64 holds '+': only the first two split
    assert sumdb.key_id == 0x033DE0AE
    assert note.open_note(SUMDB_NOTE, [sumdb]).text.startswith(b"go.sum database tree\n30055305\n")
    for i in range(len(SUMDB_NOTE)):
        tampered = bytearray(SUMDB_NOTE)
        tampered[i] ^= 0x01
        with pytest.raises(ForgeError):
            note.open_note(bytes(tampered), [sumdb])


def test_c2sp_example_note_structure() -> None:
    # the text keeps its inner blank line: the signatures start after the *last* blank line
    text, sigs = note.split(C2SP_NOTE)
    assert text == "Ognuno sta solo sul cuor della terra\ntrafitto da un raggio di sole:\n\ned è subito sera.\n".encode()
    assert [(s.name, len(s.sig)) for s in sigs] == [("quasimodo.example/salvatore", 64)]
    assert sigs[0].key_id == 0x367BA04B  # the first four bytes of its base64 blob


def test_generated_keys_round_trip_and_sign() -> None:
    rng = random.Random(13)
    for n in range(20):
        name = f"forge.example/{rng.randrange(10**9)}"
        skey, vkey = note.generate_key(name)
        signer, verifier = note.parse_signer(skey), note.parse_verifier(vkey)
        assert signer.verifier() == verifier and verifier.text() == vkey
        text = "".join(rng.choice("abc é—\n") for _ in range(rng.randrange(40))).encode() + f"{n}\n".encode()
        signed = note.sign(text, [signer, note.parse_signer(PETER_SKEY)])
        opened = note.open_note(signed, [verifier])
        assert opened.text == text and [s.name for s in opened.verified] == [name]
        assert [s.name for s in opened.unverified] == ["PeterNeumann"]


def test_sign_refuses_what_would_not_open() -> None:
    signer = note.parse_signer(PETER_SKEY)
    with pytest.raises(NoteFormatError, match="end in a newline"):
        note.sign(b"abc", [signer])  # Go TestSign "short text"
    with pytest.raises(NoteFormatError, match="control character"):
        note.sign(b"a\tb\n", [signer])
    with pytest.raises(NoteFormatError, match="UTF-8"):
        note.sign(b"\xff\n", [signer])
    with pytest.raises(ForgeError, match="at least one signer"):
        note.sign(TEXT, [])
    with pytest.raises(ForgeError, match="cosignature key"):
        note.sign(TEXT, [signer.as_cosigner()])


@pytest.mark.parametrize("name", ["", "bad name", "a+b", "tab\tname", "nb\u00a0sp", "em\u2003space", "ctl\x1cname"])
def test_key_names_with_spaces_or_plus_are_refused(name: str) -> None:
    with pytest.raises(NoteFormatError, match="invalid key name"):
        note.generate_key(name)


def test_ambiguous_known_keys_are_refused(peter: note.Verifier) -> None:
    assert note.open_note(GO_SIGNED, [peter, peter]).verified  # the same key twice is harmless
    impostor = note.Verifier(
        "PeterNeumann",
        peter.key_id,
        peter.alg,
        note.parse_verifier(ENOCH_VKEY).public_key,
        note.parse_verifier(ENOCH_VKEY).raw_key,
    )
    with pytest.raises(ForgeError, match="ambiguous key PeterNeumann\\+c74f20a3"):
        note.open_note(GO_SIGNED, [peter, impostor])
