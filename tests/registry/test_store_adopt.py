"""Store.adopt: a verified file moved into the store without a copy (what a pull's commit does)."""

from __future__ import annotations

import pytest

from commonforge.errors import IntegrityError
from registry.digest import sha256_bytes
from registry.store import Store


def test_a_file_is_adopted_by_rename_and_a_wrong_one_is_refused_and_left(tmp_path):
    store = Store(tmp_path / "store")
    staged = tmp_path / "store-fs" / "blob"
    staged.parent.mkdir()
    staged.write_bytes(b"weights" * 1000)
    digest = sha256_bytes(b"weights" * 1000)
    inode = staged.stat().st_ino
    assert store.adopt(staged, expected=digest) == (digest, 7000)
    target = store.object_path(digest)
    assert target.stat().st_ino == inode and not staged.exists()  # moved, not copied
    assert store.verify(digest) and target.stat().st_mode & 0o777 == 0o444
    wrong = tmp_path / "wrong"
    wrong.write_bytes(b"not the weights")
    with pytest.raises(IntegrityError):
        store.adopt(wrong, expected=digest)
    assert wrong.read_bytes() == b"not the weights"
    again = tmp_path / "again"
    again.write_bytes(b"weights" * 1000)
    assert store.adopt(again, expected=digest) == (digest, 7000) and not again.exists()  # already stored
