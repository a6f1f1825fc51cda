"""sha256 of files, bytes and canonical JSON: the forge's identities.

The canonical JSON of a value is ``json.dumps`` with sorted keys, no insignificant
whitespace, UTF-8 (not ASCII escapes) and no NaN. It is defined per schema version: a
change here is a new schema version, never a silent change of existing digests (the golden
test in tests/registry pins it).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

CHUNK = 1 << 20  # 1 MiB reads: large enough to hash at disk speed, small enough to stream
SHA256_RE = r"^[0-9a-f]{64}$"


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def canonical_json(value: Any) -> bytes:
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def canonical_digest(value: Any) -> str:
    return sha256_bytes(canonical_json(value))
