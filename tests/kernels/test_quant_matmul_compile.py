"""Compile the Triton kernels for real GPUs (sm_90, sm_80) on this CPU-only machine.

The interpreter is looser than the compiler (it accepts dots smaller than 16, scoping the code
generator rejects, ...), so every kernel variant is also compiled ahead of time to PTX and cubin
with Triton's bundled ptxas. This catches compile errors in CI without a GPU and checks the code
paths we designed for: tensor cores (wgmma on Hopper, mma on Ampere) in the dot kernel and none in
the GEMV, bf16 included (which the interpreter cannot run), no int->float conversion
instructions in the dequantization (the 2^23 bit trick replaces them), evict-first hints on the
GEMV's weight loads, FMAs in the GEMV under the explicit FP-fusion choice (`kernels.quant_matmul.FP_FUSION`),
and, with the alignment a launch on real layer shapes specializes on, 128-bit weight loads in the GEMV
and 16-byte asynchronous copies in the dot kernel.

The compiles run in a fresh process: this one has TRITON_INTERPRET=1 (kernels are interpreter
wrappers) and the interpreter patches triton.language while it runs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("triton")
# Compiling for sm90/sm80 ahead of time loads the CUDA backend and runs ptxas: about a minute.
pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]

CASES = {
    # id: (kernel, act dtype, bits, group, zero, partial, extra constexprs, warps, stages)
    "gemv-fp16-b4-g128": ("gemv", "fp16", 4, 128, False, False, dict(BLOCK_N=32, TILES=2), 4, 2),
    "gemv-bf16-b4-g32-asym-splitk": ("gemv", "bf16", 4, 32, True, True, dict(BLOCK_N=64, TILES=1), 2, 2),
    "gemv-fp16-b8": ("gemv", "fp16", 8, 0, False, False, dict(BLOCK_N=32, TILES=2), 4, 2),
    "dot-fp16-b4-g128-skinny-splitk": ("dot", "fp16", 4, 128, False, True,
                                       dict(SCALE_ON_ACC=True, BLOCK_M=16, BLOCK_N=64, GROUP_M=8), 4, 3),
    "dot-bf16-b4-g32-asym-gemm": ("dot", "bf16", 4, 32, True, False,
                                  dict(SCALE_ON_ACC=False, BLOCK_M=128, BLOCK_N=128, GROUP_M=8), 8, 3),
    "dot-bf16-b8-gemm": ("dot", "bf16", 8, 0, False, False,
                         dict(SCALE_ON_ACC=False, BLOCK_M=64, BLOCK_N=128, GROUP_M=8), 4, 4),
    # per-channel zero point (group size 0) and int64 offsets: compiled, not only interpreted
    "gemv-fp16-b8-zero-int64": ("gemv", "fp16", 8, 0, True, True, dict(BLOCK_N=16, TILES=2, INT64=True), 4, 2),
    "dot-fp16-b4-g128-int64": ("dot", "fp16", 4, 128, False, False,
                               dict(SCALE_ON_ACC=True, BLOCK_M=16, BLOCK_N=64, GROUP_M=8, INT64=True), 4, 3),
    # one K=128 dot per tile (issue 17, part 2 item 4): g128, several groups per tile, per channel
    "dot-fp16-b4-g128-k128-skinny": ("dot", "fp16", 4, 128, False, True,
                                     dict(SCALE_ON_ACC=True, BLOCK_M=16, BLOCK_N=64, GROUP_M=8, K128=True), 4, 3),
    "dot-bf16-b4-g32-asym-k128-gemm": ("dot", "bf16", 4, 32, True, False,
                                       dict(SCALE_ON_ACC=False, BLOCK_M=128, BLOCK_N=128, GROUP_M=8, K128=True), 8, 3),
    "dot-fp16-b8-k128-gemm": ("dot", "fp16", 8, 0, False, False,
                              dict(SCALE_ON_ACC=False, BLOCK_M=64, BLOCK_N=128, GROUP_M=8, K128=True), 4, 3),
}
CAPABILITIES = (90, 80)

COMPILE_SCRIPT = r"""
import json, re, sys
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
import kernels.quant_matmul as qm

