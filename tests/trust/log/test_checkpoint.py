"""Checkpoints and witness cosignatures (trust/log/checkpoint.py): the C2SP examples, a real
cosigned checkpoint, round trips, tampering and quorums."""

from __future__ import annotations

import base64
import random

import pytest

from commonforge.errors import ForgeError, InputError
from trust.log import checkpoint as ck
from trust.log import note
from trust.log.checkpoint import Checkpoint, CheckpointError, CosignatureError

# --- c2sp.org/tlog-checkpoint and c2sp.org/tlog-cosignature: the example checkpoint, its log
# signature, the example witness cosignature and the signed message quoted for time 1679315147.
# The specs publish no keys for them, so these check layout, not signatures.
C2SP_BODY = b"example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
C2SP_LOG_SIG = (
    "— example.com/behind-the-sofa Az3grlgtzPICa5OS8npVmf1Myq/5IZniMp+ZJurmRDeOoRDe4URYN7u5/Zhcyv2q1gGzGku9nTo+zyWE+xeMcTOAYQ8=\n"
)
C2SP_COSIG = (
    "— witness.example.com/w1 "
    "jWbPPwAAAABkGFDLEZMHwSRaJNiIDoe9DYn/zXcrtPHeolMI5OWXEhZCB9dlrDJsX3b2oyin1nPZqhf5nNo0xUe+mbIUBkBIfZ+qnA==\n"
)
C2SP_COSIGNED_MESSAGE = (
    b"cosignature/v1\ntime 1679315147\nexample.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
)

# --- A real checkpoint of the staging CT log arche2025h1.staging.ct.transparency.dev with four
# cosignatures by public witnesses (quoted in the test suite of the Python package tlog_scales),
# and the keys those witnesses publish (witness-network.org / transparency.dev witness lists).
# The first signature line is an RFC 6962 TreeHeadSignature (type 0x05), which we do not know and
# must ignore; the second is the log's Ed25519 note signature.
ARCHE_BODY = b"arche2025h1.staging.ct.transparency.dev\n1432088532\nU7WM79jrzyhGZ5/GUBTpM7NzwdyfFx61t3RovgcC4Ro=\n"
ARCHE_SIGS = [  # (key name, base64 blob), in the note's order
    (
        "arche2025h1.staging.ct.transparency.dev",
        "zTM8sQAAAZ5W0WdjBAMARjBEAiBjW5IQf9pvsYLfQFX6hoGREPMHbdQ3urbllzalApkptQIgIpwtEroeW2BXaHAI4kJXFbon5Ch9MNL5zRNZ55lvGt0=",
    ),
    (
        "arche2025h1.staging.ct.transparency.dev",
        "ui8GwCF1+kWqZrxGdhj4aX3gcw7XUlXQQabg/27lefwhUkzbC3NygNI75MdhL1bfTW9g8Ei59RA23oHP7Ry1k3ZFWwQ=",
    ),
    (
        "transparency.dev/DEV:witness-little-garden",
        "2AQqhwAAAABqEiEgzgFIqqhbUoDwjMWE6UP8nd8/KYTzwZ2rhIgcqoXHAwVkjZr4AscylP3v7sEodkRAErumC2q44vdgJY096st5BQ==",
    ),
    (
        "witness1.smartit.nu/witness1",
        "pIyCDwAAAABqEiEghIp82KWebrw7/oHQwlTAm3g2RKS4+eebl8eO0WH+/iEcxZ75W3u5hNI7TOQtmJbqmNWVuE0tgh0XwzdZsDsUAQ==",
    ),
    (
        "remora.n621.de",
        "2net5wAAAABqEiEgPlfF3V06o0Y+fHM+J5J9s27wgxxcOVSpZ/2g/KSiXCg9DEZI+aVCIobWX9sXTynk5XeU/zZ0WBxtqB0DrAWfBw==",
    ),
    (
        "witness.stagemole.eu",
        "Z/euoAAAAABqEiEgw0i+7g2ENfDAWHmtRzCfKTHSDwYDJA2NmKeGi9Y8FtEyOUvVr+AJmIY/2TUFucgKi7lI7cUiOvKFYe/TmN9DAg==",
    ),
]
ARCHE_NOTE = ARCHE_BODY + b"\n" + "".join(f"— {name} {b64}\n" for name, b64 in ARCHE_SIGS).encode()
ARCHE_LOG_VKEY = "arche2025h1.staging.ct.transparency.dev+ba2f06c0+AU0vHmlGCS/PdN8b2OaGmKprLI8HKM+dJ472xgFYh15f"
WITNESS_VKEYS = [  # cosignature/v1 keys (type 0x04)
    "transparency.dev/DEV:witness-little-garden+d8042a87+BCtusOxINQNUTN5Oj8HObRkh2yHf/MwYaGX4CPdiVEPM",
    "witness1.smartit.nu/witness1+a48c820f+BPSFWg9G6KPiO7QPryYO5Xq4oYJJ+kAvLKLSimDhoxMO",
    "remora.n621.de+da77ade7+BOvN63jn/bLvkieywe8R6UYAtVtNbZpXh34x7onlmtw2",
    "witness.stagemole.eu+67f7aea0+BEqSG3yu9YrmcM3BHvQYTxwFj3uSWakQepafafpUqklv",
]
ABSENT_WITNESS = "staging.witness.transparency.goog/ring-any-bells+2e1a8dc9+BG5JTpLc3FJtwzgh1Uv+Qelz9qeOH2bfWjS1s0s+y4rL"

