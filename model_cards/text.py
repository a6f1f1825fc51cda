"""Formatting shared by the card contexts: numbers, sizes, times and markdown tables.

Every formatter turns a missing value into a word ("unknown", "n/a"), never an empty
string or "None", so no table cell of a card is ever blank.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from commonforge.units import human_bytes

UNKNOWN = "unknown"
NA = "n/a"


def integer(n: int | None) -> str:
    return UNKNOWN if n is None else f"{int(n):,}"


def count(n: int | None) -> str:
    """A parameter or token count: exact, with a short form (656,000 = 0.66 M)."""
    if n is None:
        return UNKNOWN
    if n >= 1_000_000_000:
        return f"{n:,} ({n / 1e9:.2f} B)"
    if n >= 10_000:
        return f"{n:,} ({n / 1e6:.2f} M)"
    return f"{n:,}"


def size(n: int | float | None) -> str:
    """Bytes in decimal units, as the datasheets write them (4.02 MB)."""
    return human_bytes(n, si=True, missing=UNKNOWN)


def seconds(s: float | None) -> str:
    if s is None:
        return UNKNOWN
    if s < 120:
        return f"{s:.1f} s"
    minutes, rest = divmod(round(s), 60)
    if minutes < 120:
        return f"{minutes} min {rest} s"
    return f"{minutes // 60} h {minutes % 60} min"


def number(v: float | None, digits: int = 4) -> str:
    return NA if v is None else f"{v:.{digits}f}"


def share(part: float, whole: float) -> str:
    return NA if not whole else f"{100 * part / whole:.1f}%"


def cell(value: object) -> str:
    """A markdown table cell: never empty, no raw pipes or line breaks."""
    text = NA if value is None else " ".join(str(value).split())
    return text.replace("|", "\\|") or NA


def paragraph(text: str | None) -> str:
    """Folded YAML prose as one paragraph (entries wrap their lines; markdown would too)."""
    return " ".join((text or "").split())


Row = tuple[str, ...]


@dataclass(frozen=True)
class Table:
    """A markdown table whose cells are already formatted (never empty: see :func:`cell`)."""

    header: Row
    rows: list[Row]

    @classmethod
    def of(cls, header: Sequence[str], rows: Sequence[Sequence[object]]) -> Table:
        return cls(tuple(header), [tuple(cell(c) for c in r) for r in rows])

    def markdown(self) -> str:
        lines = ["| " + " | ".join(self.header) + " |", "|" + "---|" * len(self.header)]
        lines += ["| " + " | ".join(r) + " |" for r in self.rows]
        return "\n".join(lines)