cases, capabilities = json.loads(sys.argv[1]), json.loads(sys.argv[2])
results = {}
for name, (kernel, act, bits, group, zero, partial, extra, warps, stages) in cases.items():
    constexprs = dict(BITS=bits, GROUP_SIZE=group, HAS_ZERO=zero, HAS_BIAS=True, WRITE_PARTIAL=partial)
    constexprs.update({"INT64": False, **({"K128": False} if kernel == "dot" else {}), **extra})
    sig = {"x_ptr": "*" + act, "qweight_ptr": "*i32", "scale_ptr": "*fp16", "zero_ptr": "*fp16",
           "bias_ptr": "*" + act, "out_ptr": "*fp32" if partial else "*" + act}
    sizes = ["N", "K", "tiles_per_split"] if kernel == "gemv" else ["M", "N", "K", "tiles_per_split"]
    sig.update({s: "i32" for s in sizes + ["stride_xm", "stride_qn", "stride_om", "stride_os"]})
    sig.update({c: "constexpr" for c in constexprs})
    # what a launch on real layer shapes specializes on: 16-byte aligned pointers, and N, K and
    # the strides divisible by 16 (so loads can be vectorized)
    names = list(sig)
    aligned = [a for a in names if a.endswith("_ptr") or a in ("N", "K", "stride_xm", "stride_qn", "stride_om", "stride_os")]
    attrs = {(names.index(a),): [["tt.divisibility", 16]] for a in aligned}
    fn = qm._quant_gemv_kernel if kernel == "gemv" else qm._quant_dot_kernel
    for cap in capabilities:
        key = f"{name}@sm{cap}"
        try:
            k = triton.compile(ASTSource(fn=fn, signature=sig, constexprs=constexprs, attrs=attrs),
                               target=GPUTarget("cuda", cap, 32),
                               options={"num_warps": warps, "num_stages": stages,
                                        "enable_fp_fusion": qm.FP_FUSION})
            ptx = k.asm["ptx"]
            results[key] = {"ok": bool(k.asm["cubin"]), "wgmma": "wgmma.mma_async" in ptx,
                            "mma": "mma.sync" in ptx,
                            "i2f": "cvt.rn.f32.s32" in ptx or "cvt.rn.f32.u32" in ptx,
                            "fma": ptx.count("fma.rn.f32"), "evict_first": "evict_first" in ptx,
                            "v4_weight_loads": len(re.findall(r"ld\.global\.L1::evict_first(?:\.[\w:]+)*\.v4\.b32", ptx)),
                            "async16": len(re.findall(r"cp\.async\.c[ag]\.shared\.global[^;]*,\s*0x10\s*[,;]", ptx))}
        except Exception as exc:
            results[key] = {"ok": False, "error": repr(exc)[:2000]}
print(json.dumps(results))
"""


@pytest.fixture(scope="module")
def compiled(tmp_path_factory) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_CACHE_DIR"] = str(tmp_path_factory.mktemp("triton-cache"))  # keep ~/.triton clean
    env["TRITON_DEFAULT_FP_FUSION"] = "1"  # silence Triton 3.9's default-change warning
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    try:
        proc = subprocess.run(
            [sys.executable, "-c", COMPILE_SCRIPT, json.dumps(CASES), json.dumps(CAPABILITIES)],
            capture_output=True, text=True, timeout=600, env=env, cwd=REPO,
        )
    except subprocess.TimeoutExpired:
        pytest.fail("ahead-of-time compilation took over 10 minutes")
    if proc.returncode != 0 and "ASTSource" in proc.stderr and "ImportError" in proc.stderr:
        pytest.skip("this Triton has no ASTSource/GPUTarget ahead-of-time API")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("capability", CAPABILITIES, ids=[f"sm{c}" for c in CAPABILITIES])
@pytest.mark.parametrize("name", list(CASES))
def test_kernel_compiles_for_gpu(compiled, name, capability):
    result = compiled[f"{name}@sm{capability}"]
    assert result["ok"], result.get("error")
    kernel = CASES[name][0]
    if kernel == "dot":
        assert result["wgmma"] or result["mma"], "the dot kernel must use tensor cores"
        assert result["async16"] > 0, "aligned operands are staged with 16-byte asynchronous copies"
        if capability == 90 and CASES[name][6]["BLOCK_M"] >= 64:
            assert result["wgmma"], "prefill tiles on Hopper should use wgmma (BLOCK_M 16 gets mma.sync)"
    else:
        assert not (result["wgmma"] or result["mma"]), "the GEMV must stay on FMAs"
    assert not result["i2f"], "dequantization must not use int->float conversion instructions"
    if kernel == "gemv":
        # (the dot kernel's pipelined loads become cp.async copies on Ampere, which drop the hint)
        assert result["evict_first"], "weights are streamed once: their loads carry an evict-first hint"
        assert result["fma"] > 0, "with FP fusion on, (u - zero) * x + acc compiles to FMAs"
        assert result["v4_weight_loads"] > 0, "aligned weight rows are read with 128-bit (v4) loads"
