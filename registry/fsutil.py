"""Files that are never half-written, and paths that never leave their root."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import IO

from commonforge.errors import InputError


def fsync_dir(directory: Path) -> None:
    """Make a rename in ``directory`` durable (a no-op where directories can't be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class TemporaryFile:
    """A file being written under a temporary name (see :func:`temporary_file`)."""

    def __init__(self, file: IO, path: Path) -> None:
        self.file = file
        self.path = path
        self.moved = False

    def move_into_place(self, target: Path, *, mode: int) -> None:
        """Make the file durable (close, fsync), give it ``mode`` and rename it onto ``target``.

        The fsync goes through the path, so a file written by name (SQLite writes its own) is
        synced too, whether or not :attr:`file` was closed before.
        """
        self.file.close()
        fd = os.open(self.path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.chmod(self.path, mode)
        os.replace(self.path, target)
        self.moved = True
        fsync_dir(Path(target).parent)


@contextmanager
def temporary_file(directory: Path, prefix: str = ".tmp-", mode: str = "wb") -> Iterator[TemporaryFile]:
    """A new file in ``directory``, open for writing, that the block moves into place or loses.

    Whatever ends the block (success, an error, Ctrl-C), the temporary name is gone afterwards:
    moved onto its target with :meth:`TemporaryFile.move_into_place`, or removed here. Only a
    SIGKILL can leave a ``<prefix>*`` file, never a partial target. ``directory`` must be on the
    target's filesystem, so that the rename is atomic.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=prefix, dir=directory)
    staged = TemporaryFile(os.fdopen(fd, mode), Path(name))
    try:
        yield staged
    finally:
        staged.file.close()
        if not staged.moved:
            staged.path.unlink(missing_ok=True)


@contextmanager
def atomic_writer(path: Path, mode: str = "wb") -> Iterator[IO]:
    """Write to a temporary file beside ``path``; fsync and rename it into place on success.

    On any error (or a kill) the previous content of ``path`` stays intact and the
    temporary file is removed (a SIGKILL leaves a ``.tmp-*`` file, never a partial target).
    """
    path = Path(path)
    with temporary_file(path.parent, f".tmp-{path.name}.", mode) as staged:
        yield staged.file
        staged.move_into_place(path, mode=0o644)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    with atomic_writer(path, "wb") as f:
        f.write(data)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def check_relative_path(value: str, *, what: str = "path") -> str:
    """Validate a path stored in an entry: relative, POSIX, no ``..``, no NUL or backslash."""
    if not value or "\x00" in value or "\\" in value:
        raise ValueError(f"{what} {value!r} is empty or holds a NUL or backslash")
    p = PurePosixPath(value)
    if p.is_absolute() or value.startswith("~"):
        raise ValueError(f"{what} {value!r} is absolute; entries hold paths relative to the repository")
    if any(part == ".." for part in p.parts):
        raise ValueError(f"{what} {value!r} leaves its directory ('..' is not allowed)")
    return value


def resolve_inside(root: Path, relative: str, *, what: str = "path") -> Path:
    """``root / relative`` resolved, refusing anything (symlinks included) that points outside ``root``."""
    try:
        check_relative_path(relative, what=what)
    except ValueError as err:
        raise InputError(str(err), hint="use a relative path inside the repository") from None
    root = root.resolve()
    target = (root / relative).resolve()
    if not target.is_relative_to(root):
        raise InputError(
            f"{what} {relative!r} resolves to {target}, outside {root}",
            hint="entries may not point outside the repository (check for symlinks)",
        )
    return target
