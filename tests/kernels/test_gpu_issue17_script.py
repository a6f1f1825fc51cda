"""The prepared GPU run of issue 17 (benchmarks/gpu_issue17.py), rehearsed on CPU: every step
runs under the Triton interpreter on tiny shapes and writes its rows as it goes; a spent budget
cuts the table off with a row that says so. The GPU figures themselves need a lent GPU."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import load_script

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "benchmarks" / "gpu_issue17.py"


@pytest.fixture(scope="module")
def script():
    yield from load_script(SCRIPT)


def rehearse(tmp_path, *extra, timeout=240):
    out = tmp_path / "out"
    out.mkdir()
    env = dict(os.environ, PYTHONPATH=str(REPO), OUT=str(out))
    env.pop("TRITON_INTERPRET", None)  # the script sets it itself for --rehearse
    proc = subprocess.run([sys.executable, str(SCRIPT), "--rehearse", *extra], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return out, list(csv.DictReader((out / "gpu_issue17_rehearsal.csv").open())), proc.stdout


def test_rehearsal_runs_every_step_and_writes_rows(tmp_path, script):
    out, rows, stdout = rehearse(tmp_path)
    assert rows[0]["impl"] == "copy"
    table = [r for r in rows if r["impl"] in script.IMPLS and r["m"] != "0"]
    assert {(int(r["m"]), r["impl"]) for r in table} == {(m, i) for m in script.REHEARSAL_MS for i in script.IMPLS}
    for r in table:
        assert r["ms"] and "not a GPU figure" in r["note"], r
        assert float(r["max_rel_err"]) < 2e-2, r  # each against the exact product of its own weight
        assert bool(r["config"]) == (r["impl"] in ("int4", "int8")), r
        assert r["device"].startswith("cpu (rehearsal") and r["git_commit"]
    assert rows[-1]["impl"] == "e2e" and "command lines checked" in rows[-1]["note"]
    tuned = json.loads((out / "kernel_tuning.json").read_text())["entries"]
    assert len(tuned) == 2 * len(script.REHEARSAL_MS) and all("|quant_matmul|" in key for key in tuned)
    assert "rehearsal, not a GPU figure" in stdout


def test_spent_budget_cuts_the_table_off_with_a_row(tmp_path):
    _, rows, _ = rehearse(tmp_path, "--budget-s", "0.001")
    assert [r["impl"] for r in rows][-2:] == ["-", "e2e"]
    assert "cut off" in rows[-2]["note"] and "skipped" in rows[-1]["note"]


def test_shortlist_is_small_starts_with_the_heuristic_and_shares_templates(script):
    from kernels import quant_matmul as qm

    for m in (1, 16, 64, 2048):
        lists = [script.shortlist(m, n, k, 4, 132, 3) for n, k in ((4096, 4096), (14336, 4096), (4096, 14336))]
        for (n, k), configs in zip(((4096, 4096), (14336, 4096), (4096, 14336)), lists):
            assert 1 <= len(configs) <= 3 and configs[0] == qm.heuristic_config(m, n, k, 4, 132)
            assert len(set(configs)) == len(configs)
        # beyond split-K, the templates are the same for every shape: compiled kernels are reused
        shapes = [{(c.kernel, c.block_n, c.block_m, c.tiles, c.num_warps, c.k128) for c in cs[1:]} for cs in lists]
        assert len(shapes[0] & shapes[1] & shapes[2]) >= 1
        assert m == 1 or any(c.k128 for c in lists[0]), "the K=128 dot is among what gets measured"


def test_results_go_to_out_on_the_lent_machine(script, tmp_path, monkeypatch):
    monkeypatch.setenv("OUT", str(tmp_path))
    args = script.parse_args([])
    assert args.csv == tmp_path / "gpu_issue17.csv" and args.decode_csv == tmp_path / "gpu_issue17_decode.csv"
    assert args.tuning_cache == tmp_path / "kernel_tuning.json"
    monkeypatch.delenv("OUT")
    assert script.parse_args([]).csv == script.DEFAULT_CSV


def test_refuses_without_cuda_unless_rehearsing(script, capsys, tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("checks the message on machines without CUDA")
    assert script.main(["--csv", str(tmp_path / "x.csv")]) == 2
    assert "no CUDA device" in capsys.readouterr().err and not (tmp_path / "x.csv").exists()
