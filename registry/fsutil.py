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


@contextmanager
def atomic_writer(path: Path, mode: str = "wb") -> Iterator[IO]:
    """Write to a temporary file beside ``path``; fsync and rename it into place on success.

    On any error (or a kill) the previous content of ``path`` stays intact and the
    temporary file is removed (a SIGKILL leaves a ``.tmp-*`` file, never a partial target).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".tmp-{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


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
