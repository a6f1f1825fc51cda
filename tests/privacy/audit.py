"""Run commands under the socket audit (see audit/sitecustomize.py) and read what it saw."""

from __future__ import annotations

import json
import os
from pathlib import Path

AUDIT_SITE = Path(__file__).resolve().parent / "audit"


def audited_env(env: dict[str, str], audit_dir: Path) -> dict[str, str]:
    audit_dir.mkdir(parents=True, exist_ok=True)
    out = dict(env)
    out["FORGE_AUDIT_DIR"] = str(audit_dir)
    out["PYTHONPATH"] = os.pathsep.join(filter(None, [str(AUDIT_SITE), env.get("PYTHONPATH")]))
    return out


def _read(audit_dir: Path, kind: str) -> list[dict]:
    out = []
    for p in sorted(audit_dir.glob(f"{kind}-*.jsonl")):
        out += [json.loads(line) for line in p.read_text().splitlines() if line.strip()]
    return out


def connects(audit_dir: Path) -> list[dict]:
    """Every loopback connection a process made (recorded when FORGE_AUDIT_ALL=1)."""
    return _read(audit_dir, "connect")


def violations(audit_dir: Path) -> list[dict]:
    return _read(audit_dir, "violation")


def processes(audit_dir: Path) -> list[dict]:
    return _read(audit_dir, "process")


def unprotected_processes(audit_dir: Path) -> list[dict]:
    """Processes that neither inherited nor set the privacy variables (by pid record pairs)."""
    by_pid: dict[str, list[dict]] = {}
    for p in sorted(audit_dir.glob("process-*.jsonl")):
        by_pid[p.stem] = [json.loads(line) for line in p.read_text().splitlines() if line.strip()]
    bad = []
    for records in by_pid.values():
        if not any(r["env"].get("HF_HUB_OFFLINE") == "1" and r["env"].get("DVC_NO_ANALYTICS") == "1"
                   and r["env"].get("MLFLOW_DISABLE_TELEMETRY") == "true" and r["env"].get("DO_NOT_TRACK") == "1"
                   for r in records):
            bad.append(records[0])
    return bad
