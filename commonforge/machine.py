"""The machine a command runs on, as provenance and rebuild records describe it.

Never part of a build manifest: two machines must be able to build the same bits.
"""

from __future__ import annotations

import os
import platform
import socket
from pathlib import Path

# The vector extensions that decide the CPU paths' speed: one "AMD EPYC" is AVX2-only, another has
# AVX-512 with bf16, and torch's int4/bf16 ops differ several-fold between them.
VECTOR_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16")


def _cpuinfo() -> tuple[str | None, set[str]]:
    """The first CPU's model name and flags from /proc/cpuinfo (None and nothing where it is absent)."""
    name: str | None = None
    flags: set[str] = set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and name is None:
                name = line.split(":", 1)[1].strip()
            elif line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
            if name is not None and flags:
                break
    except OSError:
        pass
    return name, flags


def vector_extensions() -> list[str]:
    """Which of VECTOR_FLAGS this CPU reports, in that order."""
    return [f for f in VECTOR_FLAGS if f in _cpuinfo()[1]]


def machine_info() -> dict[str, str]:
    """Host name, platform, architecture, core count and (on Linux) the CPU model."""
    info = {
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cores": str(os.cpu_count() or 0),
    }
    name, _ = _cpuinfo()
    if name is not None:
        info["cpu"] = name
    return info
