"""The log against independent implementations: its Merkle tree against pymerkle's (PyPI, RFC 9162
hashing: SHA-256, 0x00 leaf and 0x01 node prefixes), its signed notes against Go's
golang.org/x/mod/sumdb/note.

Our proofs are the RFC's (audit path leaf first, consistency proof as RFC 9162 §2.1.4.1);
pymerkle's inclusion proof is the same audit path behind the leaf hash, with a "rule" of
left/right bits that its verifier recomputes from (index, size) and insists on. Its consistency
proof is not the RFC's: it is the path from leaf ``old`` to the new root, whose left siblings
fold into the old root (so 4 hashes from size 4 to 8, where the RFC's proof is 1), and neither
proof can be turned into the other without hashes it lacks. So the consistency checks are: each
side's proof verifies against the other side's roots; a proof in pymerkle's layout made of the
hashes stored in our tiles verifies with pymerkle; and an RFC proof made of pymerkle's subtree
hashes is byte for byte ours and verifies with ours. The RFC's own consistency proofs are
checked against the published RFC 6962 vectors in test_merkle.py.
"""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from trust.log import checkpoint as ck
from trust.log import merkle, note
from trust.log.merkle import LogError
from trust.log.tiles import TileLog

pymerkle = pytest.importorskip("pymerkle", reason="pymerkle (the dev extra) is not installed: make venv")
from pymerkle.core import _consistency_path_layout  # noqa: E402  (the layout pymerkle's verifier checks)

ORIGIN = "example.org/interop-log"
SMALL = range(1, 71)  # every size up to 70: every shape of a small tree
BIG = (127, 128, 129, 255, 256, 257, 300, 511, 512, 513, 1000, 1024, 1025, 1100)  # across tile edges
SIZES = (*SMALL, *BIG)


def entry(i: int) -> bytes:
    return f"interop statement {i} ".encode() * (i % 4)  # entry 0 is empty


def _checkpoint(size: int, root: bytes) -> bytes:
    return ck.Checkpoint(ORIGIN, size, root).body() + b"\n\xe2\x80\x94 " + ORIGIN.encode() + b" AAAAAAAA\n"


@pytest.fixture(scope="module")
def trees(tmp_path_factory: pytest.TempPathFactory) -> tuple[TileLog, Any]:
    """Our on-disk log and pymerkle's in-memory tree over the same 1,100 entries. The log is grown
    one entry at a time to 70, then in uneven batches, so that old sizes are read from newer tiles."""
    log = TileLog(tmp_path_factory.mktemp("interop") / "log")
    for i in range(70):
        log.append([entry(i)], _checkpoint)
    for end in (200, 256, 257, 700, 1024, 1100):
        log.append([entry(i) for i in range(log.size, end)], _checkpoint)
    theirs = pymerkle.InmemoryTree(algorithm="sha256")
    theirs.append_entries([entry(i) for i in range(1100)])
    return TileLog(log.directory), theirs


def _flip(proof: list[bytes], at: int) -> list[bytes]:
    bad = list(proof)
    bad[at] = bytes([bad[at][0] ^ 1]) + bad[at][1:]
    return bad


