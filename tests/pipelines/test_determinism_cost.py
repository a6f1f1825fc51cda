"""The determinism-cost benchmark runs both modes in fresh processes and records what ATen chose."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from tests.helpers import load_script

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "determinism_cost.py"


@pytest.fixture(scope="module")
def bench():
    yield from load_script(SCRIPT)


@pytest.mark.slow  # trains forge-small's step in fresh processes, pinned and unpinned
def test_both_modes_are_measured_and_written(bench, tmp_path, capsys):
    out = tmp_path / "cost.csv"
    bench.main(["--recipe", "recipe/forge-tiny@1", "--steps", "2", "--rounds", "1", "--csv", str(out)])
    rows = list(csv.DictReader(out.open()))
    assert [r["mode"] for r in rows] == ["pinned", "unpinned"]
    # The pinned run never takes ATen's AVX-512 path, whatever the CPU has.
    assert rows[0]["isa"] and "512" not in rows[0]["isa"]
    assert all(float(r["median_step_s"]) > 0 and int(r["tokens_per_s"]) > 0 for r in rows)
    assert rows[0]["cost_vs_unpinned"].startswith(("+", "-")) and rows[1]["cost_vs_unpinned"] == ""
    assert "the pins cost" in capsys.readouterr().out


def test_bad_arguments_are_refused(bench, tmp_path):
    with pytest.raises(SystemExit) as exc:
        bench.main(["--steps", "0", "--csv", str(tmp_path / "x.csv")])
    assert exc.value.code == 2 and not (tmp_path / "x.csv").exists()