# --- transparency-dev/formats note/note_cosigv1_test.go: a cosignature whose timestamp is 1727964367.
TD_COSIG_B64 = "ZGhGuQAAAABm/qTPeyKXD+R2rzyQsxPiP8mXum7qq/iF0u4vanlqJyocWODBt97w9uL+8qT7S5gxEHWWOworDcFiEBYJXORmnFBOBA=="
TD_PLAIN_SIG_B64 = "eQjRQm6eSKzFoiYalgwCPXu2y3ijtg68is9M46JKxuZB+dRfTmeQeDBoXnvxZx2ugnkyV+MUMLXpWs1hPb/W/4xkNQY="


def _keys(name: str, alg: int = note.ALG_ED25519) -> tuple[note.Signer, note.Verifier]:
    skey, vkey = note.generate_key(name, alg)
    return note.parse_signer(skey), note.parse_verifier(vkey)


@pytest.fixture(scope="module")
def forge_log() -> tuple[note.Signer, note.Verifier]:
    return _keys("log.forge.example")


@pytest.fixture(scope="module")
def witnesses() -> list[tuple[note.Signer, note.Verifier]]:
    return [_keys(f"witness.example/w{i}", note.ALG_COSIGNATURE_V1) for i in range(3)]


def _cosigned(cp: Checkpoint, log: note.Signer, signers: list[note.Signer], t: int = 1_700_000_000) -> bytes:
    signed = ck.sign_checkpoint(cp, log)
    for i, w in enumerate(signers):
        signed = ck.add_cosignature(signed, ck.cosign(signed, w, t + i))
    return signed


def test_c2sp_example_checkpoint_parses_and_formats_back() -> None:
    cp = Checkpoint.parse(C2SP_BODY)
    assert (cp.origin, cp.size, cp.extensions) == ("example.com/behind-the-sofa", 20852163, ())
    assert cp.root_hash == base64.b64decode("CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=")
    assert cp.body() == C2SP_BODY
    text, sigs = note.split(C2SP_BODY + b"\n" + (C2SP_LOG_SIG + C2SP_COSIG).encode())
    assert text == C2SP_BODY
    log_sig, cosig = sigs
    assert (log_sig.name, len(log_sig.sig)) == ("example.com/behind-the-sofa", 64)  # key ID || Ed25519
    assert (cosig.name, len(cosig.sig)) == ("witness.example.com/w1", 8 + 64)  # key ID || time || Ed25519
    assert ck.cosignature_timestamp(cosig) == 1679315147  # the time of the spec's signed message
    assert note.cosignature_message(C2SP_BODY, 1679315147) == C2SP_COSIGNED_MESSAGE
    with pytest.raises(note.NoteFormatError, match="not a cosignature/v1"):
        ck.cosignature_timestamp(log_sig)


def test_transparency_dev_cosignature_timestamp_vectors() -> None:
    assert ck.cosignature_timestamp(note.Signature("w", 0, TD_COSIG_B64)) == 1727964367
    with pytest.raises(note.NoteFormatError):
        ck.cosignature_timestamp(note.Signature("w", 0, TD_PLAIN_SIG_B64))  # a plain Ed25519 signature