def _indices(size: int) -> list[int]:
    if size <= 70:
        return list(range(size))
    return sorted({0, 1, size // 3, size // 2, size - 2, size - 1, 255 % size, 256 % size})


def _old_sizes(new: int) -> list[int]:
    if new <= 70:
        return list(range(1, new + 1))
    return sorted({1, 2, 3, 64, 70, new // 2, new - 1, new} | {s for s in BIG if s < new})


def _their_hash_at(theirs: Any) -> merkle.HashAt:
    """pymerkle's own hash of the perfect subtree of 2**level leaves at index (its subroot cache)."""
    return lambda level, index: theirs._get_subroot(index << level, 1 << level)


@pytest.mark.parametrize("size", SIZES)
def test_roots_equal_pymerkles(trees, size: int) -> None:
    log, theirs = trees
    assert log.root(size) == theirs.get_root(size)
    assert merkle.root([theirs.get_leaf(i + 1) for i in range(size)]) == theirs.get_root(size)


@pytest.mark.parametrize("size", SIZES)
def test_inclusion_proofs_verify_both_ways(trees, size: int) -> None:
    log, theirs = trees
    root = theirs.get_root(size)
    for index in _indices(size):
        leaf = merkle.leaf_hash(entry(index))
        ours = log.inclusion_proof(index, size)
        made = theirs.prove_inclusion(index + 1, size)  # pymerkle counts leaves from one
        assert made.path == [leaf, *ours]  # the same audit path, behind the leaf hash

        # (b) ours, in pymerkle's format (its rule bits for this index and size), with its verifier
        converted = pymerkle.InclusionProof("sha256", True, size, index + 1, made.rule, [leaf, *ours])
        pymerkle.verify_inclusion(leaf, root, converted, index=index + 1, size=size, algorithm="sha256")
        # (c) pymerkle's, with ours
        merkle.verify_inclusion(made.path[0], index, size, made.path[1:], log.root(size))

        # (d) a tampered proof fails in both
        for at in {0, len(ours) // 2, len(ours) - 1} if ours else set():
            bad = _flip(ours, at)
            with pytest.raises(pymerkle.InvalidProof):
                pymerkle.verify_inclusion(
                    leaf, root, pymerkle.InclusionProof("sha256", True, size, index + 1, made.rule, [leaf, *bad])
                )
            with pytest.raises(LogError):
                merkle.verify_inclusion(leaf, index, size, bad, root)
        other = merkle.leaf_hash(entry(index) + b"!")  # another entry's leaf with the right path
        with pytest.raises(pymerkle.InvalidProof):
            pymerkle.verify_inclusion(other, root, converted)
        with pytest.raises(LogError):
            merkle.verify_inclusion(other, index, size, ours, root)


@pytest.mark.parametrize("new", SIZES)
def test_consistency_proofs_verify_both_ways(trees, new: int) -> None:
    log, theirs = trees
    new_root = theirs.get_root(new)
    for old in _old_sizes(new):
        old_root = theirs.get_root(old)
        ours = log.consistency_proof(old, new)
        made = theirs.prove_consistency(old, new)

        # Each side's proof against the other side's roots.
        merkle.verify_consistency(old, new, old_root, new_root, ours)
        pymerkle.verify_consistency(log.root(old), log.root(new), made, prior_size=old, later_size=new)

        # (b) the hashes stored in our tiles, laid out as pymerkle proves, verify with pymerkle.
        rule, subset, ranges = _consistency_path_layout(old, new)
        from_tiles = [merkle.subtree_hash(start, end, log.hash_at) for start, end in ranges]
        assert from_tiles == made.path
        laid_out = pymerkle.ConsistencyProof("sha256", True, new, old, rule, subset, from_tiles)
        pymerkle.verify_consistency(old_root, new_root, laid_out, prior_size=old, later_size=new)

        # (c) pymerkle's subtree hashes, laid out as the RFC proves, are our proof and verify with ours.
        from_pymerkle = merkle.consistency_proof(old, new, _their_hash_at(theirs))
        assert from_pymerkle == ours
        merkle.verify_consistency(old, new, log.root(old), log.root(new), from_pymerkle)

        # (d) a tampered proof fails in both.
        for at in {0, len(ours) - 1} if ours else set():
            with pytest.raises(LogError):
                merkle.verify_consistency(old, new, old_root, new_root, _flip(ours, at))
        for at in {0, len(made.path) - 1}:
            bad = pymerkle.ConsistencyProof("sha256", True, new, old, rule, subset, _flip(made.path, at))
            with pytest.raises(pymerkle.InvalidProof):
                pymerkle.verify_consistency(old_root, new_root, bad)
        if old < new:  # a forked log: the same old size, another old root
            forked = merkle.root([merkle.leaf_hash(entry(i) + b"!") for i in range(old)])
            with pytest.raises(LogError):
                merkle.verify_consistency(old, new, forked, new_root, ours)
            with pytest.raises(pymerkle.InvalidProof):
                pymerkle.verify_consistency(forked, new_root, made)


# --- signed notes against Go's golang.org/x/mod/sumdb/note --------------------------------------
# tests/trust/log/go/notecheck.go, built offline in GOPATH mode against Debian's sources of
# golang.org/x/mod (the golang-golang-x-mod-dev package); the build takes about a second.

GO_SOURCE = Path(__file__).parent / "go" / "notecheck.go"
GOPATH = Path("/usr/share/gocode")  # where Debian's golang-*-dev packages put Go sources


@pytest.fixture(scope="module")
def notecheck(tmp_path_factory: pytest.TempPathFactory) -> Path:
    go = shutil.which("go")
    if go is None:
        pytest.skip("go is not installed (Debian: apt-get install golang-go); the Go note interop test needs it")
    if not (GOPATH / "src/golang.org/x/mod/sumdb/note/note.go").is_file():
        pytest.skip(f"Go's golang.org/x/mod/sumdb/note sources are not under {GOPATH} (Debian: golang-golang-x-mod-dev)")
    out = tmp_path_factory.mktemp("go")
    env = {
        **os.environ,
        "GO111MODULE": "off",  # GOPATH mode: imports resolve from GOPATH/src, never from the network
        "GOPATH": str(GOPATH),
        "GOPROXY": "off",
        "GOFLAGS": "",
        "GOCACHE": str(out / "cache"),
    }
    started = time.monotonic()
    built = subprocess.run(
        [go, "build", "-o", str(out / "notecheck"), GO_SOURCE.name],
        cwd=GO_SOURCE.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, f"go build failed after {time.monotonic() - started:.1f}s:\n{built.stderr}"
    return out / "notecheck"


def _go(notecheck: Path, tmp_path: Path, command: str, key: str, data: bytes) -> subprocess.CompletedProcess[bytes]:
    (tmp_path / "key").write_text(key + "\n")
    (tmp_path / "data").write_bytes(data)
    return subprocess.run([notecheck, command, tmp_path / "key", tmp_path / "data"], capture_output=True, timeout=60)


@pytest.fixture
def log_key() -> tuple[note.Signer, note.Verifier]:
    signer = note.parse_signer(note.generate_key(ORIGIN)[0])
    return signer, signer.verifier()


def test_go_opens_a_checkpoint_our_note_code_signed(notecheck: Path, trees, log_key, tmp_path: Path) -> None:
    log, _ = trees
    signer, verifier = log_key
    cp = ck.Checkpoint(ORIGIN, log.size, log.root(), ("an extension line",))
    signed = ck.sign_checkpoint(cp, signer)
    # A witness's cosignature/v1 line too: Go does not know key type 0x04 and must ignore it (the spec).
    witness = note.parse_signer(note.generate_key("witness.example", note.ALG_COSIGNATURE_V1)[0])
    signed = ck.add_cosignature(signed, ck.cosign(signed, witness, 1_700_000_000, log_verifier=verifier))
    opened = _go(notecheck, tmp_path, "verify", verifier.text(), signed)
    assert opened.returncode == 0, opened.stderr.decode()
    assert opened.stdout == cp.body()
    assert f"verified {verifier.label}".encode() in opened.stderr
    assert note.open_note(signed, [verifier]).text == cp.body()


def test_go_refuses_a_tampered_note_as_we_do(notecheck: Path, trees, log_key, tmp_path: Path) -> None:
    log, _ = trees
    signer, verifier = log_key
    signed = ck.sign_checkpoint(ck.Checkpoint(ORIGIN, log.size, log.root()), signer)
    text, sigs = note.split(signed)
    raw = bytearray(base64.b64decode(sigs[0].b64))
    raw[-1] ^= 1
    impostor = note.parse_signer(note.generate_key(ORIGIN)[0])  # same name, another key
    tampered = {
        "a grown size": signed.replace(f"\n{log.size}\n".encode(), f"\n{log.size + 1}\n".encode()),
        "a flipped signature bit": text + b"\n" + note.Signature(sigs[0].name, sigs[0].key_id, note.b64encode(bytes(raw))).line(),
        "another key's signature": ck.sign_checkpoint(ck.Checkpoint(ORIGIN, log.size, log.root()), impostor),
    }
    for what, data in tampered.items():
        refused = _go(notecheck, tmp_path, "verify", verifier.text(), data)
        assert refused.returncode == 1, what
        assert b"notecheck: open:" in refused.stderr and refused.stdout == b"", what
        with pytest.raises(note.NoteSignatureError):
            note.open_note(data, [verifier])


def test_we_open_a_note_go_signed_with_our_key_text(notecheck: Path, log_key, tmp_path: Path) -> None:
    signer, verifier = log_key
    text = ck.Checkpoint(ORIGIN, 5, merkle.leaf_hash(b"x")).body()
    signed = _go(notecheck, tmp_path, "sign", signer.text(), text)
    assert signed.returncode == 0, signed.stderr.decode()
    assert note.open_note(signed.stdout, [verifier]).text == text
    assert signed.stdout == note.sign(text, [signer])  # Ed25519 is deterministic: the same bytes
