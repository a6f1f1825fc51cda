"""Triton quantized matmuls against their fp32 reference, on fresh random inputs.

Runs under TRITON_INTERPRET=1 on CPU (see conftest) with big tiles to stay fast; on a GPU the same
tests run the compiled kernels. Outputs (and split-K partials) are filled with NaN before every
call, so an element a kernel forgets to write fails the comparison.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from kernels import quant_matmul as qm
from kernels.errors import DeviceError, DtypeError, LayoutError, ShapeError
from kernels.layouts import repack_for_kernel
from kernels.quant_matmul import MatmulConfig, int4_matmul, int8_matmul, quant_matmul, quant_matmul_reference
from kernels.quantize import quantize_rtn
from kernels.scheme import QuantScheme
from tests.kernels.conftest import DEVICE, ON_GPU

# (dtype, atol, rtol) against the fp32 reference (outputs here are O(10)):
#   fp32: exact "ieee" dots; only summation order differs
#   fp16: the output is rounded to fp16 (ulp 0.03 at 32..64), x is exact, and the dequantized
#         weight is either an exact small integer (scale applied to the fp32 accumulator) or
#         (q - z) * s rounded to fp16 (relative 5e-4 per weight, random over K)
#   bf16 (GPU only): 8-bit mantissa; output ulp 0.25 at 32..64
TOLERANCES = {
    torch.float32: (1e-4, 1e-4),
    torch.float16: (4e-2, 4e-3),
    torch.bfloat16: (3e-1, 2e-2),
}

# scheme name -> odd (N, K): K valid for the group size but not a multiple of the 128-wide tile
SHAPES = {
    "int4-g32": (72, 160),
    "int4-g32-asym": (40, 224),
    "int4-g64-asym": (56, 192),
    "int4-g128": (24, 384),
    "int4-g128-asym": (33, 256),
    "int8": (72, 200),
}

# (M, config): the GEMV (+ split-K, + several K tiles per step, + M > 1), the skinny dot (+ split-K),
# and the prefill GEMM with BLOCK_M above and below the group size
PATHS = {
    "gemv": (1, MatmulConfig("gemv", block_n=64, tiles=2)),
    "gemv-splitk": (1, MatmulConfig("gemv", block_n=32, tiles=1, split_k=2)),
    "gemv-rows": (3, MatmulConfig("gemv", block_n=64, tiles=4)),  # one program row per token
    "skinny": (5, MatmulConfig("dot", block_m=16, block_n=64)),
    "skinny-splitk": (33, MatmulConfig("dot", block_m=64, block_n=32, split_k=3)),
    "gemm": (67, MatmulConfig("dot", block_m=64, block_n=64, group_m=2)),
    # one K=128 dot per tile: per-channel, one group per tile (g128), several groups (g32/g64)
    "skinny-k128": (5, MatmulConfig("dot", block_m=16, block_n=64, k128=True)),
    "skinny-k128-splitk": (33, MatmulConfig("dot", block_m=64, block_n=32, split_k=3, k128=True)),
    "gemm-k128": (67, MatmulConfig("dot", block_m=64, block_n=64, group_m=2, k128=True)),
}


def make_weight(name: str, gen: torch.Generator, scale_dtype=torch.float16):
    n, k = SHAPES[name]
    scheme = QuantScheme.from_name(name)
    qw = quantize_rtn(torch.randn(n, k, generator=gen), scheme, scale_dtype)
    return repack_for_kernel(qw, DEVICE), n, k


@pytest.fixture
def poisoned_partials(monkeypatch):
    """Split-K partial buffers start as NaN: a partial no program writes poisons the sum."""
    allocated = []

    def alloc(split_k, m, n, device):
        buf = torch.full((split_k, m, n), math.nan, dtype=torch.float32, device=device)
        allocated.append(buf)
        return buf

    monkeypatch.setattr(qm, "_alloc_partials", alloc)
    return allocated


def run_and_check(x, kw, bias, config):
    out = torch.full((x.shape[0], kw.out_features), math.nan, dtype=x.dtype, device=x.device)
    y = quant_matmul(x, kw, bias, out=out, config=config)
    assert y is out
    ref = quant_matmul_reference(x, kw, bias)
    atol, rtol = TOLERANCES[x.dtype]
    assert not torch.isnan(y).any(), "some outputs were never written"
    torch.testing.assert_close(y.float(), ref, atol=atol, rtol=rtol)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize("name", list(SHAPES))
def test_kernel_matches_reference(name, path, dtype, seeded, poisoned_partials):
    kw, n, k = make_weight(name, seeded)
    m, config = PATHS[path]
    x = torch.randn(m, k, generator=seeded).to(DEVICE, dtype)
    bias = torch.randn(n, generator=seeded).to(DEVICE, dtype) if path != "gemm" else None
    run_and_check(x, kw, bias, config)
    if config.split_k > 1:
        assert poisoned_partials, "split-K config did not use the two-phase reduction"


@pytest.mark.parametrize("scale_dtype", [torch.float32, torch.bfloat16])
def test_scale_dtypes_other_than_fp16(scale_dtype, seeded):
    kw, n, k = make_weight("int4-g64-asym", seeded, scale_dtype)
    x = torch.randn(3, k, generator=seeded).to(DEVICE)
    run_and_check(x, kw, None, MatmulConfig("dot", block_m=16, block_n=64))


def test_default_config_is_used_when_none_given(seeded):
    kw, n, k = make_weight("int4-g128", seeded)
    for m in (1, 2, 70):
        x = torch.randn(m, k, generator=seeded).to(DEVICE, torch.float16)
        run_and_check(x, kw, None, None)


def test_entry_points_check_bits(seeded):
    kw4, _, k4 = make_weight("int4-g32", seeded)
    kw8, _, k8 = make_weight("int8", seeded)
    x4 = torch.randn(1, k4, generator=seeded).to(DEVICE)
    x8 = torch.randn(1, k8, generator=seeded).to(DEVICE)
    torch.testing.assert_close(int4_matmul(x4, kw4).float(), quant_matmul_reference(x4, kw4), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(int8_matmul(x8, kw8).float(), quant_matmul_reference(x8, kw8), atol=1e-4, rtol=1e-4)
    with pytest.raises(ShapeError, match="int8_matmul"):
        int4_matmul(x8, kw8)
    with pytest.raises(ShapeError, match="int4_matmul"):
        int8_matmul(x4, kw4)


def test_empty_batch_returns_empty_output(seeded):
    kw, n, k = make_weight("int4-g32", seeded)
    y = quant_matmul(torch.empty(0, k, device=DEVICE), kw)
    assert y.shape == (0, n)


def test_bad_inputs_raise_clear_errors(seeded):
    kw, n, k = make_weight("int4-g32", seeded)
    x = torch.randn(4, k, generator=seeded).to(DEVICE)
    with pytest.raises(ShapeError, match="K and N must be positive"):
        quant_matmul(torch.empty(4, 0, device=DEVICE), kw)
    with pytest.raises(ShapeError, match="K and N must be positive"):
        quant_matmul(x, dataclasses.replace(kw, out_features=0))
    with pytest.raises(ShapeError, match="not divisible by the group size"):
        quant_matmul(torch.randn(4, k + 16, device=DEVICE), kw)
    with pytest.raises(ShapeError, match="expects"):
        quant_matmul(torch.randn(4, k + 32, device=DEVICE), kw)
    with pytest.raises(DtypeError, match="float16, bfloat16 or float32"):
        quant_matmul(x.to(torch.float64), kw)
    with pytest.raises(DtypeError, match="float16, bfloat16 or float32"):
        quant_matmul(x.to(torch.int32), kw)
    with pytest.raises(LayoutError, match="contiguous"):
        quant_matmul(torch.randn(k, 4, device=DEVICE).t(), kw)
    with pytest.raises(ShapeError, match="2-D"):
        quant_matmul(x.view(2, 2, k), kw)
    with pytest.raises(ShapeError, match="bias must have shape"):
        quant_matmul(x, kw, torch.zeros(n + 1, device=DEVICE))
    with pytest.raises(DtypeError, match="bias dtype"):
        quant_matmul(x, kw, torch.zeros(n, dtype=torch.float16, device=DEVICE))
    with pytest.raises(ShapeError, match="out must be"):
        quant_matmul(x, kw, out=torch.empty(4, n + 1, device=DEVICE))
    with pytest.raises(ShapeError, match="qweight must be int32"):
        quant_matmul(x, dataclasses.replace(kw, qweight=kw.qweight[:, :-1].contiguous()))
    with pytest.raises(ShapeError, match="scale must be contiguous"):
        quant_matmul(x, dataclasses.replace(kw, scale=kw.scale.t().contiguous().t()))


def test_mismatched_devices_and_cpu_without_interpreter(seeded, monkeypatch):
    kw, n, k = make_weight("int4-g32", seeded)
    x = torch.randn(2, k, generator=seeded).to(DEVICE)
    other = torch.device("cpu") if DEVICE.type == "cuda" else torch.device("meta")
    with pytest.raises(DeviceError, match="different devices"):
        quant_matmul(x, kw, torch.zeros(n, device=other))
    cpu_kw, _, _ = make_weight("int4-g32", seeded)
    cpu_kw = repack_for_kernel(qm.unpack_kernel_weight(cpu_kw), "cpu")
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(DeviceError, match="CUDA devices"):
        quant_matmul(torch.randn(2, k), cpu_kw)


def test_configs_and_heuristics_are_valid():
    with pytest.raises(ValueError):
        MatmulConfig("dot", block_n=64, block_m=8)
    with pytest.raises(ValueError):
        MatmulConfig("gemv", block_n=48)
    with pytest.raises(ValueError):
        MatmulConfig("tiled", block_n=64)
    for m in (1, 2, 16, 17, 64, 65, 2048):
        for n, k in ((4096, 4096), (1024, 4096), (4096, 14336)):
            for bits in (4, 8):
                cfg = qm.heuristic_config(m, n, k, bits, sms=132)
                assert cfg.kernel == ("gemv" if m == 1 else "dot")
                cands = qm.candidate_configs(m, n, k, bits, sms=132)
                assert cands and all(c.kernel == cfg.kernel for c in cands)
                # split-K only where the output tiles alone underfill the 132 SMs
                for c in cands:
                    bm = 1 if c.kernel == "gemv" else c.block_m
                    tiles = math.ceil(m / bm) * math.ceil(n / c.block_n)
                    assert c.split_k == 1 or tiles * (c.split_k // 2) < 2 * 132
    assert qm.m_bucket(1) == 1 and qm.m_bucket(3) == 16 and qm.m_bucket(33) == 64 and qm.m_bucket(10**6) == 4096


@pytest.mark.skipif(not ON_GPU, reason="bf16 tl.dot is wrong in the Triton interpreter; bf16 is checked on a CUDA GPU")
@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize("name", ["int4-g128", "int4-g32-asym", "int8"])
def test_bf16_on_gpu(name, path, seeded, poisoned_partials):
    kw, n, k = make_weight(name, seeded, torch.bfloat16)
    m, config = PATHS[path]
    x = torch.randn(m, k, generator=seeded).to(DEVICE, torch.bfloat16)
    run_and_check(x, kw, torch.randn(n, generator=seeded).to(DEVICE, torch.bfloat16), config)


@pytest.mark.skipif(not ON_GPU, reason="tuning times kernels on a CUDA GPU")
def test_tuning_on_gpu_is_cached_on_disk(seeded, tmp_path):
    from kernels.autotune_cache import TuningCache

    kw, n, k = make_weight("int4-g128", seeded)
    cache = TuningCache(tmp_path / "tune.json")
    x = torch.randn(1, k, generator=seeded).to(DEVICE, torch.float16)
    y = quant_matmul(x, kw, cache=cache)
    torch.testing.assert_close(y.float(), quant_matmul_reference(x, kw), atol=4e-2, rtol=4e-3)
    assert "quant_matmul" in (tmp_path / "tune.json").read_text()