def test_real_cosigned_checkpoint_verifies() -> None:
    log = note.parse_verifier(ARCHE_LOG_VKEY)
    ws = [note.parse_verifier(k) for k in WITNESS_VKEYS]
    assert [w.alg for w in ws] == [note.ALG_COSIGNATURE_V1] * 4  # key IDs computed with 0x04
    opened = ck.open_checkpoint(ARCHE_NOTE, log, ws, 4, origin="arche2025h1.staging.ct.transparency.dev")
    assert (opened.checkpoint.size, len(opened.checkpoint.root_hash)) == (1432088532, 32)
    assert [c.name for c in opened.cosignatures] == [w.name for w in ws]
    assert {c.timestamp for c in opened.cosignatures} == {1779573024}
    assert [s.key_id for s in opened.unverified] == [0xCD333CB1]  # the RFC 6962 signature, ignored
    # a fifth trusted witness that did not cosign: refused, naming who did and who is missing
    with pytest.raises(CosignatureError, match="has 4 of the 5 required.*missing: staging.witness.transparency.goog"):
        ck.open_checkpoint(ARCHE_NOTE, log, [*ws, note.parse_verifier(ABSENT_WITNESS)], 5)
    # one trusted witness is enough when the policy asks for one
    assert ck.open_checkpoint(ARCHE_NOTE, log, ws[:1], 1).cosignatures[0].key_id == 0xD8042A87


def test_real_cosigned_checkpoint_any_flipped_byte_is_refused() -> None:
    log = note.parse_verifier(ARCHE_LOG_VKEY)
    ws = [note.parse_verifier(k) for k in WITNESS_VKEYS]
    # only the name and blob of the RFC 6962 line, a signature we do not know and ignore, may change
    ignored = range(ARCHE_NOTE.index("— ".encode()) + len("— ".encode()), ARCHE_NOTE.index(b"=\n", 100) + 1)
    for i in range(len(ARCHE_NOTE)):
        tampered = bytearray(ARCHE_NOTE)
        tampered[i] ^= 0x01
        if i in ignored:
            continue
        with pytest.raises(ForgeError):
            ck.open_checkpoint(bytes(tampered), log, ws, 4)


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (b"o\n01\n" + C2SP_BODY.split(b"\n")[2] + b"\n", "leading zeros"),
        (b"o\n+1\n" + C2SP_BODY.split(b"\n")[2] + b"\n", "leading zeros"),
        (b"o\n 1\n" + C2SP_BODY.split(b"\n")[2] + b"\n", "leading zeros"),
        (b"o\n1_0\n" + C2SP_BODY.split(b"\n")[2] + b"\n", "leading zeros"),
        ("o\n\u0661\n".encode() + C2SP_BODY.split(b"\n")[2] + b"\n", "leading zeros"),  # an Arabic-Indic 1
        (b"o\n-1\n" + C2SP_BODY.split(b"\n")[2] + b"\n", "leading zeros"),
        (b"o\n18446744073709551616\n" + C2SP_BODY.split(b"\n")[2] + b"\n", "0..2\\^64-1"),
        (b"o\n" + b"9" * 5000 + b"\n" + C2SP_BODY.split(b"\n")[2] + b"\n", "0..2\\^64-1"),
        (b"\n1\n" + C2SP_BODY.split(b"\n")[2] + b"\n", "origin line is empty"),
        (b"o\r\n1\n" + C2SP_BODY.split(b"\n")[2] + b"\n", "control character U\\+000D"),
        (b"o\n1\n" + base64.b64encode(bytes(31)) + b"\n", "31 bytes, not 32"),
        (b"o\n1\n" + base64.b64encode(bytes(33)) + b"\n", "not 32"),
        (b"o\n1\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2J=\n", "canonical"),
        (b"o\n1\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I\n", "base64"),
        (C2SP_BODY[:-1], "does not end in a newline"),
        (b"o\n1\n", "at least 3"),
        (C2SP_BODY + b"\n", "extension line is empty"),
        (C2SP_BODY + b"ext\n\n", "extension line is empty"),
        (b"\xff" + C2SP_BODY, "UTF-8"),
    ],
)
def test_malformed_checkpoint_bodies_are_refused(body: bytes, why: str) -> None:
    with pytest.raises(CheckpointError, match=why) as err:
        Checkpoint.parse(body)
    assert err.value.exit_code == 2


