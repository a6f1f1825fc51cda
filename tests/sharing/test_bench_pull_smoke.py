"""The pull-throughput benchmark runs at a tiny size (2 MB, real peers, a real seeder, real pulls)
and records one row per method, with the pull phases adding up to the pull's total."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from tests.helpers import load_script

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "pull_throughput.py"


@pytest.fixture(scope="module")
def bench():
    yield from load_script(SCRIPT)


def test_a_tiny_run_writes_one_row_per_method(bench, tmp_path, capsys) -> None:
    out = tmp_path / "pull.csv"
    bench.main(["--model-mb", "1.8", "--other-mb", "0.2", "--reps", "1", "--warmup", "0", "--work",
                str(tmp_path / "work"), "--csv", str(out)])
    rows = list(csv.DictReader(out.open()))
    assert list(rows[0]) == bench.FIELDS
    assert [r["method"] for r in rows] == bench.METHODS
    for r in rows:
        assert int(r["bytes"]) == 2_000_000 and int(r["files"]) == 2 and int(r["reps"]) == 1
        assert float(r["median_s"]) > 0 and float(r["mb_s"]) > 0 and float(r["sha256_s"]) > 0
        assert float(r["min_s"]) <= float(r["median_s"]) <= float(r["max_s"])
        if r["method"].startswith("pull"):
            phases = [float(r[f"{p}_s"]) for p in bench.PHASES]
            assert all(p >= 0 for p in phases) and float(r["transfer_s"]) > 0, r
            assert sum(phases) == pytest.approx(float(r["median_s"]), rel=0.05), r  # medians of a single run
            assert 0 < float(r["verify_share"]) < 1
        else:
            assert r["verify_share"] == "" and r["transfer_s"] == ""
    assert {r["peers"] for r in rows if r["method"].startswith("pull")} == {"1", "3"}
    assert not list((tmp_path / "work").iterdir())  # every destination and the forge are deleted
    assert "5 rows appended" in capsys.readouterr().out


def test_bad_arguments_are_refused(bench, tmp_path) -> None:
    for argv in (["--reps", "0"], ["--model-mb", "0"]):
        with pytest.raises(SystemExit) as exc:
            bench.main([*argv, "--csv", str(tmp_path / "x.csv")])
        assert exc.value.code == 2
    assert not (tmp_path / "x.csv").exists()
