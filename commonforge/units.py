"""Sizes for people to read: the one byte formatter of the terminal, the explorer and the cards.

    human_bytes(2626216)                               '2.5 MiB'   (the CLI, the explorer)
    human_bytes(4_020_000, si=True, missing="unknown")  '4.02 MB'   (the cards, as datasheets write sizes)

Ground floor (no imports): every layer may use it.
"""

from __future__ import annotations

BINARY_UNITS = ("B", "KiB", "MiB", "GiB", "TiB")
SI_UNITS = ("B", "kB", "MB", "GB", "TB")


def human_bytes(n: int | float | None, *, si: bool = False, missing: str = "–") -> str:
    """``n`` bytes in the largest unit it reaches: binary (1024, one decimal) or, with ``si``, decimal
    (1000, two decimals); whole bytes below the first unit; ``missing`` for None."""
    if n is None:
        return missing
    base, units, digits = (1000, SI_UNITS, 2) if si else (1024, BINARY_UNITS, 1)
    k = 0
    while k + 1 < len(units) and abs(n) >= base ** (k + 1):
        k += 1
    if k == 0:
        return f"{n:.0f} B"
    # One division by the unit's scale (not k divisions by the base): the same float, and so
    # the same rounding, as dividing by 1e6 directly.
    return f"{n / base ** k:.{digits}f} {units[k]}"