def test_checkpoint_constructor_checks_fields() -> None:
    assert Checkpoint("o", 0, bytes(32)).body() == b"o\n0\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n"
    for bad in [dict(origin="a\nb"), dict(size=-1), dict(size=True), dict(root_hash=bytes(31)), dict(extensions=("",))]:
        fields = dict(origin="o", size=1, root_hash=bytes(32), extensions=()) | bad
        with pytest.raises(CheckpointError):
            Checkpoint(**fields)


def test_randomized_round_trips(forge_log, witnesses) -> None:
    rng = random.Random(2026)
    log_signer, log_verifier = forge_log
    for _ in range(25):
        cp = Checkpoint(
            f"forge.example/{rng.randrange(10**6)}",
            rng.choice([0, 1, rng.randrange(2**64)]),
            rng.randbytes(32),
            tuple(f"ext {rng.random()}" for _ in range(rng.randrange(3))),
        )
        assert Checkpoint.parse(cp.body()) == cp
        signed = _cosigned(cp, log_signer, [s for s, _ in witnesses], t=rng.randrange(2**40))
        opened = ck.open_checkpoint(signed, log_verifier, [v for _, v in witnesses], 3, origin=cp.origin)
        assert opened.checkpoint == cp and len(opened.cosignatures) == 3 and opened.unverified == ()


def test_tampering_with_any_byte_fails(forge_log, witnesses) -> None:
    log_signer, log_verifier = forge_log
    cp = Checkpoint("log.forge.example", 42, bytes(range(32)), ("an extension",))
    signed = _cosigned(cp, log_signer, [s for s, _ in witnesses])
    wv = [v for _, v in witnesses]
    assert ck.open_checkpoint(signed, log_verifier, wv, 3).checkpoint == cp
    for i in range(len(signed)):
        tampered = bytearray(signed)
        tampered[i] ^= 0x04
        with pytest.raises(ForgeError):
            ck.open_checkpoint(bytes(tampered), log_verifier, wv, 3)


def test_extension_lines_are_cosigned(forge_log, witnesses) -> None:
    log_signer, log_verifier = forge_log
    w_signer, w_verifier = witnesses[0]
    honest = ck.sign_checkpoint(Checkpoint("o", 1, bytes(32), ("ext",)), log_signer)
    line = ck.cosign(honest, w_signer, 5)
    # the log signs a different extension; the witness line from the honest one must not carry over
    altered = ck.sign_checkpoint(Checkpoint("o", 1, bytes(32), ("exu",)), log_signer)
    with pytest.raises(CosignatureError, match="invalid signature for key witness.example/w0"):
        ck.open_checkpoint(ck.add_cosignature(altered, line), log_verifier, [w_verifier], 1)


def test_too_few_cosignatures_is_refused_naming_what_was_seen(forge_log, witnesses) -> None:
    log_signer, log_verifier = forge_log
    signed = _cosigned(Checkpoint("log.forge.example", 7, bytes(32)), log_signer, [witnesses[1][0]])
    wv = [v for _, v in witnesses]
    assert len(ck.open_checkpoint(signed, log_verifier, wv, 1).cosignatures) == 1
    with pytest.raises(CosignatureError, match="has 1 of the 2 required witness cosignatures") as err:
        ck.open_checkpoint(signed, log_verifier, wv, 2)
    assert "cosigned by: witness.example/w1;" in err.value.message
    assert "missing: witness.example/w0+" in err.value.message and "witness.example/w2+" in err.value.message
    assert err.value.exit_code == 1
    # the same cosignature twice still counts once
    doubled = signed + signed.splitlines(keepends=True)[-1]
    with pytest.raises(CosignatureError, match="has 1 of the 2"):
        ck.open_checkpoint(doubled, log_verifier, wv, 2)


