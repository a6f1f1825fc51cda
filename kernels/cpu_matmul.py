"""Weight-only int4 / int8 matmuls on the CPU in bfloat16, through torch's own packed ops.

The plain-torch reference path of our quantized layers dequantizes the weight to a float copy and
calls F.linear. On a CPU with AVX-512 (and AMX) torch ships faster weight-only kernels that read
the integers directly and compute in bfloat16 with float32 accumulation:

    int4: torch._convert_weight_to_int4pack_for_cpu(codes int32 [N, K] in 0..15, 1) -> uint8 [N, K/2]
          torch._weight_int4pack_mm_for_cpu(x bf16 [M, K], packed, G, scales_and_zeros bf16 [K/G, N, 2])
          computes x @ W.T with  W[n, k] = (code[n, k] - 8) * scale[n, g] + zero[n, g],  g = k // G,
          zero a float (not an integer zero point); G in 32/64/128/256 and N % 16 == 0.
    int8: torch._weight_int8pack_mm(x bf16 [M, K], q int8 [N, K], scale bf16 [N])
          computes x @ (q * scale[:, None]).T: one scale per output row (no groups along K).

(The convention, checked by tests/kernels/test_cpu_fast_path.py against the float32 reference.)
Mapping our formats onto them, with code = q + 8 for the signed int4 q of `kernels.packing`:

    compressed-tensors int4 sym     W = q * s                 -> scale s, zero 0
    compressed-tensors int4 asym    W = (q - zp) * s          -> scale s, zero -zp * s
    GGUF Q4_0                       W = d * (code - 8)        -> scale d, zero 0
    GGUF Q4_1                       W = d * code + m          -> scale d, zero m + 8 d
    compressed-tensors int8         W = q * s (per row)       -> _weight_int8pack_mm as is
    GGUF Q8_0                       W = d * q, d per 32 along K: no int8 op takes per-block scales;
                                    it runs as a bf16 dense matmul of the dequantized weight.

Scales and zeros are rounded to bfloat16 (8 significant bits) and the output is bfloat16, so the
result differs from the float32 reference by about 2^-9 relative (measured: 0.2-0.4 % relative
Frobenius error over whole outputs; the tests allow 1 %).

Q8_0 options, measured on this machine (Intel Xeon, AVX-512 + AMX, torch 2.13.0+cpu,
torch.set_num_threads(2), min over repeated calls on a shared machine; the script is
/tmp/cf15k/bench_cpu_matmul.py of the issue-15 report), microseconds at batch 1 / batch 16:

    shape (N x K)    f32 cached dense   bf16 dense (chosen)   int8pack_mm, requantized per row
    1536 x 576          52 / 188            77 / 99               30 / 230
    576 x 1536          54 / 456            95 / 95               33 / 211
    49152 x 576       2573 / 7263         2253 / 2444           1131 / 8073

_weight_int8pack_mm is the fastest at batch 1, but it takes one scale per output row: requantizing
a Q8_0 weight (18 scales per row of 576) to one scale per row rounds every q again and changes the
weights the file describes (lossy, unlike every other path here). The bf16 dense copy of the
exactly dequantized weight computes what the file says (rounded to bf16 like the int4 paths'
scales); in GGUF models Q8_0 is typically the lm_head (49152 x 576), where it beats float32 at
every batch size (at batch 1 on small layers torch's bf16 GEMV is slower than its float32 one).
Splitting q into two int4 halves keeps the weights too: q = 16 hi + lo with hi in -8..7 and lo in
0..15, so W = d q = (16 d) hi + d lo, two int4 matmuls over the same blocks of 32 (hi: scale 16 d,
zero 0; lo: scale d, zero 8 d), reading as many bytes as the int8 weight. Measured for SmolLM2's
lm_head (49152 x 576, /tmp/cf/split.py of the issue-15 report, on a 2-core AMD EPYC while other
work ran): batch 1, 1 thread 2.8 ms against 5.4 ms for the bf16 dense copy, 2 threads 2.4 against
3.9; batch 16, 13.3 against 5.3 ms. So `SplitInt4CpuWeight` takes inputs of at most
`SPLIT_MAX_ROWS` rows (decode) and the bf16 dense copy the rest (prefill, big batches); the
relative error against float32 is 0.30 % (two bf16-rounded scales) against 0.24 %.
"""

from __future__ import annotations

import dataclasses

import torch

from kernels.errors import DeviceError, DtypeError, ShapeError

