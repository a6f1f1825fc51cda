"""The bf16 CPU fast path (kernels.cpu_matmul) against the float32 reference, through the raw ops,
QuantLinear (compressed-tensors int4 / int8) and BlockQuantLinear (GGUF Q4_0 / Q4_1 / Q8_0).

Tolerance: relative Frobenius error ||y - ref|| / ||ref|| < 1e-2, ref = float32 x @ W.T of the same
(bf16-valued) x. bfloat16 keeps 8 significant bits (unit roundoff 2^-9 = 0.2 %): the scales and zeros
are rounded to bf16 (each weight off by at most ~2^-9 of its group's range), the output is rounded
to bf16 (2^-9), accumulation is float32. Measured 0.2-0.4 %; 1 % leaves room for unlucky draws and
flags any real error (a wrong zero or nibble order gives 20-60 %).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from gguf import GGMLQuantizationType
from gguf.quants import dequantize as gguf_dequantize
from gguf.quants import quantize as gguf_quantize

from kernels import BlockQuantLinear, QuantizedWeight, QuantLinear, QuantScheme
from kernels.cpu_matmul import Int4CpuWeight, Int8CpuWeight, int4_linear, int8_linear, prepack_int4, prepack_int8
from kernels.gguf_blocks import blocks_from_gguf

RTOL = 1e-2  # see the module docstring
SHAPES = [(1, ), (16, ), (2, 5)]  # leading dims: batch 1 (decode), batch 16, 3-D input


def rel_err(y: torch.Tensor, ref: torch.Tensor) -> float:
    assert y.shape == ref.shape
    return ((y.float() - ref).norm() / ref.norm()).item()


def bf16_input(lead: tuple[int, ...], k: int, gen: torch.Generator) -> torch.Tensor:
    return torch.randn(*lead, k, generator=gen).to(torch.bfloat16)


@pytest.mark.parametrize("group_size", [32, 64, 128])
def test_int4_op_convention(group_size, seeded):
    """W = (code - 8) * scale + zero, float zero per (row, group): what prepack_int4 promises."""
    n, k = 48, 256
    codes = torch.randint(0, 16, (n, k), generator=seeded)
    scale = torch.rand(n, k // group_size, generator=seeded) * 0.1 + 0.01
    zero = torch.randn(n, k // group_size, generator=seeded) * 0.1
    w = prepack_int4(codes, scale, zero, group_size)
    ref_w = (codes.float() - 8) * scale.bfloat16().float().repeat_interleave(group_size, 1) \
        + zero.bfloat16().float().repeat_interleave(group_size, 1)
    x = bf16_input((7,), k, seeded)
    bias = torch.randn(n, generator=seeded)
    assert rel_err(int4_linear(x, w, bias), x.float() @ ref_w.T + bias) < RTOL
    q = torch.randint(-128, 128, (n, k), generator=seeded, dtype=torch.int8)
    s = torch.rand(n, 1, generator=seeded) * 0.01
    assert rel_err(int8_linear(x, prepack_int8(q, s)), x.float() @ (q.float() * s.bfloat16().float()).T) < RTOL


def make_quant_linear(name: str, n: int, k: int, gen: torch.Generator) -> QuantLinear:
    scheme = QuantScheme.from_name(name)
    groups = k // scheme.group_size if scheme.group_size else 1
    lo, hi = scheme.qmin, scheme.qmax + 1
    qw = QuantizedWeight(
        torch.randint(lo, hi, (n, k), generator=gen, dtype=torch.int8),
        (torch.rand(n, groups, generator=gen) * 0.05 + 0.005).to(torch.float16),
        None if scheme.symmetric else torch.randint(lo, hi, (n, groups), generator=gen, dtype=torch.int8),
        scheme.bits, scheme.group_size,
    )
    return QuantLinear.from_quantized(qw, scheme, torch.randn(n, generator=gen).to(torch.float16))


@pytest.mark.parametrize("name", ["int4-g32", "int4-g32-asym", "int4-g64", "int4-g64-asym", "int4-g128",
                                  "int4-g128-asym", "int8"])
def test_quant_linear_bf16_fast_path(name, seeded):
    n, k = 96, 640  # K divisible by 32, 64 and 128
    ql = make_quant_linear(name, n, k, seeded)
    w = ql.quantized_weight().dequantize(torch.float32)
    bias = ql.bias.float()
    for lead in SHAPES:
        x = bf16_input(lead, k, seeded)
        y = ql(x)
        assert y.dtype == torch.bfloat16
        assert rel_err(y, F.linear(x.float(), w, bias)) < RTOL, (name, lead)
    # it ran the packed op, not a dense copy
    assert isinstance(ql._cpu_cache[1], Int8CpuWeight if name == "int8" else Int4CpuWeight)
    assert ql._dequant_cache is None


@pytest.mark.parametrize("name", ["int4-g32", "int4-g64-asym", "int8"])
def test_quant_linear_float32_is_unchanged(name, seeded):
    """float32 inputs keep the reference path: bit for bit dequantize + F.linear."""
    ql = make_quant_linear(name, 40, 128, seeded)
    x = torch.randn(3, 2, 128, generator=seeded)
    expected = F.linear(x, ql.quantized_weight().dequantize(torch.float32), ql.bias.float())
    assert torch.equal(ql(x), expected)
    ql(x.bfloat16())  # builds the CPU cache; float32 is still the reference afterwards
    assert torch.equal(ql(x), expected)
    assert ql._cpu_cache is not None


def test_fast_path_caches_follow_the_buffers(seeded):
    ql = make_quant_linear("int4-g32", 32, 64, seeded)
    x = bf16_input((4,), 64, seeded)
    y0 = ql(x)
    first = ql._cpu_cache
    assert torch.equal(ql(x), y0) and ql._cpu_cache is first  # reused
    with torch.no_grad():
        ql.weight_scale.mul_(2)  # in-place edit: version counter moves, the prepacked weight is rebuilt
    y1 = ql(x)
    assert ql._cpu_cache is not first
    assert rel_err(y1 - ql.bias.bfloat16(), 2 * (y0 - ql.bias.bfloat16()).float()) < RTOL
    other = make_quant_linear("int4-g32", 32, 64, seeded)
    ql.load_state_dict(other.state_dict())
    assert rel_err(ql(x), F.linear(x.float(), other.quantized_weight().dequantize(), other.bias.float())) < RTOL


def test_quant_linear_falls_back_where_the_int4_op_cannot_run(seeded):
    ql = make_quant_linear("int4-g32", 40, 64, seeded)  # N = 40: not a multiple of 16
    x = bf16_input((3,), 64, seeded)
    ref = F.linear(x.float(), ql.quantized_weight().dequantize(), ql.bias.float())
    assert rel_err(ql(x), ref) < RTOL
    assert ql.cpu_weight() is None


def make_block_linear(type_name: str, n: int, k: int, seed: int) -> tuple[BlockQuantLinear, torch.Tensor]:
    w = np.random.default_rng(seed).standard_normal((n, k)).astype(np.float32) * 0.05
    raw = gguf_quantize(w, GGMLQuantizationType[type_name])
    layer = BlockQuantLinear(k, n, False, type_name=type_name)
    layer.load_blocks(blocks_from_gguf(type_name, raw, (n, k)))
    return layer, torch.from_numpy(gguf_dequantize(raw, GGMLQuantizationType[type_name]).copy())


@pytest.mark.parametrize("type_name", ["Q4_0", "Q4_1", "Q8_0"])
def test_block_linear_bf16_fast_path(type_name, seeded):
    n, k = 192, 576  # SmolLM2's k_proj: K = 576 is not a multiple of 128
    layer, w = make_block_linear(type_name, n, k, seed=11)
    for lead in SHAPES:
        x = bf16_input(lead, k, seeded)
        y = layer(x)
        assert y.dtype == torch.bfloat16
        assert rel_err(y, F.linear(x.float(), w)) < RTOL, (type_name, lead)
    if type_name == "Q8_0":
        # no per-block int8 op: two int4 halves (q = 16 hi + lo) for decode-sized inputs, the bf16
        # dense copy of the exact weight for more rows than SPLIT_MAX_ROWS
        from kernels.cpu_matmul import SPLIT_MAX_ROWS, SplitInt4CpuWeight

        assert isinstance(layer.cpu_weight(), SplitInt4CpuWeight)
        layer._dequant_cache = None
        x = bf16_input((SPLIT_MAX_ROWS,), k, seeded)
        assert rel_err(layer(x), F.linear(x.float(), w)) < RTOL and layer._dequant_cache is None
        x = bf16_input((SPLIT_MAX_ROWS + 1,), k, seeded)
        assert rel_err(layer(x), F.linear(x.float(), w)) < RTOL
        assert layer._dequant_cache is not None and torch.equal(layer._dequant_cache[1], w.bfloat16())
    else:
        assert isinstance(layer.cpu_weight(), Int4CpuWeight)
    layer.backend = "torch"  # the reference, in bf16
    x = bf16_input((2,), k, seeded)
    assert torch.equal(layer(x), F.linear(x, w.bfloat16()))


def test_split_int8_halves_rebuild_every_int8_value_exactly():
    """q = 16 hi + lo for every q in -128..127: with unit scales, one-hot inputs read each weight back exactly."""
    from kernels.cpu_matmul import prepack_split_int8, split_linear

    n, k = 256, 64
    q = (torch.arange(n * k, dtype=torch.int32) % 256 - 128).view(n, k).to(torch.int8)
    w = prepack_split_int8(q, torch.ones(n, k // 32), 32)
    y = split_linear(torch.eye(k, dtype=torch.bfloat16), w)  # row j: column j of W
    assert torch.equal(y.float().T, q.float())


def test_concat_int4_equals_the_separate_calls_and_refuses_mismatched_groups(seeded):
    """Fused projections (serving.runner): stacking prepacked int4 weights computes each one's output
    bit for bit, at decode and prefill row counts; weights of different group sizes or K do not stack."""
    from kernels.cpu_matmul import concat_int4

    def weight(n, k, g):
        codes = torch.randint(0, 16, (n, k), generator=seeded)
        scale = torch.rand(n, k // g, generator=seeded) * 0.02
        return prepack_int4(codes, scale, -scale * torch.rand(n, k // g, generator=seeded), g)

    parts = [weight(64, 128, 32), weight(32, 128, 32), weight(48, 128, 32)]
    fused = concat_int4(parts)
    assert fused.out_features == 144 and fused.in_features == 128
    for rows in (1, 3, 17):
        x = bf16_input((rows,), 128, seeded)
        assert torch.equal(int4_linear(x, fused), torch.cat([int4_linear(x, w) for w in parts], dim=-1))
    assert concat_int4([parts[0], weight(32, 128, 64)]) is None
    assert concat_int4([parts[0], weight(32, 256, 32)]) is None
