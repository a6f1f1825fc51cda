"""The benchmark script's CPU-free parts: it imports, parses arguments, writes CSV, and refuses
to run without CUDA. (The benchmark itself is a script for a GPU, never run as a test.)"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

from tests.helpers import load_script

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_quant_matmul.py"


@pytest.fixture(scope="module")
def bench():
    yield from load_script(SCRIPT)


def test_parse_args(bench):
    args = bench.parse_args([])
    assert args.m == [1, 16, 32, 64, 256, 2048] and args.shapes == ["llama2-7b", "llama3-8b", "square"]
    args = bench.parse_args(["--shapes", "llama3-8b", "--m", "1,16", "--impls", "fp16,int4"])
    assert (args.shapes, args.m, args.impls) == (["llama3-8b"], [1, 16], ["fp16", "int4"])
    for bad in (["--m", "0"], ["--m", "x"], ["--shapes", "gpt5"], ["--impls", "int4"], ["--impls", "fp16,foo"]):
        with pytest.raises(SystemExit):
            bench.parse_args(bad)
    assert (4096, 14336) in bench.SHAPES["llama3-8b"] and (12288, 4096) in bench.SHAPES["llama2-7b"]


def test_rows_are_appended_with_one_header(bench, tmp_path):
    path = tmp_path / "results" / "quant_matmul.csv"
    env = dict(timestamp="2026-01-01T00:00:00+00:00", git_commit="abc", device="GPU", torch="2.11", triton="3.6")
    row = bench.Row("llama3-8b", 4096, 4096, 1, "int4", 0.005, bench.bytes_moved("int4", 1, 4096, 4096), 1e-3)
    rec = bench.csv_record(row, env, copy_gbps=3000.0, fp16_ms=0.017, tinygemm_ms=0.0085)
    bench.append_rows(path, [rec])
    bench.append_rows(path, [rec])
    lines = list(csv.DictReader(path.open()))
    assert len(lines) == 2 and path.read_text().count("timestamp") == 1
    assert lines[0]["speedup_vs_fp16"] == "3.400" and lines[0]["speedup_vs_tinygemm"] == "1.700"
    assert float(lines[0]["frac_copy_bw"]) == pytest.approx(row.bytes_moved / 5e-6 / 1e9 / 3000, abs=1e-3)
    assert lines[0]["device"] == "GPU" and lines[0]["git_commit"] == "abc"


def test_target_check(bench):
    rows = [bench.Row("s", 4096, 4096, 1, "fp16", 0.017, bench.bytes_moved("fp16", 1, 4096, 4096)),
            bench.Row("s", 4096, 4096, 1, "int4", 0.0045, bench.bytes_moved("int4", 1, 4096, 4096))]
    lines = bench.check_targets(rows, copy_gbps=2200.0)
    assert any("int4 M=1: worst 3.78x" in line and "PASS" in line for line in lines)
    assert any("of copy bandwidth" in line for line in lines)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on machines without CUDA")
def test_exits_clearly_without_cuda(bench, capsys, tmp_path):
    assert bench.main(["--csv", str(tmp_path / "x.csv")]) == 2
    assert "no CUDA device" in capsys.readouterr().err
    assert not (tmp_path / "x.csv").exists()