INT4_GROUP_SIZES = (32, 64, 128, 256)  # what _weight_int4pack_mm_for_cpu accepts
INT4_N_MULTIPLE = 16  # _convert_weight_to_int4pack_for_cpu needs N % 16 == 0


@dataclasses.dataclass(frozen=True)
class Int4CpuWeight:
    """An int4 weight prepacked for `_weight_int4pack_mm_for_cpu` (built once, reused per call)."""

    packed: torch.Tensor  # uint8 [N, K/2], torch's CPU int4 layout
    scales_and_zeros: torch.Tensor  # bf16 [K/G, N, 2]: (scale, zero) of each (group, row)
    group_size: int
    out_features: int
    in_features: int


@dataclasses.dataclass(frozen=True)
class Int8CpuWeight:
    """A per-row int8 weight for `_weight_int8pack_mm`."""

    qweight: torch.Tensor  # int8 [N, K]
    scale: torch.Tensor  # bf16 [N]
    out_features: int
    in_features: int


@dataclasses.dataclass(frozen=True)
class SplitInt4CpuWeight:
    """A blockwise int8 weight (GGUF Q8_0) as two int4 weights, q = 16 hi + lo (module docstring)."""

    hi: Int4CpuWeight  # codes hi + 8, scale 16 d, zero 0
    lo: Int4CpuWeight  # codes lo, scale d, zero 8 d
    out_features: int
    in_features: int


SPLIT_MAX_ROWS = 4  # up to this many input rows the split wins; beyond, the caller's dense path does


CpuWeight = Int4CpuWeight | Int8CpuWeight | SplitInt4CpuWeight


def int4_supported(out_features: int, in_features: int, group_size: int) -> bool:
    """Whether torch's CPU int4 op can run this shape (else callers use the bf16 dense path)."""
    return (group_size in INT4_GROUP_SIZES and in_features % group_size == 0
            and out_features % INT4_N_MULTIPLE == 0 and hasattr(torch.ops.aten, "_weight_int4pack_mm_for_cpu"))


