"""The decode benchmark's CPU-free parts: arguments, CSV rows, and GPU mode refusing without CUDA.
(The benchmark itself is a script, never run as a test.)"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

from tests.helpers import load_script

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_decode.py"


@pytest.fixture(scope="module")
def bench():
    yield from load_script(SCRIPT)


def test_parse_args(bench):
    args = bench.parse_args([])
    assert (args.batch, args.new_tokens, args.impls) == ([1, 16], 256, list(bench.IMPLS))
    args = bench.parse_args(["--cpu", "forge-tiny"])
    assert (args.batch, args.new_tokens) == ([1, 4], 128)
    args = bench.parse_args(["--impls", "hf-fp16,ours-int4", "--batch", "1,8"])
    assert (args.impls, args.batch) == (["hf-fp16", "ours-int4"], [1, 8])
    for bad in (["--batch", "0"], ["--batch", "x"], ["--impls", "ours-int3"], ["--new-tokens", "1"]):
        with pytest.raises(SystemExit):
            bench.parse_args(bad)


def test_rows_and_rates(bench, tmp_path):
    assert bench.decode_rate(16, 257, 3.0, 0.5) == pytest.approx(16 * 256 / 2.5)
    env = dict(timestamp="2026-01-01T00:00:00+00:00", git_commit="abc", device="GPU", torch="2.13", transformers="5")
    row = bench._row(env, "gpu", "llama2-7b-shape", "ours-int4", 1, 128, 256, 150.0, 40.0, "cuda graphs")
    path = tmp_path / "decode.csv"
    bench.append_rows(path, [row])
    bench.append_rows(path, [row])
    lines = list(csv.DictReader(path.open()))
    assert len(lines) == 2 and lines[0]["speedup_vs_hf"] == "3.75" and lines[0]["ms_per_step"] == "6.667"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal without CUDA")
def test_gpu_mode_refuses_without_cuda(bench, capsys):
    assert bench.main(["--batch", "1"]) == 2
    assert "CUDA" in capsys.readouterr().err
