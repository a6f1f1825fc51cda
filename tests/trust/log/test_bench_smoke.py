"""The log-scale benchmark runs at a tiny size and records what it measured, sizes exact."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest

from tests.helpers import load_script

SCRIPT = Path(__file__).resolve().parents[3] / "benchmarks" / "log_scale.py"


@pytest.fixture(scope="module")
def bench():
    yield from load_script(SCRIPT)


def test_a_tiny_run_writes_one_row_per_size(bench, tmp_path, capsys):
    out = tmp_path / "scale.csv"
    bench.main(["--max-entries", "2000", "--batch", "500", "--samples", "20", "--entry-bytes", "600",
                "--dir", str(tmp_path / "log"), "--csv", str(out)])
    rows = list(csv.DictReader(out.open()))
    assert list(rows[0]) == bench.FIELDS
    assert [int(r["entries"]) for r in rows] == [1000, 2000]
    for r in rows:
        n = int(r["entries"])
        assert all(r[f] != "" for f in bench.FIELDS), [f for f in bench.FIELDS if r[f] == ""]
        assert int(r["appends"]) == n // 500 and float(r["append_s"]) > 0 and int(r["entries_per_s"]) > 0
        # Full bundles and full level-0 tiles only (everything else is partial), exactly sized.
        assert int(r["bundle_bytes"]) == (n // 256) * 256 * (2 + 600)
        assert int(r["tile_bytes"]) == (n // 256) * 256 * 32
        assert int(r["partial_bytes"]) > 0 and int(r["checkpoint_bytes"]) > 0
        # RFC 9162: an audit path is at most ceil(log2 n) hashes, and a random sample hits the bound.
        assert int(r["log2_ceil"]) == math.ceil(math.log2(n))
        assert int(r["incl_hashes_max"]) == int(r["log2_ceil"])
        assert int(r["incl_bytes_max"]) == 32 * int(r["incl_hashes_max"])
        assert 0 < int(r["cons_half_hashes"]) <= int(r["cons_hashes_max"]) <= int(r["log2_ceil"]) + 1
        assert float(r["incl_verify_us"]) > 0 and float(r["cons_verify_us"]) > 0 and float(r["checkpoint_open_us"]) > 0
    assert int(rows[1]["incl_hashes_max"]) == int(rows[0]["incl_hashes_max"]) + 1  # doubling adds one hash
    assert (tmp_path / "log" / "checkpoint").exists()  # --dir is kept
    assert "2 rows appended" in capsys.readouterr().out


def test_bad_arguments_are_refused(bench, tmp_path):
    for argv in (["--max-entries", "0"], ["--entry-bytes", "70000"]):
        with pytest.raises(SystemExit) as exc:
            bench.main([*argv, "--csv", str(tmp_path / "x.csv")])
        assert exc.value.code == 2
    assert not (tmp_path / "x.csv").exists()
