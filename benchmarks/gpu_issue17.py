"""Issue 17, part 4: the one prepared run for a lent H100/H200 (at most about 6 minutes).

    PYTHONPATH=. python benchmarks/gpu_issue17.py                 # on the GPU machine
    PYTHONPATH=. python benchmarks/gpu_issue17.py --rehearse      # on CPU: interpreter, tiny shapes

Steps, each row appended to the CSV (and fsynced) as soon as it is measured, so a run cut off
by the machine's time limit still leaves every finished row:

1. the environment (device, driver, CUDA, clocks, torch, triton, git commit) and the
   device-to-device copy bandwidth (the ceiling of a memory-bound kernel);
2. the kernel table: Llama-2-7B and Llama-3-8B layer shapes x M = 1, 16, 64, 2048 x
   {cuBLAS fp16, our int4-g128, our int8, tinygemm}, all M = 1 rows first (the decode headline),
   then M = 16, 64, 2048. Our kernels are tuned on the first call of each (shape, M bucket) over
   at most `--candidates` configs (the kernel's own heuristic first, then fixed templates shared
   by all shapes, so compiled kernels are reused), and the winner goes to the tuning cache that
   `quant_matmul` and the serving engine read. Timing and columns are those of
   `bench_quant_matmul.py` (read-pass flush, CUDA-graph time as headline, error against the exact
   product of the same quantized weight, chosen config, capture fallbacks);
3. if at least `--e2e-min-s` seconds remain: end-to-end decode of a Llama-2-7B-shaped model
   (`bench_decode.py`: transformers fp16 `generate` vs our engine fp16/int4/int8 at batch 1 and
   16), in child processes bounded by the remaining time; their rows go to a second CSV.

bitsandbytes runs only if its wheel was carried over and imports; Marlin and gemlite are quoted
from their published figures, never run here. `--rehearse` runs every step on CPU under the
Triton interpreter with tiny shapes and wall-clock timing (its numbers are not GPU figures and
are marked so), and checks the decode step's command line without running it.
"""

from __future__ import annotations

import os
import sys

if "--rehearse" in sys.argv:
    os.environ["TRITON_INTERPRET"] = "1"  # must precede the first import of triton

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import datetime  # noqa: E402
import importlib.util  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks import bench_quant_matmul as bq  # noqa: E402
from benchmarks import resultlog  # noqa: E402

DEFAULT_CSV = REPO / "benchmarks" / "results" / "gpu_issue17.csv"
DEFAULT_DECODE_CSV = REPO / "benchmarks" / "results" / "gpu_issue17_decode.csv"
LAYERS = [  # (shape set, N out, K in): q/o and fused qkv, gate/up, down, k/v
    ("llama2-7b", 4096, 4096), ("llama2-7b", 11008, 4096), ("llama2-7b", 4096, 11008), ("llama2-7b", 12288, 4096),
    ("llama3-8b", 14336, 4096), ("llama3-8b", 4096, 14336), ("llama3-8b", 1024, 4096),
]
MS = (1, 16, 64, 2048)
IMPLS = ("fp16", "int4", "int8", "tinygemm")
REHEARSAL_LAYERS = [("tiny", 64, 256)]
REHEARSAL_MS = (1, 16, 128)  # GEMV, skinny dot, prefill GEMM regimes
DECODE_RUNS = (("hf-fp16", "ours-int4"), ("ours-fp16", "ours-int8"))  # the int4 target needs hf in the same run

