"""The one byte formatter: binary units for the terminal and the explorer, decimal for the cards."""

from __future__ import annotations

import pytest

from commonforge.units import human_bytes


@pytest.mark.parametrize("n, binary, si", [
    (0, "0 B", "0 B"),
    (999, "999 B", "999 B"),
    (1000, "1000 B", "1.00 kB"),
    (1023, "1023 B", "1.02 kB"),
    (1024, "1.0 KiB", "1.02 kB"),
    (2626216, "2.5 MiB", "2.63 MB"),
    (4_020_000, "3.8 MiB", "4.02 MB"),
    (3 << 30, "3.0 GiB", "3.22 GB"),
    (5 << 40, "5.0 TiB", "5.50 TB"),
    (7 << 50, "7168.0 TiB", "7881.30 TB"),  # the largest unit keeps counting
])
def test_binary_and_decimal_units(n, binary, si):
    assert human_bytes(n) == binary
    assert human_bytes(n, si=True) == si


def test_missing_sizes_say_so():
    assert human_bytes(None) == "–"
    assert human_bytes(None, si=True, missing="unknown") == "unknown"


def test_decimal_sizes_round_as_the_published_cards_do():
    # The cards wrote f"{n / 1e6:.2f} MB" (model_cards.text.size); the same float, so the same digits.
    for n in (1_005_000, 1_015_000, 2_675_000, 999_995, 123_456_789, 9_999_999_999):
        scale, unit = next((s, u) for s, u in ((1e9, "GB"), (1e6, "MB"), (1e3, "kB")) if n >= s)
        assert human_bytes(n, si=True) == f"{n / scale:.2f} {unit}"
    assert human_bytes(1.5 * 1024**3) == "1.5 GiB"
