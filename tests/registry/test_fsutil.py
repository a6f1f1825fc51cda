"""Atomic writes: a failed write keeps the old content and leaves no temporary file behind."""

from __future__ import annotations

import pytest

from registry.fsutil import atomic_write_bytes, atomic_writer, temporary_file


class Boom(Exception):
    pass


def test_a_failed_write_keeps_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "entry.yaml"
    atomic_write_bytes(target, b"old\n")
    with pytest.raises(Boom):
        with atomic_writer(target) as f:
            f.write(b"half of the new")
            raise Boom
    assert target.read_bytes() == b"old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["entry.yaml"]
    atomic_write_bytes(target, b"new\n")
    assert target.read_bytes() == b"new\n" and oct(target.stat().st_mode & 0o777) == "0o644"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["entry.yaml"]


def test_a_temporary_file_not_moved_into_place_is_removed(tmp_path):
    with temporary_file(tmp_path / "incoming") as staged:
        staged.file.write(b"x")
        assert staged.path.parent == tmp_path / "incoming" and staged.path.name.startswith(".tmp-")
    assert not staged.path.exists() and list((tmp_path / "incoming").iterdir()) == []
    with temporary_file(tmp_path) as staged:
        staged.file.write(b"kept")
        staged.move_into_place(tmp_path / "object", mode=0o444)
    assert (tmp_path / "object").read_bytes() == b"kept" and not staged.path.exists()
    assert oct((tmp_path / "object").stat().st_mode & 0o777) == "0o444"