def prepack_int4(codes: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, group_size: int) -> Int4CpuWeight:
    """Prepack W = (code - 8) * scale + zero for the CPU int4 op.

    codes: integer [N, K] in 0..15; scale, zero: float [N, K/G] (computed by the caller in float32,
    rounded to bf16 here). Raises ShapeError for shapes the op cannot take (see `int4_supported`).
    """
    if codes.ndim != 2:
        raise ShapeError(f"codes must be 2-D [N, K], got {tuple(codes.shape)}")
    n, k = codes.shape
    if not int4_supported(n, k, group_size):
        raise ShapeError(
            f"the CPU int4 op needs group_size in {INT4_GROUP_SIZES} dividing K and N % {INT4_N_MULTIPLE} == 0; "
            f"got N={n}, K={k}, group_size={group_size}; use the dense bf16 path for this layer"
        )
    if tuple(scale.shape) != (n, k // group_size) or tuple(zero.shape) != (n, k // group_size):
        raise ShapeError(f"scale and zero must be [{n}, {k // group_size}], got {tuple(scale.shape)}, {tuple(zero.shape)}")
    if codes.device.type != "cpu":
        raise DeviceError(f"prepack_int4 builds a CPU weight; the codes are on {codes.device}")
    packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(codes.to(torch.int32).contiguous(), 1)
    sz = torch.stack([scale.to(torch.float32), zero.to(torch.float32)], dim=-1)  # [N, K/G, 2]
    sz = sz.transpose(0, 1).contiguous().to(torch.bfloat16)  # [K/G, N, 2]
    return Int4CpuWeight(packed, sz, group_size, n, k)


def concat_int4(weights: list[Int4CpuWeight]) -> Int4CpuWeight | None:
    """One int4 weight whose output is the concatenation of several weights' outputs (their rows
    stacked): fused QKV or gate/up projections, one op call instead of several. torch's CPU layout
    packs each row on its own (two codes a byte along K), so stacking the packed rows and the
    (scale, zero) columns is exact: the outputs equal the separate calls' bit for bit (tested).
    None when the weights differ in K or group size (they cannot share one call)."""
    first = weights[0]
    if any(w.in_features != first.in_features or w.group_size != first.group_size for w in weights):
        return None
    return Int4CpuWeight(torch.cat([w.packed for w in weights]),
                         torch.cat([w.scales_and_zeros for w in weights], dim=1),
                         first.group_size, sum(w.out_features for w in weights), first.in_features)


def prepack_split_int8(q: torch.Tensor, scale: torch.Tensor, group_size: int) -> SplitInt4CpuWeight:
    """Prepack W = q * scale (q int8 [N, K], one float scale per group of ``group_size`` along K) as two int4 weights."""
    q = q.to(torch.int32)
    hi = torch.div(q, 16, rounding_mode="floor")  # -8..7
    lo = q - 16 * hi  # 0..15
    s = scale.to(torch.float32)
    n, k = q.shape
    return SplitInt4CpuWeight(prepack_int4(hi + 8, 16.0 * s, torch.zeros_like(s), group_size),
                              prepack_int4(lo, s, 8.0 * s, group_size), n, k)


def prepack_int8(qweight: torch.Tensor, scale: torch.Tensor) -> Int8CpuWeight:
    """W = q * scale[:, None] with int8 q [N, K] and one scale per row ([N] or [N, 1])."""
    if qweight.dtype != torch.int8 or qweight.ndim != 2:
        raise DtypeError(f"qweight must be a 2-D int8 tensor, got {qweight.dtype} {tuple(qweight.shape)}")
    n, k = qweight.shape
    if scale.numel() != n:
        raise ShapeError(f"int8 per-row weight needs {n} scales, got {tuple(scale.shape)}")
    if qweight.device.type != "cpu":
        raise DeviceError(f"prepack_int8 builds a CPU weight; the weight is on {qweight.device}")
    return Int8CpuWeight(qweight.contiguous(), scale.reshape(n).to(torch.bfloat16).contiguous(), n, k)


def _check_input(x: torch.Tensor, in_features: int) -> None:
    if x.dtype != torch.bfloat16:
        raise DtypeError(f"the CPU fast path computes in bfloat16, got a {x.dtype} input; cast it or use the reference")
    if x.device.type != "cpu":
        raise DeviceError(f"the CPU fast path needs a CPU input, got {x.device}")
    if x.shape[-1] != in_features:
        raise ShapeError(f"input has {x.shape[-1]} features, the weight expects {in_features}")


def _finish(y: torch.Tensor, lead: torch.Size, bias: torch.Tensor | None) -> torch.Tensor:
    if bias is not None:
        y = y + bias.to(y.dtype)
    return y.reshape(*lead, y.shape[-1])


def int4_linear(x: torch.Tensor, weight: Int4CpuWeight, bias: torch.Tensor | None = None) -> torch.Tensor:
    """y = x @ W.T + bias for a bf16 CPU input [..., K]; returns bf16 [..., N]."""
    _check_input(x, weight.in_features)
    lead = x.shape[:-1]
    x2 = x.reshape(-1, weight.in_features).contiguous()
    y = torch.ops.aten._weight_int4pack_mm_for_cpu(x2, weight.packed, weight.group_size, weight.scales_and_zeros)
    return _finish(y, lead, bias)


def int8_linear(x: torch.Tensor, weight: Int8CpuWeight, bias: torch.Tensor | None = None) -> torch.Tensor:
    """y = x @ (q * scale).T + bias for a bf16 CPU input [..., K]; returns bf16 [..., N]."""
    _check_input(x, weight.in_features)
    lead = x.shape[:-1]
    x2 = x.reshape(-1, weight.in_features).contiguous()
    y = torch.ops.aten._weight_int8pack_mm(x2, weight.qweight, weight.scale)
    return _finish(y, lead, bias)


def split_linear(x: torch.Tensor, weight: SplitInt4CpuWeight, bias: torch.Tensor | None = None) -> torch.Tensor:
    """y = x @ (16 d hi + d lo).T + bias: the two int4 halves of a blockwise int8 weight."""
    y = int4_linear(x, weight.hi)
    y += int4_linear(x, weight.lo)
    return y if bias is None else y + bias.to(y.dtype)


def cpu_linear(x: torch.Tensor, weight: CpuWeight, bias: torch.Tensor | None = None) -> torch.Tensor:
    """Dispatch to `int4_linear`, `int8_linear` or `split_linear` by the prepacked weight's kind."""
    if isinstance(weight, Int4CpuWeight):
        return int4_linear(x, weight, bias)
    if isinstance(weight, SplitInt4CpuWeight):
        return split_linear(x, weight, bias)
    return int8_linear(x, weight, bias)


def is_cpu_fast_path(x: torch.Tensor) -> bool:
    """Whether an input takes the bf16 CPU fast path (bf16 on the CPU); float32 keeps the reference."""
    return x.dtype == torch.bfloat16 and x.device.type == "cpu"
