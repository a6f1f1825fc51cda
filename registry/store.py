"""A content-addressed artifact store: every object is named by its sha256.

    <store>/sha256/ab/cd/abcd1234...      read-only object (mode 0444)

Writes hash while copying into a temporary file in the object's own directory, fsync it,
and rename it into place, so a crash (even SIGKILL) mid-write leaves no partial object:
at worst a ``.tmp-*`` file that :meth:`Store.clean_temporaries` removes. Two writers of
the same object race harmlessly: both rename identical bytes onto the same name.
Reads verify: :meth:`Store.path` and :meth:`Store.open` re-hash the object first and
refuse content that does not match its name.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, BinaryIO

from commonforge.errors import InputError, IntegrityError, NotFoundError
from registry.digest import CHUNK, sha256_file
from registry.fsutil import fsync_dir, resolve_inside, temporary_file
from registry.schema import Artifact, BuildManifest

_DIGEST = re.compile(r"^[0-9a-f]{64}$")


def _check_digest(digest: str) -> str:
    if not isinstance(digest, str) or not _DIGEST.match(digest):
        raise InputError(f"{digest!r} is not a sha256 hex digest", hint="digests are 64 lowercase hex characters")
    return digest


@dataclass(frozen=True)
class ArtifactCheck:
    artifact: Artifact
    status: str  # "ok" | "missing" | "corrupt"
    actual: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"


class Store:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def object_path(self, digest: str) -> Path:
        _check_digest(digest)
        return self.root / "sha256" / digest[:2] / digest[2:4] / digest

    def has(self, digest: str) -> bool:
        return self.object_path(digest).is_file()

    # --- writing ------------------------------------------------------------------------

    def put_stream(self, stream: BinaryIO, *, expected: str | None = None) -> tuple[str, int]:
        """Copy ``stream`` into the store, hashing as it goes; returns (sha256, size).

        With ``expected``, content that hashes differently is refused and nothing is stored.
        """
        if expected is not None:
            _check_digest(expected)
        h, size = hashlib.sha256(), 0
        with temporary_file(self.root / "sha256" / "incoming") as staged:
            while chunk := stream.read(CHUNK):
                h.update(chunk)
                staged.file.write(chunk)
                size += len(chunk)
            digest = h.hexdigest()
            if expected is not None and digest != expected:
                raise IntegrityError(getattr(stream, "name", "stream"), expected, digest)
            target = self.object_path(digest)
            if target.is_file() and sha256_file(target) == digest:
                return digest, size  # already stored: the temporary file goes
            target.parent.mkdir(parents=True, exist_ok=True)
            # Same filesystem (staging is inside the store): the rename is atomic.
            staged.move_into_place(target, mode=0o444)
        return digest, size

    def put_file(self, path: Path, *, expected: str | None = None) -> tuple[str, int]:
        with open(path, "rb") as f:
            return self.put_stream(f, expected=expected)

    def adopt(self, path: Path, *, expected: str) -> tuple[str, int]:
        """Move the file ``path`` into the store as the object ``expected``, after hashing it where it
        is: no copy when it is on the store's file system (a pull's staged download), else
        :meth:`put_file`. Content that hashes differently is refused and left where it was."""
        _check_digest(expected)
        path = Path(path)
        h, size = hashlib.sha256(), 0
        with open(path, "rb") as f:
            while chunk := f.read(CHUNK):
                h.update(chunk)
                size += len(chunk)
            os.fsync(f.fileno())
        if h.hexdigest() != expected:
            raise IntegrityError(str(path), expected, h.hexdigest())
        target = self.object_path(expected)
        if target.is_file() and sha256_file(target) == expected:
            path.unlink()
            return expected, size
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.chmod(path, 0o444)
            os.rename(path, target)  # atomic on one file system
        except OSError as err:
            if err.errno != errno.EXDEV:
                raise
            return self.put_file(path, expected=expected)
        fsync_dir(target.parent)
        return expected, size

    def put_bytes(self, data: bytes, *, expected: str | None = None) -> tuple[str, int]:
        import io

        return self.put_stream(io.BytesIO(data), expected=expected)

    # --- reading ------------------------------------------------------------------------

    def path(self, digest: str, *, verify: bool = True, what: str | None = None) -> Path:
        """The object's path, after checking that its content still hashes to ``digest``."""
        target = self.object_path(digest)
        if not target.is_file():
            raise NotFoundError(
                f"object {digest} ({what or 'artifact'}) in the store {self.root}",
                hint="fetch it again: `commonforge build` (rebuild), a DVC pull or a peer",
            )
        if verify:
            actual = sha256_file(target)
            if actual != digest:
                raise IntegrityError(f"{what or 'store object'} ({target})", digest, actual)
        return target

    def open(self, digest: str, *, what: str | None = None) -> IO[bytes]:
        return open(self.path(digest, what=what), "rb")

    def verify(self, digest: str) -> bool:
        try:
            self.path(digest)
        except (NotFoundError, IntegrityError):
            return False
        return True

    def check_artifacts(self, artifacts: Iterable[Artifact]) -> list[ArtifactCheck]:
        """Re-hash each artifact's object; never raises for missing or corrupt ones."""
        checks = []
        for a in artifacts:
            target = self.object_path(a.sha256)
            if not target.is_file():
                checks.append(ArtifactCheck(a, "missing"))
                continue
            actual = sha256_file(target)
            checks.append(ArtifactCheck(a, "ok" if actual == a.sha256 else "corrupt", actual))
        return checks

    def verify_release(self, manifest: BuildManifest) -> list[ArtifactCheck]:
        return self.check_artifacts(manifest.artifacts)

    def materialize(self, manifest: BuildManifest, dest: Path, *, variant: str | None = None) -> Path:
        """Lay a release's artifacts out as files under ``dest`` (verified; hard links where possible).

        ``variant=None`` gives the full-precision files; a variant name its files with the
        shared ones (tokenizer).
        """
        dest.mkdir(parents=True, exist_ok=True)
        for a in manifest.artifacts:
            if a.variant not in (None, variant):
                continue
            src = self.path(a.sha256, what=a.path)
            target = resolve_inside(dest, a.path, what="artifact path")
            target.parent.mkdir(parents=True, exist_ok=True)
            if target.exists():
                if sha256_file(target) == a.sha256:
                    continue
                target.unlink()
            try:
                os.link(src, target)
            except OSError:
                shutil.copyfile(src, target)
        return dest

    def clean_temporaries(self) -> int:
        """Remove temporary files left by killed writers; returns how many."""
        staging = self.root / "sha256" / "incoming"
        n = 0
        if staging.is_dir():
            for p in staging.glob(".tmp-*"):
                p.unlink(missing_ok=True)
                n += 1
        return n
