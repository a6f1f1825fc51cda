"""Benchmark the weight-only quantized matmuls against cuBLAS fp16 and the best peers, on one GPU.

    python benchmarks/bench_quant_matmul.py                      # all shapes, M in 1..2048
    python benchmarks/bench_quant_matmul.py --shapes llama3-8b --m 1,16 --impls fp16,int4,tinygemm

Measured in one run, on the same device: the device-to-device copy bandwidth of a 1 GiB buffer
(the ceiling for a memory-bound kernel), cuBLAS fp16 (F.linear), our int4-g128 and int8
(kernels.quant_matmul), torch._weight_int4pack_mm (tinygemm, bf16, int4-g128), and gemlite /
bitsandbytes (nf4) when importable.

How a call is timed (`time_call`): before every timed call a *read* pass over a buffer larger
than L2 (`kernels.autotune_cache.l2_read_flush`: a sum into one scalar) evicts the weights, so they stream from HBM as in a
real model. A write flush (`zero_()`, what triton.testing.do_bench does) would leave dirty lines
that the timed kernel's own reads then write back, charging every layer under the flush size
about its own size again. The headline `ms` is the call replayed as a CUDA graph (no launch
overhead, as the serving engine runs decode); `ms_eager` is the same call launched from Python.
Both are medians of CUDA-event timings around the call alone.

Each row reports ms, GB/s (bytes the op must move: packed weights, scales, zero points only for
formats that have them, activations in, output out), the fraction of the copy bandwidth, the
speedup over fp16 and over tinygemm, `max_rel_err` against the exact fp32 product of the *same
quantized* weight (`kernels.quant_matmul.quant_matmul_reference`; fp16 against the fp32 product
of the fp16 weight), so a kernel bug shows instead of hiding in the quantization error, the
launch config our kernels chose, and the counters of CUDA-graph captures that fell back
(`kernels.quant_matmul.capture_stats`). Rows are appended to benchmarks/results/quant_matmul.csv
with the device name, driver, CUDA, SM and memory clocks, torch / triton versions, git commit and
a UTC timestamp. Our kernels tune themselves on first use per (shape, M bucket) and cache the
choice (kernels.autotune_cache), so the first run is slower.

This is a script, not a test: it needs a CUDA GPU and exits with a message elsewhere
(`benchmarks/gpu_issue17.py --rehearse` runs the same code paths on CPU, untimed in earnest).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks import resultlog  # noqa: E402  (the repository is on sys.path from here)

if TYPE_CHECKING:
    from kernels.layouts import KernelWeight

DEFAULT_CSV = REPO / "benchmarks" / "results" / "quant_matmul.csv"

# (N out, K in) of the linear layers of common models
SHAPES = {
    "llama2-7b": [(4096, 4096), (11008, 4096), (4096, 11008), (12288, 4096)],  # o, gate/up, down, fused qkv
    "llama3-8b": [(4096, 4096), (14336, 4096), (4096, 14336), (1024, 4096)],  # q/o, gate/up, down, k/v
    "square": [(8192, 8192)],
}
DEFAULT_M = (1, 16, 32, 64, 256, 2048)
IMPLS = ("fp16", "int4", "int8", "tinygemm", "gemlite", "bnb-nf4")

# ratio over cuBLAS fp16 each target asks for (docs/architecture.md, "Performance targets")
TARGETS = {("int4", 1): 3.4, ("int4", 16): 2.8, ("int4", 64): 1.7, ("int4", 2048): 1.0, ("int8", 1): 1.9}
INT4_M1_COPY_FRACTION = 0.85

CSV_FIELDS = [
    "timestamp", "git_commit", "device", "driver", "cuda", "sm_clock_mhz", "mem_clock_mhz", "torch", "triton",
    "shape_set", "n", "k", "m", "impl", "ms", "ms_eager", "gbps", "copy_gbps", "frac_copy_bw", "speedup_vs_fp16",
    "speedup_vs_tinygemm", "max_rel_err", "config", "capture_fallbacks", "note",
]


@dataclasses.dataclass
class Row:
    shape_set: str
    n: int
    k: int
    m: int
    impl: str
    ms: float | None  # headline: CUDA-graph replay (eager where graphs are unavailable; see note)
    bytes_moved: int
    max_rel_err: float | None = None
    note: str = ""
    ms_eager: float | None = None
    config: str = ""
    capture_fallbacks: int | None = None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shapes", default=",".join(SHAPES), help=f"comma list of shape sets: {', '.join(SHAPES)}")
    p.add_argument("--m", default=",".join(map(str, DEFAULT_M)), help="comma list of batch sizes M (tokens)")
    p.add_argument("--impls", default=",".join(IMPLS), help=f"comma list of implementations: {', '.join(IMPLS)}")
    p.add_argument("--csv", type=Path, default=DEFAULT_CSV, help="CSV file the rows are appended to")
    p.add_argument("--copy-mib", type=int, default=1024, help="size of the copy-bandwidth buffer, MiB")
    p.add_argument("--seed", type=int, default=0, help="seed of the random weights and activations")
    args = p.parse_args(argv)
    args.shapes = [s for s in args.shapes.split(",") if s]
    unknown = [s for s in args.shapes if s not in SHAPES]
    if unknown:
        p.error(f"unknown shape set(s) {unknown}; choose from {list(SHAPES)}")
    try:
        args.m = [int(v) for v in args.m.split(",") if v]
    except ValueError:
        p.error("--m must be a comma list of positive integers")
    if not args.m or min(args.m) < 1:
        p.error("--m must be a comma list of positive integers")
    args.impls = [s for s in args.impls.split(",") if s]
    if [s for s in args.impls if s not in IMPLS] or "fp16" not in args.impls:
        p.error(f"--impls must include fp16 (the baseline) and only these: {list(IMPLS)}")
    return args


def append_rows(path: Path, rows: list[dict]) -> None:
    """Append rows (dicts keyed by CSV_FIELDS) to `path`, writing the header for a new file."""
    resultlog.append_rows(path, CSV_FIELDS, rows)


def csv_record(row: Row, env: dict, copy_gbps: float, fp16_ms: float | None, tinygemm_ms: float | None) -> dict:
    rec = dict(env, shape_set=row.shape_set, n=row.n, k=row.k, m=row.m, impl=row.impl, note=row.note,
               copy_gbps=f"{copy_gbps:.1f}", config=row.config)
    if row.ms is not None:
        gbps = row.bytes_moved / (row.ms * 1e-3) / 1e9
        rec.update(ms=f"{row.ms:.5f}", gbps=f"{gbps:.1f}", frac_copy_bw=f"{gbps / copy_gbps:.3f}")
        if fp16_ms:
            rec["speedup_vs_fp16"] = f"{fp16_ms / row.ms:.3f}"
        if tinygemm_ms:
            rec["speedup_vs_tinygemm"] = f"{tinygemm_ms / row.ms:.3f}"
    if row.ms_eager is not None:
        rec["ms_eager"] = f"{row.ms_eager:.5f}"
    if row.max_rel_err is not None:
        rec["max_rel_err"] = f"{row.max_rel_err:.2e}"
    if row.capture_fallbacks is not None:
        rec["capture_fallbacks"] = str(row.capture_fallbacks)
    return rec


# formats that store a zero point beside every scale (symmetric int4 has none: zero = 8)
ZERO_POINT_IMPLS = ("tinygemm", "gemlite")


def bytes_moved(impl: str, m: int, n: int, k: int) -> int:
    """Bytes a kernel must move at least: weights (+ scales, + zero points where the format has
    them), activations in, output out (all 16-bit)."""
    act = 2 * m * k + 2 * m * n
    if impl == "fp16":
        return 2 * n * k + act
    if impl in ("int4", "tinygemm", "gemlite", "bnb-nf4"):
        per_group = 2 * (2 if impl in ZERO_POINT_IMPLS else 1)  # fp16 scale (+ zero) per 128 weights
        return n * k // 2 + per_group * n * (k // 128) + act
    if impl == "int8":
        return n * k + 2 * n + act
    raise ValueError(impl)


# ----------------------------------------------------------------------------- GPU part


def time_call(fn, flush, *, reps: int = 50, warmup: int = 5, graph: bool = True,
              device: str = "cuda") -> tuple[float, float | None, str]:
    """(median eager ms, median CUDA-graph ms or None, note) of `fn()` on the current CUDA device,
    `flush()` before every timed call, CUDA events around the call alone. device="cpu" (the
    rehearsal) times with the wall clock and has no graphs."""
    import torch

    from kernels.autotune_cache import median_ms

    eager = median_ms(fn, flush, reps=reps, warmup=warmup, device=device)
    if device == "cpu":
        return eager, None, "CPU wall clock (rehearsal): not a GPU figure"
    if not graph:
        return eager, None, "eager only"
    try:
        stream = torch.cuda.Stream()  # warm up on a side stream, as torch.cuda.graph expects
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            fn()
        torch.cuda.current_stream().wait_stream(stream)
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            fn()
    except Exception as exc:  # noqa: BLE001 - reported in the row, never hidden
        torch.cuda.synchronize()
        print(f"  CUDA graph capture failed ({exc}); the row falls back to eager", flush=True)
        return eager, None, f"graph capture failed: {exc}"[:200]
    return eager, median_ms(g.replay, flush, reps=reps, warmup=warmup), ""


def copy_bandwidth_gbps(mib: int) -> float:
    """Device-to-device copy of `mib` MiB, read + write bytes per second (after a read flush, like
    every kernel row, so the ceiling is measured the way the kernels are)."""
    import torch

    from kernels.autotune_cache import l2_read_flush, median_ms

    src = torch.randn(mib * 2**20 // 4, device="cuda")
    dst = torch.empty_like(src)
    ms = median_ms(lambda: dst.copy_(src), l2_read_flush("cuda"), reps=30, warmup=5)
    return 2 * src.numel() * 4 / (ms * 1e-3) / 1e9


def config_label(config) -> str:
    """A launch config in one short CSV-friendly token, e.g. gemv/bn16/t4/sk1/w4/st2."""
    if config is None:
        return ""
    size = f"t{config.tiles}" if config.kernel == "gemv" else f"bm{config.block_m}/gm{config.group_m}"
    label = f"{config.kernel}/bn{config.block_n}/{size}/sk{config.split_k}/w{config.num_warps}/st{config.num_stages}"
    return label + ("/k128" if config.k128 else "")


def max_rel_err(y, ref) -> float:
    return ((y.float() - ref).abs().max() / ref.abs().max().clamp(min=1e-6)).item()


def gpu_environment() -> dict:
    """Driver, CUDA and clocks of GPU 0 (nvidia-smi, when present; empty fields otherwise)."""
    import subprocess

    import torch

    env = {"cuda": torch.version.cuda or ""}
    fields = ("driver_version", "clocks.sm", "clocks.mem")
    try:
        out = subprocess.run(["nvidia-smi", f"--query-gpu={','.join(fields)}", "--format=csv,noheader,nounits",
                              "--id=0"], capture_output=True, text=True, timeout=20).stdout.strip()
        driver, sm, mem = [v.strip() for v in out.splitlines()[0].split(",")]
        env.update(driver=driver, sm_clock_mhz=sm, mem_clock_mhz=mem)
    except (OSError, ValueError, IndexError, subprocess.SubprocessError):
        pass
    return env


@dataclasses.dataclass
class Impl:
    """One implementation on one weight: `prepare(x, config)` -> the call to time; `reference(x)` ->
    the exact fp32 product it must match; `weight`: our KernelWeight (int4/int8), else None."""

    prepare: Callable
    reference: Callable
    weight: KernelWeight | None = None


def build_impls(names, w16, k, n) -> tuple[dict[str, Impl], dict[str, str]]:
    """name -> Impl for the available implementations, and name -> note for the unavailable ones."""
    import torch
    import torch.nn.functional as F

    from kernels.layouts import repack_for_kernel
    from kernels.quant_matmul import quant_matmul, quant_matmul_reference
    from kernels.quantize import quantize_rtn
    from kernels.scheme import QuantScheme

    def ours(kw) -> Impl:
        def prepare(x, config=None):
            out = torch.empty(x.shape[0], n, dtype=x.dtype, device=x.device)
            return lambda: quant_matmul(x, kw, out=out, config=config)

        return Impl(prepare, lambda x: quant_matmul_reference(x, kw), kw)

    impls: dict[str, Impl] = {}
    notes: dict[str, str] = {}
    impls["fp16"] = Impl(lambda x, config=None: (lambda: F.linear(x, w16)), lambda x: x.float() @ w16.float().t())
    # int4 g128 RTN: our int4 rows and tinygemm's share it (the same integers and scales)
    qw4 = quantize_rtn(w16, QuantScheme.from_name("int4-g128")) if {"int4", "tinygemm"} & set(names) else None
    if "int4" in names:
        assert qw4 is not None
        impls["int4"] = ours(repack_for_kernel(qw4))
    if "int8" in names:
        impls["int8"] = ours(repack_for_kernel(quantize_rtn(w16, QuantScheme.from_name("int8"))))
    if "tinygemm" in names:
        assert qw4 is not None
        try:
            u = (qw4.qweight.to(torch.int32) + 8)  # tinygemm: w = (u - 8) * scale + zero
            sz = torch.stack([qw4.scale.t(), torch.zeros_like(qw4.scale.t())], dim=-1).to(torch.bfloat16).contiguous()
            if w16.is_cuda:
                packed = torch._convert_weight_to_int4pack((u[:, ::2] << 4 | u[:, 1::2]).to(torch.uint8), 8)
                mm = torch._weight_int4pack_mm
            else:  # the rehearsal on CPU: torch's CPU build of the same op
                packed, mm = torch._convert_weight_to_int4pack_for_cpu(u, 1), torch._weight_int4pack_mm_for_cpu
            kw_ref = repack_for_kernel(qw4)  # the same integers and scales: the same exact product
            def tinygemm(x, config=None, mm=mm, packed=packed):
                xb = x.to(torch.bfloat16)  # converted outside the timed call
                return lambda: mm(xb, packed, 128, sz)

            impls["tinygemm"] = Impl(tinygemm, lambda x: quant_matmul_reference(x, kw_ref))
        except Exception as exc:  # noqa: BLE001 - report and go on
            notes["tinygemm"] = f"unavailable: {exc}"[:200]
    if "gemlite" in names:
        try:
            from gemlite.core import DType, GemLiteLinearTriton

            qwa = quantize_rtn(w16, QuantScheme.from_name("int4-g128-asym"))
            layer = GemLiteLinearTriton(4, group_size=128, in_features=k, out_features=n,
                                        input_dtype=DType.FP16, output_dtype=DType.FP16)
            assert qwa.zero_point is not None  # an asymmetric scheme
            layer.pack((qwa.qweight.to(torch.int16) + 8).to(torch.uint8), qwa.scale.half(),
                       (qwa.zero_point.to(torch.int16) + 8).half(), bias=None)
            wa = qwa.dequantize(torch.float32)
            impls["gemlite"] = Impl(lambda x, config=None: (lambda: layer(x)), lambda x: x.float() @ wa.t())
        except Exception as exc:  # noqa: BLE001
            notes["gemlite"] = f"unavailable: {exc}"[:200]
    if "bnb-nf4" in names:
        try:
            import bitsandbytes as bnb

            layer = bnb.nn.Linear4bit(k, n, bias=False, compute_dtype=torch.float16, quant_type="nf4")
            layer.weight = bnb.nn.Params4bit(w16.cpu(), requires_grad=False, quant_type="nf4")
            layer = layer.cuda()
            # NF4 is another format: compared with the fp16 weight (its error includes quantization)
            impls["bnb-nf4"] = Impl(lambda x, config=None: (lambda: layer(x)), lambda x: x.float() @ w16.float().t())
        except Exception as exc:  # noqa: BLE001
            notes["bnb-nf4"] = f"unavailable: {exc}"[:200]
    return impls, notes


def measure(shape_set: str, n: int, k: int, m: int, name: str, impl: Impl, x, time_fn, config=None) -> Row:
    """Run `impl` once (compiles, tunes), check it against its reference, time it: one Row.
    `time_fn(fn)` -> (eager ms, graph ms or None, note), e.g. `time_call` with a flush bound."""
    import torch

    from kernels import quant_matmul as qm

    try:
        fn = impl.prepare(x, config)
        y = fn()  # first call: compile and tune outside the timed region
        if x.is_cuda:
            torch.cuda.synchronize()
        err = max_rel_err(y, impl.reference(x))
        chosen = ""
        if impl.weight is not None:
            chosen = config_label(config or qm.select_config(x, impl.weight))
        qm.reset_capture_stats()
        eager, graph, note = time_fn(fn)
        fallbacks = sum(qm.capture_stats().values()) if impl.weight is not None else None
        return Row(shape_set, n, k, m, name, graph if graph is not None else eager, bytes_moved(name, m, n, k), err,
                   note=note, ms_eager=eager, config=chosen, capture_fallbacks=fallbacks)
    except Exception as exc:  # noqa: BLE001 - one failing peer must not end the run
        return Row(shape_set, n, k, m, name, None, 0, note=f"failed: {exc}"[:200])


def run(args) -> list[Row]:
    import torch

    gen = torch.Generator(device="cuda").manual_seed(args.seed)
    from kernels.autotune_cache import l2_read_flush

    flush = l2_read_flush("cuda")
    rows: list[Row] = []
    for shape_set in args.shapes:
        for n, k in SHAPES[shape_set]:
            # fresh random non-zero weights, scaled like a trained layer
            w16 = (torch.randn(n, k, device="cuda", generator=gen) * 0.02).half()
            impls, notes = build_impls(args.impls, w16, k, n)
            for name, note in notes.items():
                rows.append(Row(shape_set, n, k, 0, name, None, 0, note=note))
                print(f"{shape_set} {n}x{k}: {name} {note}", flush=True)
            for m in args.m:
                x = torch.randn(m, k, device="cuda", generator=gen).half()
                for name, impl in impls.items():
                    rows.append(measure(shape_set, n, k, m, name, impl, x, lambda fn: time_call(fn, flush)))
                print_rows(rows[-len(impls):], args.copy_gbps)
    return rows


def print_rows(rows: list[Row], copy_gbps: float) -> None:
    base = {(r.n, r.k, r.m): r.ms for r in rows if r.impl == "fp16"}
    tiny = {(r.n, r.k, r.m): r.ms for r in rows if r.impl == "tinygemm"}

    def ratio(table, r):
        t = table.get((r.n, r.k, r.m))
        return f"{t / r.ms:5.2f}x" if t else "  -  "

    for r in rows:
        if r.ms is None:
            print(f"  {r.n:>6}x{r.k:<6} M={r.m:<5} {r.impl:<9} {r.note}")
            continue
        gbps = r.bytes_moved / (r.ms * 1e-3) / 1e9
        eager = f"(eager {r.ms_eager * 1e3:.1f} us)" if r.ms_eager is not None else ""
        print(f"  {r.n:>6}x{r.k:<6} M={r.m:<5} {r.impl:<9} {r.ms * 1e3:9.1f} us {eager} {gbps:8.0f} GB/s "
              f"{gbps / copy_gbps:6.1%} of copy  {ratio(base, r)} vs fp16  {ratio(tiny, r)} vs tinygemm  "
              f"err {r.max_rel_err:.1e} {r.config} {r.note}", flush=True)


def check_targets(rows: list[Row], copy_gbps: float) -> list[str]:
    """One line per performance target: the worst shape's ratio and PASS/FAIL."""
    fp16 = {(r.n, r.k, r.m): r.ms for r in rows if r.impl == "fp16" and r.ms}
    lines = []
    for (impl, m), want in TARGETS.items():
        ratios = [fp16[(r.n, r.k, r.m)] / r.ms for r in rows
                  if r.impl == impl and r.ms and (r.m == m or (m == 2048 and r.m >= 2048)) and (r.n, r.k, r.m) in fp16]
        if ratios:
            worst = min(ratios)
            lines.append(f"{impl} M={m}: worst {worst:.2f}x fp16 (target >= {want}x) {'PASS' if worst >= want else 'FAIL'}")
    fracs = [r.bytes_moved / (r.ms * 1e-3) / 1e9 / copy_gbps for r in rows if r.impl == "int4" and r.m == 1 and r.ms]
    if fracs:
        worst = min(fracs)
        lines.append(f"int4 M=1: worst {worst:.0%} of copy bandwidth (target >= {INT4_M1_COPY_FRACTION:.0%}) "
                     f"{'PASS' if worst >= INT4_M1_COPY_FRACTION else 'FAIL'}")
    return lines


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        import torch
    except ImportError:
        print("bench_quant_matmul: torch is not installed", file=sys.stderr)
        return 2
    if not torch.cuda.is_available():
        print("bench_quant_matmul: no CUDA device here; this benchmark needs an NVIDIA GPU "
              "(H100/H200 for the published targets). Nothing was measured.", file=sys.stderr)
        return 2
    import triton

    device = torch.cuda.get_device_name()
    print(f"{device} | torch {torch.__version__} | triton {triton.__version__}", flush=True)
    args.copy_gbps = copy_bandwidth_gbps(args.copy_mib)
    print(f"device-to-device copy: {args.copy_gbps:.0f} GB/s", flush=True)
    rows = run(args)
    env = dict(timestamp=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
               git_commit=resultlog.git_commit(), device=device, torch=torch.__version__, triton=triton.__version__,
               **gpu_environment())
    fp16 = {(r.n, r.k, r.m): r.ms for r in rows if r.impl == "fp16"}
    tiny = {(r.n, r.k, r.m): r.ms for r in rows if r.impl == "tinygemm"}
    records = [csv_record(r, env, args.copy_gbps, fp16.get((r.n, r.k, r.m)), tiny.get((r.n, r.k, r.m)))
               for r in rows]
    records.append(dict(env, impl="copy", copy_gbps=f"{args.copy_gbps:.1f}", note=f"{args.copy_mib} MiB d2d copy"))
    append_rows(args.csv, records)
    print(f"appended {len(records)} rows to {args.csv}")
    for line in check_targets(rows, args.copy_gbps):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
