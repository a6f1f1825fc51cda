"""The machine a command runs on, as provenance and rebuild records describe it.

Never part of a build manifest: two machines must be able to build the same bits.
"""

from __future__ import annotations

import os
import platform
import socket
from pathlib import Path


def machine_info() -> dict[str, str]:
    """Host name, platform, architecture, core count and (on Linux) the CPU model."""
    info = {
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cores": str(os.cpu_count() or 0),
    }
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return info