# Tuning templates shared by every shape: MatmulConfig fields other than split-K (taken per shape
# from the kernel's own candidates, the largest it allows); block_m absent = the M bucket's. The
# K=128-dot variant comes right after the heuristic, so the default --candidates 3 measures it.
TEMPLATES = {
    "gemv": [dict(kernel="gemv", block_n=16, tiles=4, num_warps=4), dict(kernel="gemv", block_n=32, tiles=2, num_warps=4),
             dict(kernel="gemv", block_n=64, tiles=1, num_warps=8), dict(kernel="gemv", block_n=8, tiles=4, num_warps=2)],
    "skinny": [dict(kernel="dot", block_n=64, num_stages=3, k128=True), dict(kernel="dot", block_n=32, num_stages=4),
               dict(kernel="dot", block_n=128, num_warps=8, num_stages=3)],
    "gemm": [dict(kernel="dot", block_m=128, block_n=128, num_warps=8, num_stages=3, k128=True),
             dict(kernel="dot", block_m=128, block_n=256, num_warps=8, num_stages=3),
             dict(kernel="dot", block_m=128, block_n=64, num_warps=4, num_stages=4)],
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rehearse", action="store_true", help="CPU rehearsal: interpreter, tiny shapes, no GPU figures")
    p.add_argument("--csv", type=Path, default=None, help=f"kernel-table CSV (default {DEFAULT_CSV.name} in $OUT "
                   "when set, else in benchmarks/results; a temporary file when rehearsing)")
    p.add_argument("--decode-csv", type=Path, default=None, help="end-to-end decode CSV")
    p.add_argument("--budget-s", type=float, default=345.0, help="wall-clock budget of the whole run, seconds")
    p.add_argument("--e2e-min-s", type=float, default=100.0, help="run the decode step only if this much is left")
    p.add_argument("--candidates", type=int, default=None,
                   help="tuning candidates per (shape, M bucket) (default 3; 2 when rehearsing)")
    p.add_argument("--tuning-cache", type=Path, default=None,
                   help="tuning-cache file (default: $OUT/kernel_tuning.json, else in the temporary folder)")
    args = p.parse_args(argv)
    if args.candidates is None:
        args.candidates = 2 if args.rehearse else 3
    if args.candidates < 1 or args.budget_s <= 0:
        p.error("--candidates must be >= 1 and --budget-s > 0")
    # on the lent machine only $OUT comes back: results go there (copy them to benchmarks/results)
    out = os.environ.get("OUT")
    scratch = Path(out or tempfile.gettempdir())
    if args.csv is None:
        args.csv = (scratch / "gpu_issue17_rehearsal.csv" if args.rehearse
                    else Path(out) / DEFAULT_CSV.name if out else DEFAULT_CSV)
    if args.decode_csv is None:
        args.decode_csv = (scratch / "gpu_issue17_decode_rehearsal.csv" if args.rehearse
                           else Path(out) / DEFAULT_DECODE_CSV.name if out else DEFAULT_DECODE_CSV)
    if args.tuning_cache is None:
        args.tuning_cache = scratch / "kernel_tuning.json"
    return args


def shortlist(m: int, n: int, k: int, bits: int, sms: int, limit: int) -> list:
    """At most `limit` configs for one shape: the kernel's heuristic, then the regime's templates
    (each with the largest split-K the kernel's candidate list allows for it)."""
    from kernels import quant_matmul as qm

    regime = "gemv" if m <= qm.GEMV_MAX_M else "skinny" if m <= qm.SKINNY_MAX_M else "gemm"
    candidates = qm.candidate_configs(m, n, k, bits, sms)
    out = [qm.heuristic_config(m, n, k, bits, sms)]
    for template in TEMPLATES[regime]:
        if len(out) >= limit:
            break
        match = [c for c in candidates if all(getattr(c, f) == v for f, v in template.items())]
        if match:
            best = max(match, key=lambda c: c.split_k)
            if best not in out:
                out.append(best)
    return out[:limit]


def tune(impl, x, m: int, n: int, k: int, args, time_fn, device_name: str, cache):
    """Time the shortlist for our kernel `impl` on `x`; store the winner under quant_matmul's key."""
    from kernels import quant_matmul as qm

    sms = qm._sm_count(x.device)
    best, best_ms = None, float("inf")
    for config in shortlist(m, n, k, impl.weight.bits, sms, args.candidates):
        try:
            ms = time_fn(impl.prepare(x, config), tuning=True)[0]
        except Exception as exc:  # noqa: BLE001 - a config that cannot run on this card is skipped
            print(f"    {config}: cannot run ({exc})"[:200], flush=True)
            continue
        if ms < best_ms:
            best, best_ms = config, ms
    if best is not None:
        cache.put(qm.config_key(device_name, impl.weight, x.dtype, m), dataclasses.asdict(best), best_ms)
    return best


def make_timer(device: str, rehearse: bool):
    from kernels.autotune_cache import l2_read_flush

    flush = l2_read_flush(device, 8 if rehearse else 256)
    # (reps, warmup) of a table row and of a tuning candidate; the interpreter takes ~0.5 s a call
    row, cand = ((1, 0), (1, 0)) if rehearse else ((50, 5), (20, 3))

    def time_fn(fn, tuning: bool = False):
        reps, warmup = cand if tuning else row
        return bq.time_call(fn, flush, reps=reps, warmup=warmup, graph=not tuning, device=device)

    return time_fn


def kernel_table(args, env: dict, device: str, deadline: float) -> list:
    import torch

    from kernels.autotune_cache import default_cache

    layers, ms_list = (REHEARSAL_LAYERS, REHEARSAL_MS) if args.rehearse else (LAYERS, MS)
    cache = default_cache()  # the very cache quant_matmul reads (its file is --tuning-cache, see main)
    time_fn = make_timer(device, args.rehearse)
    gen = torch.Generator(device=device).manual_seed(0)
    dtype = torch.float16
    built = []
    for shape_set, n, k in layers:
        w16 = (torch.randn(n, k, device=device, generator=gen) * 0.02).to(dtype)
        impls, notes = bq.build_impls(IMPLS, w16, k, n)
        for name, note in notes.items():
            write(args.csv, env, bq.Row(shape_set, n, k, 0, name, None, 0, note=note), args.copy_gbps, {})
            print(f"{shape_set} {n}x{k}: {name} {note}", flush=True)
        built.append((shape_set, n, k, impls))
    rows: list = []
    ms_of: dict = {}
    for m in ms_list:
        for shape_set, n, k, impls in built:
            if time.monotonic() > deadline:
                write(args.csv, env, bq.Row(shape_set, n, k, m, "-", None, 0, note="cut off: time budget spent"),
                      args.copy_gbps, {})
                print(f"time budget spent before {n}x{k} M={m}; the table stops here", flush=True)
                return rows
            x = torch.randn(m, k, device=device, generator=gen).to(dtype)
            for name, impl in impls.items():
                tuned = None
                if impl.weight is not None:
                    tuned = tune(impl, x, m, n, k, args, time_fn, env["device"], cache)
                # on the GPU our kernels pick their config themselves, from the cache just written,
                # and the timed CUDA graph captures whatever they pick: the row checks that path
                # (its config and capture_fallbacks columns). The interpreter never reads the cache.
                row = bq.measure(shape_set, n, k, m, name, impl, x, time_fn, config=tuned if args.rehearse else None)
                if tuned is not None and row.config and row.config != bq.config_label(tuned):
                    row.note = f"{row.note} | launched {row.config}, tuned {bq.config_label(tuned)}".strip(" |")
                ms_of[(n, k, m, name)] = row.ms
                write(args.csv, env, row, args.copy_gbps, ms_of)
                rows.append(row)
            bq.print_rows(rows[-len(impls):], args.copy_gbps)
    return rows


def write(path: Path, env: dict, row, copy_gbps: float, ms_of: dict) -> None:
    base = ms_of.get((row.n, row.k, row.m, "fp16"))
    tiny = ms_of.get((row.n, row.k, row.m, "tinygemm"))
    bq.append_rows(path, [bq.csv_record(row, env, copy_gbps, base, tiny)])


def decode_commands(args) -> list[list[str]]:
    script = str(REPO / "benchmarks" / "bench_decode.py")
    return [[sys.executable, script, "--impls", ",".join(impls), "--batch", "1,16", "--prompt-tokens", "64",
             "--new-tokens", "64", "--repeats", "1", "--csv", str(args.decode_csv)] for impls in DECODE_RUNS]


def decode_e2e(args, env: dict, deadline: float) -> None:
    commands = decode_commands(args)
    if args.rehearse:
        spec = importlib.util.spec_from_file_location("bench_decode_rehearsal", commands[0][1])
        assert spec is not None and spec.loader is not None, commands[0][1]
        bench_decode = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(bench_decode)
        for cmd in commands:
            bench_decode.parse_args(cmd[2:])  # SystemExit on a flag it does not take
        note = "rehearsal: decode command lines checked, not run (needs CUDA)"
        write(args.csv, env, bq.Row("llama2-7b-shape", 0, 0, 0, "e2e", None, 0, note=note), args.copy_gbps, {})
        print(note, flush=True)
        return
    child_env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    for cmd in commands:
        remaining = deadline - time.monotonic()
        if remaining < args.e2e_min_s / len(commands):
            note = f"e2e {cmd[3]} skipped: {remaining:.0f} s left"
            write(args.csv, env, bq.Row("llama2-7b-shape", 0, 0, 0, "e2e", None, 0, note=note), args.copy_gbps, {})
            print(note, flush=True)
            continue
        print(f"decode: {' '.join(cmd[2:])} (at most {remaining:.0f} s)", flush=True)
        try:
            proc = subprocess.run(cmd, cwd=REPO, env=child_env, timeout=remaining, text=True,
                                  stdout=sys.stdout, stderr=sys.stderr)
            note = f"e2e {cmd[3]}: exit {proc.returncode}; rows in {args.decode_csv.name}"
        except subprocess.TimeoutExpired:
            note = f"e2e {cmd[3]}: cut off after {remaining:.0f} s (no rows)"
        write(args.csv, env, bq.Row("llama2-7b-shape", 0, 0, 0, "e2e", None, 0, note=note), args.copy_gbps, {})


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    start = time.monotonic()
    deadline = start + args.budget_s
    import torch
    import triton

    if not args.rehearse and not torch.cuda.is_available():
        print("gpu_issue17: no CUDA device here; run it on a lent GPU, or use --rehearse on CPU. "
              "Nothing was measured.", file=sys.stderr)
        return 2
    # our kernels and the decode children read and write this tuning cache (kernels.autotune_cache)
    os.environ["COMMONFORGE_KERNEL_TUNING_CACHE"] = str(args.tuning_cache)
    device = "cpu" if args.rehearse else "cuda"
    env = dict(timestamp=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
               git_commit=resultlog.git_commit(), torch=torch.__version__, triton=triton.__version__)
    if args.rehearse:
        env.update(device="cpu (rehearsal, TRITON_INTERPRET=1)")
        args.copy_gbps = 1.0  # placeholder: no ratio of a rehearsal is a GPU figure
    else:
        env.update(device=torch.cuda.get_device_name(), **bq.gpu_environment())
        args.copy_gbps = bq.copy_bandwidth_gbps(1024)
    print(f"{env['device']} | torch {env['torch']} | triton {env['triton']} | commit {env['git_commit']} | "
          f"driver {env.get('driver', '?')} | CUDA {env.get('cuda', '?')}", flush=True)
    bq.append_rows(args.csv, [dict(env, impl="copy", copy_gbps=f"{args.copy_gbps:.1f}",
                                   note="1024 MiB d2d copy" if not args.rehearse else "rehearsal: no copy measured")])
    e2e_reserve = 0.0 if args.rehearse else min(args.e2e_min_s, args.budget_s / 3)
    rows = kernel_table(args, env, device, deadline - e2e_reserve)
    for line in bq.check_targets(rows, args.copy_gbps):
        print(("(rehearsal, not a GPU figure) " if args.rehearse else "") + line, flush=True)
    if deadline - time.monotonic() >= (0 if args.rehearse else args.e2e_min_s):
        decode_e2e(args, env, deadline)
    else:
        write(args.csv, env, bq.Row("llama2-7b-shape", 0, 0, 0, "e2e", None, 0, note="e2e skipped: time budget spent"),
              args.copy_gbps, {})
    print(f"done in {time.monotonic() - start:.0f} s; rows in {args.csv}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
