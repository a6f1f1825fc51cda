"""What every benchmark records with its numbers: the git commit, and rows appended to a CSV.

Results from different machines and commits sit side by side in one file per benchmark under
``benchmarks/results/``; a row names the commit it measured (``+dirty`` when tracked files had
uncommitted changes, so such numbers are never mistaken for a commit's).
"""

from __future__ import annotations

import csv
import os
import subprocess
from collections.abc import Iterable, Mapping
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def git_commit(root: Path = REPO) -> str:
    """The short commit of ``root``'s HEAD, with ``+dirty`` for uncommitted changes; ``unknown`` outside git."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True,
                              timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    if head.returncode != 0:
        return "unknown"
    return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def append_rows(path: Path, fields: list[str], rows: Iterable[Mapping]) -> None:
    """Append ``rows`` (missing fields left empty) to the CSV at ``path``; a new or empty file gets the header."""
    path.parent.mkdir(parents=True, exist_ok=True)
    new = not path.exists() or path.stat().st_size == 0
    with open(path, "a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        if new:
            writer.writeheader()
        for row in rows:
            writer.writerow({k: row.get(k, "") for k in fields})
        f.flush()
        os.fsync(f.fileno())