def test_missing_or_forged_log_signature_is_refused(forge_log, witnesses) -> None:
    log_signer, log_verifier = forge_log
    w_signer, w_verifier = witnesses[0]
    cp = Checkpoint("log.forge.example", 9, bytes(32))
    impostor, _ = _keys("impostor.example")
    by_impostor = ck.add_cosignature(ck.sign_checkpoint(cp, impostor), ck.cosign(ck.sign_checkpoint(cp, impostor), w_signer, 1))
    with pytest.raises(CosignatureError, match="no signature by the log key log.forge.example\\+.*impostor.example"):
        ck.open_checkpoint(by_impostor, log_verifier, [w_verifier], 1)
    with pytest.raises(CosignatureError, match="no signature by the log key"):
        ck.open_checkpoint(ck.sign_checkpoint(cp, impostor), log_verifier)
    # the log's signature line of another checkpoint, spliced onto this one: forged
    other = ck.sign_checkpoint(Checkpoint("log.forge.example", 10, bytes(32)), log_signer)
    forged = cp.body() + b"\n" + note.split(other)[1][0].line()
    with pytest.raises(CosignatureError, match="invalid signature for key log.forge.example"):
        ck.open_checkpoint(forged, log_verifier)
    with pytest.raises(note.NoteSignatureError, match="invalid signature"):
        ck.cosign(forged, w_signer, 1, log_verifier=log_verifier)


def test_origin_and_key_roles_are_enforced(forge_log, witnesses) -> None:
    log_signer, log_verifier = forge_log
    w_signer, w_verifier = witnesses[0]
    signed = ck.sign_checkpoint(Checkpoint("log.forge.example", 1, bytes(32)), log_signer)
    with pytest.raises(CosignatureError, match="origin 'log.forge.example', not 'other.log'"):
        ck.open_checkpoint(signed, log_verifier, origin="other.log")
    with pytest.raises(InputError, match="witness key .* is not a cosignature/v1 key"):
        ck.open_checkpoint(signed, log_verifier, [log_verifier], 1)
    with pytest.raises(InputError, match="log key .* is not an Ed25519 note key"):
        ck.open_checkpoint(signed, w_verifier)
    with pytest.raises(InputError, match="witness key .* is not a cosignature/v1 key"):
        ck.cosign(signed, log_signer, 1)
    with pytest.raises(InputError, match="3 cosignatures required but only 1 witnesses"):
        ck.open_checkpoint(signed, log_verifier, [w_verifier, w_verifier], 3)
    with pytest.raises(InputError, match="0..2\\^63-1"):
        ck.cosign(signed, w_signer, 2**63)


def test_add_cosignature_replaces_the_same_witness(forge_log, witnesses) -> None:
    log_signer, log_verifier = forge_log
    w_signer, w_verifier = witnesses[0]
    signed = ck.sign_checkpoint(Checkpoint("log.forge.example", 3, bytes(32)), log_signer)
    once = ck.add_cosignature(signed, ck.cosign(signed, w_signer, 100))
    twice = ck.add_cosignature(once, ck.cosign(once, w_signer, 200))
    assert len(note.split(twice)[1]) == 2
    assert ck.open_checkpoint(twice, log_verifier, [w_verifier], 1).cosignatures[0].timestamp == 200
    with pytest.raises(note.NoteFormatError):
        ck.add_cosignature(signed, b"not a signature line\n")
    with pytest.raises(note.NoteFormatError):
        ck.add_cosignature(signed, ck.cosign(signed, w_signer, 1) * 2)


def test_note_key_converts_to_cosigner() -> None:
    # transparency-dev/formats accepts a witness's Ed25519 note key (0x01) and cosigns with the
    # same key under type 0x04; its test key "TEST" (note_cosigv1_test.go)
    plain = note.parse_verifier("TEST+7997405c+AQcC+FTVKf0jlTdHDY3rbevmnKxxPjigCXlVtGe6RIr6")
    cosigner = plain.as_cosigner()
    assert cosigner.raw_key == plain.raw_key and cosigner.alg == note.ALG_COSIGNATURE_V1
    assert cosigner.key_id == note.key_id("TEST", 0x04, plain.raw_key) != plain.key_id
    assert note.parse_verifier(cosigner.text()) == cosigner
    log_signer, log_verifier = _keys("log.example")
    w_plain, _ = _keys("w.example")
    signed = ck.sign_checkpoint(Checkpoint("log.example", 5, bytes(32)), log_signer)
    cosigned = ck.add_cosignature(signed, ck.cosign(signed, w_plain.as_cosigner(), 9))
    opened = ck.open_checkpoint(cosigned, log_verifier, [w_plain.verifier().as_cosigner()], 1)
    assert opened.cosignatures[0].timestamp == 9
