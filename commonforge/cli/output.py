"""Terminal output helpers shared by the command modules (rich, imported lazily by them)."""

from __future__ import annotations

import sys

from rich.console import Console
from rich.table import Table

from commonforge.settings import output_columns
from commonforge.units import human_bytes as human_bytes  # the command modules import it from here


def console(stderr: bool = False) -> Console:
    stream = sys.stderr if stderr else sys.stdout
    # Pipes and CI logs get wide lines so digests are never wrapped mid-hash.
    width = None if stream.isatty() else output_columns()
    return Console(file=stream, width=width, highlight=False, soft_wrap=False)


def table(title: str | None, *columns: str) -> Table:
    t = Table(title=title, title_justify="left", show_lines=False, header_style="bold")
    for c in columns:
        t.add_column(c, overflow="fold")
    return t


def short(digest: str | None, n: int = 12) -> str:
    return digest[:n] if digest else "-"
