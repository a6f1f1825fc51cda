"""The content-addressed store: verified reads, atomic writes, concurrent and killed writers."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest

from commonforge.errors import InputError, IntegrityError, NotFoundError
from registry import Store
from registry.schema import BuildManifest
from tests.helpers import REPO, sample


def test_put_and_read_back(tmp_path):
    store = Store(tmp_path)
    data = os.urandom(3 * (1 << 20) + 17)  # spans several hashing chunks
    digest, size = store.put_bytes(data)
    assert digest == hashlib.sha256(data).hexdigest() and size == len(data)
    path = store.path(digest)
    assert path.relative_to(tmp_path).parts[:3] == ("sha256", digest[:2], digest[2:4])
    assert path.read_bytes() == data
    assert oct(path.stat().st_mode & 0o777) == "0o444"
    with store.open(digest) as f:
        assert f.read() == data
    # Idempotent.
    assert store.put_bytes(data) == (digest, size)


def test_expected_digest_mismatch_stores_nothing(tmp_path):
    store = Store(tmp_path)
    with pytest.raises(IntegrityError) as info:
        store.put_bytes(b"hello", expected="0" * 64)
    assert "expected sha256 " + "0" * 64 in str(info.value)
    assert hashlib.sha256(b"hello").hexdigest() in str(info.value)
    assert not any(p.is_file() for p in (tmp_path / "sha256").rglob("*"))


class Broken:
    name = "broken stream"

    def __init__(self):
        self.n = 0

    def read(self, size):
        self.n += 1
        if self.n == 3:
            raise OSError("the connection dropped")
        return b"y" * size


def test_a_stream_that_fails_mid_copy_stores_nothing_and_leaves_no_temporary(tmp_path):
    store = Store(tmp_path)
    with pytest.raises(OSError, match="connection dropped"):
        store.put_stream(Broken())
    assert not any(p.is_file() for p in (tmp_path / "sha256").rglob("*"))
    assert store.clean_temporaries() == 0


def test_tampered_object_is_caught(tmp_path):
    store = Store(tmp_path)
    digest, _ = store.put_bytes(b"weights" * 1000)
    path = store.object_path(digest)
    os.chmod(path, 0o644)
    path.write_bytes(b"evil" * 1000)
    with pytest.raises(IntegrityError) as info:
        store.path(digest, what="model.safetensors")
    assert "model.safetensors" in str(info.value) and digest in str(info.value)
    assert not store.verify(digest)


def test_missing_object_and_bad_digest(tmp_path):
    store = Store(tmp_path)
    with pytest.raises(NotFoundError):
        store.path("c" * 64)
    with pytest.raises(InputError):
        store.path("../../etc/passwd")


def test_verify_release_reports_each_artifact(tmp_path):
    store = Store(tmp_path)
    good, size = store.put_bytes(b"good")
    m = sample("manifest")
    m["artifacts"] = [
        {"path": "model.safetensors", "sha256": good, "size": size, "stage": "train"},
        {"path": "tokenizer.json", "sha256": "d" * 64, "size": 1, "stage": "tokenizer"},
    ]
    checks = store.verify_release(BuildManifest.model_validate(m))
    assert [c.status for c in checks] == ["ok", "missing"]


def _write(args):
    root, data = args
    return Store(Path(root)).put_bytes(data)[0]


def test_concurrent_writers_of_the_same_object(tmp_path):
    data = os.urandom(4 << 20)
    with ProcessPoolExecutor(max_workers=4) as pool:
        digests = list(pool.map(_write, [(str(tmp_path), data)] * 8))
    assert set(digests) == {hashlib.sha256(data).hexdigest()}
    store = Store(tmp_path)
    assert store.path(digests[0]).read_bytes() == data
    assert not list((tmp_path / "sha256" / "incoming").glob(".tmp-*"))


SLOW_WRITER = """
import sys, time
from registry import Store

class Slow:
    name = "slow stream"
    def __init__(self):
        self.n = 0
    def read(self, size):
        self.n += 1
        if self.n == 3:
            print("writing", flush=True)
        time.sleep(0.05)
        return b"x" * size  # never ends: the parent kills us mid-write

Store(sys.argv[1]).put_stream(Slow())
"""


def test_a_writer_killed_mid_write_leaves_the_store_valid(tmp_path):
    store = Store(tmp_path)
    before, _ = store.put_bytes(b"already here")
    proc = subprocess.Popen([sys.executable, "-c", SLOW_WRITER, str(tmp_path)], cwd=REPO,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "writing"
    time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    # Every object in the store still hashes to its name; only a temporary file is left.
    objects = [p for p in (tmp_path / "sha256").rglob("*") if p.is_file() and not p.name.startswith(".tmp-")]
    assert [p.name for p in objects] == [before]
    assert all(store.verify(p.name) for p in objects)
    assert store.clean_temporaries() == 1
