"""Socket audit for the privacy tests: put this folder on PYTHONPATH and set FORGE_AUDIT_DIR.

Every Python process that starts with it (the CLI, DVC, each stage, Streamlit, uvicorn...)
installs an audit hook that blocks and records any connection or DNS lookup that is not
for the loopback interface or a local socket, and records which privacy variables the
process saw. Tests read the records and fail on any violation.
"""

import json
import os
import sys

_DIR = os.environ.get("FORGE_AUDIT_DIR")
_PRIVACY_VARS = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "MLFLOW_DISABLE_TELEMETRY",
                 "DVC_NO_ANALYTICS", "DO_NOT_TRACK", "STREAMLIT_BROWSER_GATHER_USAGE_STATS")
_LOCAL = ("127.", "::1", "localhost", "0.0.0.0", "::ffff:127.")
_ALL = os.environ.get("FORGE_AUDIT_ALL") == "1"


def _is_local(host) -> bool:
    if host is None:
        return True
    if isinstance(host, bytes):
        host = host.decode(errors="replace")
    host = str(host)
    return host == "" or host.startswith(_LOCAL) or host == "::"


def _record(kind: str, payload: dict) -> None:
    path = os.path.join(_DIR, f"{kind}-{os.getpid()}.jsonl")
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(payload) + "\n")


def _hook(event, args):
    if event == "socket.connect":
        sock, address = args
        if isinstance(address, (str, bytes)):
            return  # AF_UNIX
        host = address[0] if isinstance(address, tuple) and address else address
    elif event == "socket.getaddrinfo":
        host = args[0]
    elif event == "socket.sendto":
        address = args[1]
        host = address[0] if isinstance(address, tuple) and address else None
    else:
        return
    if _is_local(host):
        if _ALL and event == "socket.connect":  # FORGE_AUDIT_ALL: which local ports were dialled, too
            _record("connect", {"host": str(host), "port": address[1] if isinstance(address, tuple) else None,
                                "argv": sys.argv[:4]})
        return
    _record("violation", {"event": event, "host": str(host), "argv": sys.argv[:4]})
    raise PermissionError(f"commonforge privacy audit: blocked {event} to {host}")


def _record_env(when: str) -> None:
    _record("process", {"when": when, "argv": sys.argv[:4], "env": {k: os.environ.get(k) for k in _PRIVACY_VARS}})


if _DIR:
    import atexit

    # At start: what the process inherited (children must inherit the privacy variables);
    # at exit: what it set for itself (the top-level command sets them).
    _record_env("start")
    atexit.register(_record_env, "exit")
    sys.addaudithook(_hook)
