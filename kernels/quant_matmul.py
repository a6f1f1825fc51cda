"""Weight-only quantized matmul: y = x @ dequant(W).T (+ bias), int4 group-wise and int8 per channel.

Three layers, as everywhere in `kernels`:
- private Triton kernels: `_quant_gemv_kernel` (decode, M = 1: FMA sweep, no tensor cores),
  `_quant_dot_kernel` (M >= 2: tensor-core dots; skinny decode batches and prefill) and
  `_splitk_reduce_kernel` (second phase of split-K);
- launchers `int4_matmul` / `int8_matmul` (-> `quant_matmul`): check shapes, dtypes, devices and
  contiguity with clear errors, pick a config (tuned and cached per device and shape), allocate
  and launch;
- the module wrapper is `kernels.quant_linear.QuantLinear`.
Beside them, `quant_matmul_reference` is the plain-torch fp32 reference the tests compare against.

Design (targets on an H100: int4-g128 at M=1 >= 85% of copy bandwidth and >= 3.4x cuBLAS fp16).
At decode sizes the op is a stream over the weights: int4 moves a quarter of fp16's bytes, so the
ceiling is ~4x, and every instruction per weight counts:
- Weights use the tiled layout of `kernels.layouts`: lane j of a word tile is R consecutive input
  features, so one shift+mask yields a [BLOCK_N, R] slice that meets R contiguous activations.
- No int->float conversion instructions (quarter rate on Hopper): OR-ing the field into the
  mantissa of 2^23 (0x4B000000) and bitcasting gives the float 2^23 + u exactly; subtracting
  (2^23 + zero) recovers (u - zero) exactly. Dequantizing costs shift, and/or, fsub per weight.
- Scales are applied once per group, not per weight: the GEMV accumulates (u - zero) * x over a
  group's lanes and multiplies by the scale at the group's end; the dot kernel runs the dot on
  exact small integers (representable in fp16 and bf16) and scales the [BLOCK_M, BLOCK_N] partial
  when that is cheaper (BLOCK_M <= G), else scales the [BLOCK_N, R] weight slice.
- The dot kernel either runs one dot of depth R per lane (LANES dots per 128-wide K tile) or,
  with `MatmulConfig.k128`, dequantizes the whole [BLOCK_N, 128] tile at once (a broadcast shift
  by the lane offsets, reshaped in the layout's k order) and runs one K=128 dot per tile; which
  is faster is a tuning choice, measured on the GPU.
- The GEMV (M = 1) uses FMAs, not tensor cores: a dot would stage every dequantized weight through
  shared memory, which at HBM speed costs more shared-memory bandwidth than the SM has.
- Split-K where the output tiles alone would underfill the GPU: the K tiles are divided among
  SPLIT_K programs that write fp32 partials [SPLIT_K, M, N]; a second kernel sums them in a fixed
  order and adds the bias (deterministic, no atomics, no zero-fill of the output).
- Configs are tuned per (device, bits, group, zero, dtype, N, K, M bucket) and cached on disk
  (`kernels.autotune_cache`); CUDA-graph capture reads the same cache (and the configs this
  process already launched, whose kernels are loaded), so a graph runs the tuned kernel; only a
  cache miss during capture, counted and warned about, uses the heuristic config, as does the
  CPU interpreter.
- Offsets switch to int64 arithmetic (constexpr INT64) when some element offset of a launch
  reaches 2^31, and FP fusion is set explicitly at every launch (`FP_FUSION`).
fp16 and bf16 activations are the production dtypes; fp32 is accepted (exact "ieee" dots) so the
CPU interpreter can check the kernels bit-for-bit-ish against the reference.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable

import torch
import triton
import triton.language as tl

from commonforge.settings import triton_interpreter
from kernels.autotune_cache import TuningCache, default_cache, pick_fastest, tuning_key
from kernels.errors import DeviceError, DtypeError, LayoutError, ShapeError
from kernels.layouts import TILE_K, KernelWeight, unpack_kernel_weight, words_per_tile

ACT_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
GEMV_MAX_M = 1  # M above this uses tensor-core dots
SKINNY_MAX_M = 64  # decode batches up to here: BLOCK_M = 16..64, split-K allowed
INT32_LIMIT = 2**31  # element offsets from here on need int64 index arithmetic
# Triton's FP-fusion choice, fixed rather than inherited: Triton 3.9 turned its default off
# (3.6 had it on). Fusion makes (u - zero) * x + acc one FMA per weight instead of a multiply
# and an add, and its bits are what the reference tolerances were set against.
FP_FUSION = True


# ----------------------------------------------------------------------------- Triton kernels


@triton.jit
def _lane_as_magic_float(words, LANE: tl.constexpr, BITS: tl.constexpr):
    # lane LANE of every int32 word -> float32 2^23 + u, exactly (u < 2^BITS is ORed into the
    # mantissa of 2^23, whose ulp is 1), with no int->float conversion instruction
    field = (words >> (LANE * BITS)) & ((1 << BITS) - 1)
    return (field | 0x4B000000).to(tl.float32, bitcast=True)


@triton.jit
def _dot_acc(x, w, acc):
    # acc [BM, BN] += x [BM, R] @ w[BN, R]^T, with w converted to x's dtype (exact for the
    # small integers of the scale-on-accumulator path); fp32 inputs use exact fp32 dots
    wt = tl.trans(w.to(x.dtype))
    if x.dtype == tl.float32:
        return tl.dot(x, wt, acc, input_precision="ieee")
    else:
        return tl.dot(x, wt, acc)


@triton.jit
def _scale_and_zero(scale_ptr, zero_ptr, offs, mask, HAS_ZERO: tl.constexpr, SYM_ZERO: tl.constexpr):
    # the fp32 scale and the magic-biased zero point (2^23 + zero) at `offs` of [groups, N];
    # streamed once per call: evict first. Symmetric schemes have the constant zero SYM_ZERO.
    s = tl.load(scale_ptr + offs, mask=mask, other=0.0, eviction_policy="evict_first").to(tl.float32)
    if HAS_ZERO:
        zm = 8388608.0 + tl.load(zero_ptr + offs, mask=mask, other=0.0, eviction_policy="evict_first").to(tl.float32)
    else:
        zm = tl.zeros_like(s) + SYM_ZERO
    return s, zm


@triton.jit
def _quant_gemv_kernel(
    # pointers
    x_ptr, qweight_ptr, scale_ptr, zero_ptr, bias_ptr, out_ptr,
    # sizes
    N, K, tiles_per_split,
    # strides (in elements)
    stride_xm, stride_qn, stride_om, stride_os,
    # meta-parameters
    BITS: tl.constexpr, GROUP_SIZE: tl.constexpr, HAS_ZERO: tl.constexpr, HAS_BIAS: tl.constexpr,
    WRITE_PARTIAL: tl.constexpr, INT64: tl.constexpr, BLOCK_N: tl.constexpr, TILES: tl.constexpr,
):
    # One program: BLOCK_N outputs of row pid_m, over the K tiles of split pid_k.
    # GROUP_SIZE == 0 means one group per row (int8 per channel), with or without a zero point.
    LANES: tl.constexpr = 32 // BITS
    R: tl.constexpr = 128 // LANES
    SYM_ZERO: tl.constexpr = 8388608.0 + (1 << (BITS - 1))  # 2^23 + the symmetric zero 2^(b-1)
    pid_n = tl.program_id(0)
    pid_k = tl.program_id(1)
    pid_m = tl.program_id(2)
    if INT64:
        # some offset (split * M * N partials, M * K, ...) reaches 2^31: index in int64
        pid_n, pid_k, pid_m = pid_n.to(tl.int64), pid_k.to(tl.int64), pid_m.to(tl.int64)

    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)  # [BN]
    offs_t = tl.arange(0, TILES)  # [T]
    offs_r = tl.arange(0, R)  # [R]
    n_mask = offs_n < N
    tile_lo = pid_k * tiles_per_split
    tile_hi = tl.minimum(tile_lo + tiles_per_split, tl.cdiv(K, 128))
    x_row = x_ptr + pid_m * stride_xm

    if GROUP_SIZE == 0:
        # per channel: one scale and zero point per row, loaded once, outside the K loop
        sc, zc = _scale_and_zero(scale_ptr, zero_ptr, offs_n, n_mask, HAS_ZERO, SYM_ZERO)

    # acc[n, t, r]: sum over the K loop of scaled (u - zero) * x; reduced once at the end
    acc = tl.zeros([BLOCK_N, TILES, R], dtype=tl.float32)
    for tile0 in range(tile_lo, tile_hi, TILES):
        # --- load TILES word tiles per row: [BN, T, R] int32, R*4 contiguous bytes per (n, t).
        # Weights are read once per call: evict them first; the activations are re-read by
        # every program, keep them (evict last).
        tiles = tile0 + offs_t
        t_mask = tiles < tile_hi
        w_ptrs = qweight_ptr + offs_n[:, None, None] * stride_qn + (tiles * R)[None, :, None] + offs_r[None, None, :]
        words = tl.load(w_ptrs, mask=n_mask[:, None, None] & t_mask[None, :, None], other=0,
                        eviction_policy="evict_first")
        for lane in tl.static_range(LANES):
            # --- the R consecutive features k = 128 t + lane R + r of each tile
            k = tiles[:, None] * 128 + lane * R + offs_r[None, :]  # [T, R]
            xk = tl.load(x_row + k, mask=t_mask[:, None] & (k < K), other=0.0,
                         eviction_policy="evict_last").to(tl.float32)
            u = _lane_as_magic_float(words, lane, BITS)  # [BN, T, R] = 2^23 + u
            if GROUP_SIZE == 0:
                acc += (u - zc[:, None, None]) * xk[None, :, :]
            else:
                if (lane * R) % GROUP_SIZE == 0:
                    # first lane of a group: its scale/zero per (n, t), and a fresh partial sum
                    g_start = tiles * 128 + lane * R  # [T] first feature of the group
                    g = g_start // GROUP_SIZE
                    # groups past K (in the zero padding of the last tile) do not exist
                    sg_mask = n_mask[:, None] & (t_mask & (g_start < K))[None, :]
                    sz_off = g[None, :] * N + offs_n[:, None]  # [BN, T] into [groups, N]
                    s, zm = _scale_and_zero(scale_ptr, zero_ptr, sz_off, sg_mask, HAS_ZERO, SYM_ZERO)
                    part = tl.zeros([BLOCK_N, TILES, R], dtype=tl.float32)
                # sum_k (u - zero) x over the group's lanes, exact integers times x
                part += (u - zm[:, :, None]) * xk[None, :, :]
                if ((lane + 1) * R) % GROUP_SIZE == 0:
                    acc += part * s[:, :, None]  # y += scale * sum over the group

    # --- epilogue: reduce, per-channel scale, bias, store
    y = tl.sum(tl.sum(acc, axis=2), axis=1)  # [BN]
    if GROUP_SIZE == 0:
        y = y * sc
    if WRITE_PARTIAL:
        tl.store(out_ptr + pid_k * stride_os + pid_m * stride_om + offs_n, y, mask=n_mask)
    else:
        if HAS_BIAS:
            y += tl.load(bias_ptr + offs_n, mask=n_mask, other=0.0).to(tl.float32)
        tl.store(out_ptr + pid_m * stride_om + offs_n, y.to(out_ptr.dtype.element_ty), mask=n_mask)


@triton.jit
def _quant_dot_kernel(
    # pointers
    x_ptr, qweight_ptr, scale_ptr, zero_ptr, bias_ptr, out_ptr,
    # sizes
    M, N, K, tiles_per_split,
    # strides (in elements)
    stride_xm, stride_qn, stride_om, stride_os,
    # meta-parameters
    BITS: tl.constexpr, GROUP_SIZE: tl.constexpr, HAS_ZERO: tl.constexpr, HAS_BIAS: tl.constexpr,
    WRITE_PARTIAL: tl.constexpr, INT64: tl.constexpr, SCALE_ON_ACC: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, GROUP_M: tl.constexpr, K128: tl.constexpr,
):
    # One program: a [BLOCK_M, BLOCK_N] output tile over the K tiles of split pid_k: one
    # tensor-core dot of depth R per lane of each 128-wide K tile, or (K128) one dot of depth 128
    # per tile on the whole dequantized [BLOCK_N, 128] tile (fewer, larger dots and one
    # activation load per tile instead of LANES store-barrier-dot rounds).
    LANES: tl.constexpr = 32 // BITS
    R: tl.constexpr = 128 // LANES
    SYM_ZERO: tl.constexpr = 8388608.0 + (1 << (BITS - 1))  # 2^23 + the symmetric zero 2^(b-1)
    pid = tl.program_id(0)
    pid_k = tl.program_id(1)

    # --- grouped tile order: GROUP_M row blocks in a row reuse each weight tile from L2
    num_pid_m = tl.cdiv(M, BLOCK_M)
    num_pid_n = tl.cdiv(N, BLOCK_N)
    pids_in_group = GROUP_M * num_pid_n
    first_pid_m = (pid // pids_in_group) * GROUP_M
    group_rows = tl.minimum(num_pid_m - first_pid_m, GROUP_M)
    pid_m = first_pid_m + (pid % pids_in_group) % group_rows
    pid_n = (pid % pids_in_group) // group_rows
    if INT64:
        # some offset (split * M * N partials, M * K, ...) reaches 2^31: index in int64
        pid_m, pid_n, pid_k = pid_m.to(tl.int64), pid_n.to(tl.int64), pid_k.to(tl.int64)

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_r = tl.arange(0, R)
    m_mask = offs_m < M
    n_mask = offs_n < N
    tile_lo = pid_k * tiles_per_split
    tile_hi = tl.minimum(tile_lo + tiles_per_split, tl.cdiv(K, 128))

    if GROUP_SIZE == 0:
        # per channel: one scale and zero point per row, loaded once, outside the K loop
        sc, zc = _scale_and_zero(scale_ptr, zero_ptr, offs_n, n_mask, HAS_ZERO, SYM_ZERO)

    acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    if K128:
        offs_k = tl.arange(0, 128)
        shifts = tl.arange(0, LANES) * BITS
        for tile in range(tile_lo, tile_hi):
            w_ptrs = qweight_ptr + offs_n[:, None] * stride_qn + tile * R + offs_r[None, :]
            words = tl.load(w_ptrs, mask=n_mask[:, None], other=0, eviction_policy="evict_first")
            k = tile * 128 + offs_k
            xk = tl.load(x_ptr + offs_m[:, None] * stride_xm + k[None, :], mask=m_mask[:, None] & (k < K)[None, :],
                         other=0.0, eviction_policy="evict_last")  # [BM, 128]
            # every lane at once: [BN, LANES, R] fields -> [BN, 128] with k = lane * R + r (the layout)
            fields = (words[:, None, :] >> shifts[None, :, None]) & ((1 << BITS) - 1)
            u = tl.reshape((fields | 0x4B000000).to(tl.float32, bitcast=True), [BLOCK_N, 128])  # 2^23 + u
            if GROUP_SIZE == 0:
                acc = _dot_acc(xk, u - zc[:, None], acc)  # exact integers; scale after the loop
            elif GROUP_SIZE == 128:
                # one group per tile: a dot on exact integers, its [BM, BN] partial scaled once
                s, zm = _scale_and_zero(scale_ptr, zero_ptr, tile * N + offs_n, n_mask, HAS_ZERO, SYM_ZERO)
                part = _dot_acc(xk, u - zm[:, None], tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32))
                acc += part * s[None, :]
            else:
                # several groups per tile: scale the weight tile ([BN, groups, G] broadcast)
                NG: tl.constexpr = 128 // GROUP_SIZE
                g = tile * NG + tl.arange(0, NG)
                sz_off = g[None, :] * N + offs_n[:, None]  # [BN, NG]
                sg_mask = n_mask[:, None] & (g * GROUP_SIZE < K)[None, :]  # no group in the padding
                s, zm = _scale_and_zero(scale_ptr, zero_ptr, sz_off, sg_mask, HAS_ZERO, SYM_ZERO)
                w = (tl.reshape(u, [BLOCK_N, NG, GROUP_SIZE]) - zm[:, :, None]) * s[:, :, None]
                acc = _dot_acc(xk, tl.reshape(w, [BLOCK_N, 128]), acc)
    else:
        for tile in range(tile_lo, tile_hi):
            # --- one K tile of weights: [BN, R] int32 words, LANES slices of R features each
            # (weights streamed once: evict first; activations shared by all programs: evict last)
            w_ptrs = qweight_ptr + offs_n[:, None] * stride_qn + tile * R + offs_r[None, :]
            words = tl.load(w_ptrs, mask=n_mask[:, None], other=0, eviction_policy="evict_first")
            for lane in tl.static_range(LANES):
                k = tile * 128 + lane * R + offs_r  # [R] consecutive features
                x_ptrs = x_ptr + offs_m[:, None] * stride_xm + k[None, :]
                xk = tl.load(x_ptrs, mask=m_mask[:, None] & (k < K)[None, :], other=0.0,
                             eviction_policy="evict_last")  # [BM, R]
                u = _lane_as_magic_float(words, lane, BITS)  # [BN, R] = 2^23 + u
                if GROUP_SIZE == 0:
                    acc = _dot_acc(xk, u - zc[:, None], acc)  # exact integers; scale after the loop
                else:
                    if (lane * R) % GROUP_SIZE == 0:
                        g_start = tile * 128 + lane * R
                        g = g_start // GROUP_SIZE
                        # no group in the zero padding past K
                        sz_mask = n_mask & (tl.full([BLOCK_N], g_start, dtype=tl.int32) < K)
                        s, zm = _scale_and_zero(scale_ptr, zero_ptr, g * N + offs_n, sz_mask, HAS_ZERO, SYM_ZERO)
                        if SCALE_ON_ACC:
                            part = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
                    if SCALE_ON_ACC:
                        # dot on exact integers (u - zero); scale the [BM, BN] partial per group
                        part = _dot_acc(xk, u - zm[:, None], part)
                        if ((lane + 1) * R) % GROUP_SIZE == 0:
                            acc += part * s[None, :]
                    else:
                        # scale the [BN, R] weight slice: cheaper than the partial when BM > G
                        acc = _dot_acc(xk, (u - zm[:, None]) * s[:, None], acc)

    # --- epilogue: per-channel scale, bias, store
    if GROUP_SIZE == 0:
        acc = acc * sc[None, :]
    mn_mask = m_mask[:, None] & n_mask[None, :]
    if WRITE_PARTIAL:
        tl.store(out_ptr + pid_k * stride_os + offs_m[:, None] * stride_om + offs_n[None, :], acc, mask=mn_mask)
    else:
        if HAS_BIAS:
            acc += tl.load(bias_ptr + offs_n, mask=n_mask, other=0.0).to(tl.float32)[None, :]
        out_ptrs = out_ptr + offs_m[:, None] * stride_om + offs_n[None, :]
        tl.store(out_ptrs, acc.to(out_ptr.dtype.element_ty), mask=mn_mask)


@triton.jit
def _splitk_reduce_kernel(
    # pointers
    partial_ptr, bias_ptr, out_ptr,
    # sizes: total = M * N outputs, stride_s = M * N elements between splits (passed as ints so
    # Triton types them int64 when they reach 2^31)
    total, N, stride_s, SPLIT_K,
    # meta-parameters
    HAS_BIAS: tl.constexpr, INT64: tl.constexpr, BLOCK: tl.constexpr,
):
    # out[m, n] = sum_s partial[s, m, n] (+ bias[n]); partial [SPLIT_K, M, N] fp32 and out [M, N]
    # both contiguous; summed in split order, so results are deterministic
    pid = tl.program_id(0)
    if INT64:
        pid = pid.to(tl.int64)
    offs = pid * BLOCK + tl.arange(0, BLOCK)
    mask = offs < total
    acc = tl.zeros([BLOCK], dtype=tl.float32)
    ptrs = partial_ptr + offs
    for _ in range(SPLIT_K):
        acc += tl.load(ptrs, mask=mask, other=0.0, eviction_policy="evict_first")
        ptrs += stride_s  # pointer arithmetic is 64-bit: no s * M * N product to overflow
    if HAS_BIAS:
        acc += tl.load(bias_ptr + offs % N, mask=mask, other=0.0).to(tl.float32)
    tl.store(out_ptr + offs, acc.to(out_ptr.dtype.element_ty), mask=mask)


# ----------------------------------------------------------------------------- configs


@dataclasses.dataclass(frozen=True)
class MatmulConfig:
    """Meta-parameters of one launch. kernel: "gemv" (FMA, any M, one row per program) or "dot"."""

    kernel: str
    block_n: int
    block_m: int = 16  # dot only
    tiles: int = 1  # gemv only: 128-wide K tiles per loop iteration
    split_k: int = 1
    group_m: int = 8  # dot only
    num_warps: int = 4
    num_stages: int = 2
    k128: bool = False  # dot only: one K=128 dot per tile instead of one dot of depth R per lane

    def __post_init__(self) -> None:
        if self.kernel not in ("gemv", "dot"):
            raise ValueError(f"kernel must be 'gemv' or 'dot', got {self.kernel!r}")
        if self.k128 and self.kernel != "dot":
            raise ValueError("k128 applies to the dot kernel only")
        for name in ("block_n", "block_m", "tiles"):
            v = getattr(self, name)
            if v < 1 or v & (v - 1):
                raise ValueError(f"{name} must be a power of two, got {v}")
        if self.kernel == "dot" and (self.block_m < 16 or self.block_n < 16):
            raise ValueError("dot tiles need block_m >= 16 and block_n >= 16")
        if self.split_k < 1:
            raise ValueError(f"split_k must be >= 1, got {self.split_k}")


def m_bucket(m: int) -> int:
    """Tuning bucket of M: 1, then powers of two from 16 (one dot tile) up to 4096."""
    if m <= 1:
        return 1
    return min(max(16, triton.next_power_of_2(m)), 4096)


def _split_for(programs: int, num_tiles: int, sms: int, max_split: int = 16) -> list[int]:
    """split_k values worth trying: 1 when the tiles alone give ~2 waves, else enough to get there."""
    splits = [1]
    s = 2
    while s <= min(max_split, num_tiles) and programs * s <= 8 * sms:
        if programs * (s // 2) < 2 * sms:
            splits.append(s)
        s *= 2
    return splits


def candidate_configs(m: int, n: int, k: int, bits: int, sms: int) -> list[MatmulConfig]:
    """Configs the tuner times for this shape (pruned so the grid neither underfills nor explodes).

    The GEMV space includes narrow row blocks (BLOCK_N 8-16) that fill the GPU without split-K at
    N >= 2048 (one launch, no reduce kernel) and 8 warps for the wide blocks; which wins is
    measured, not assumed."""
    num_tiles = -(-k // TILE_K)
    out: list[MatmulConfig] = []
    if m <= GEMV_MAX_M:
        for bn in (8, 16, 32, 64):
            for tiles in (1, 2, 4):
                if bn * tiles * words_per_tile(bits) > 4096:  # register budget of acc + part
                    continue
                for split in _split_for(-(-n // bn), num_tiles, sms):
                    for warps in (2, 4, 8) if bn * tiles >= 64 else (2, 4):
                        out.append(MatmulConfig("gemv", block_n=bn, tiles=tiles, split_k=split, num_warps=warps))
    elif m <= SKINNY_MAX_M:
        bm = max(16, triton.next_power_of_2(m))
        for bn in (32, 64, 128):
            for split in _split_for(-(-n // bn), num_tiles, sms):
                for stages in (2, 3, 4):
                    for warps in (4, 8) if bn == 128 else (4,):
                        out.append(MatmulConfig("dot", block_n=bn, block_m=bm, split_k=split, num_warps=warps,
                                                num_stages=stages))
                if bn >= 64:  # the K=128 dot: a [BN, 128] weight tile in registers needs BN <= 128
                    out.append(MatmulConfig("dot", block_n=bn, block_m=bm, split_k=split, num_stages=3, k128=True))
    else:
        for bm, bn, warps in ((64, 64, 4), (64, 128, 4), (128, 64, 4), (128, 128, 8), (128, 256, 8), (64, 256, 8)):
            if bm > 2 * triton.next_power_of_2(m):
                continue
            programs = -(-m // bm) * -(-n // bn)
            for split in _split_for(programs, num_tiles, sms, max_split=4):
                for stages in (3, 4):
                    out.append(MatmulConfig("dot", block_n=bn, block_m=bm, split_k=split, num_warps=warps, num_stages=stages))
                if bn <= 128:
                    out.append(MatmulConfig("dot", block_n=bn, block_m=bm, split_k=split, num_warps=warps,
                                            num_stages=3, k128=True))
    return out


def heuristic_config(m: int, n: int, k: int, bits: int, sms: int) -> MatmulConfig:
    """A reasonable untimed config: used on CPU, on a tuning-cache miss during CUDA-graph capture,
    and as a fallback. At M = 1 and N >= 2048 it is one launch (narrow row blocks, no split-K)."""
    num_tiles = -(-k // TILE_K)
    if m <= GEMV_MAX_M:
        if n >= 2048:
            return MatmulConfig("gemv", block_n=16, tiles=4 if bits == 4 else 2, split_k=1)
        bn = 32
        split = _split_for(-(-n // bn), num_tiles, sms)[-1]
        return MatmulConfig("gemv", block_n=bn, tiles=2, split_k=split)
    if m <= SKINNY_MAX_M:
        bn = 64
        split = _split_for(-(-n // bn), num_tiles, sms)[-1]
        return MatmulConfig("dot", block_n=bn, block_m=max(16, triton.next_power_of_2(m)), split_k=split, num_stages=3)
    bm = 64 if m <= 128 else 128
    return MatmulConfig("dot", block_n=128, block_m=bm, num_warps=4 if bm == 64 else 8, num_stages=3)


def needs_int64_offsets(m: int, n: int, k: int, split_k: int, weight_words: int, num_groups: int) -> bool:
    """Whether some element offset of a launch reaches 2^31 (int32 index arithmetic would wrap):
    split-K partials S*M*N (the output M*N when S = 1), activations M*K, weight words, scales."""
    return max(split_k * m * n, m * k, weight_words, num_groups * n) >= INT32_LIMIT


def effective_split(k: int, split_k: int) -> tuple[int, int]:
    """(splits, tiles per split) a launch uses: every split gets >= 1 K tile, so every partial is written."""
    num_tiles = -(-k // TILE_K)
    tiles_per_split = -(-num_tiles // min(split_k, num_tiles))
    return -(-num_tiles // tiles_per_split), tiles_per_split


# ----------------------------------------------------------------------------- launchers


def int4_matmul(x, weight: KernelWeight, bias=None, *, out=None, config: MatmulConfig | None = None):
    """y [M, N] = x [M, K] @ dequant(W).T (+ bias) for an int4 group-wise `weight`."""
    if weight.bits != 4:
        raise ShapeError(f"int4_matmul got a {weight.bits}-bit weight; use int8_matmul")
    return quant_matmul(x, weight, bias, out=out, config=config)


def int8_matmul(x, weight: KernelWeight, bias=None, *, out=None, config: MatmulConfig | None = None):
    """y [M, N] = x [M, K] @ dequant(W).T (+ bias) for an int8 per-channel `weight`."""
    if weight.bits != 8:
        raise ShapeError(f"int8_matmul got a {weight.bits}-bit weight; use int4_matmul")
    return quant_matmul(x, weight, bias, out=out, config=config)


def quant_matmul(
    x: torch.Tensor,
    weight: KernelWeight,
    bias: torch.Tensor | None = None,
    *,
    out: torch.Tensor | None = None,
    config: MatmulConfig | None = None,
    cache: TuningCache | None = None,
) -> torch.Tensor:
    """Launch the fused dequantize-matmul. x: [M, K] fp16/bf16/fp32, contiguous, on the weight's
    device; bias: [N] in x's dtype; out: optional [M, N] contiguous in x's dtype (overwritten).
    `config` forces a launch configuration (tests); otherwise it is tuned and cached per device."""
    _check_inputs(x, weight, bias, out)
    m, k = x.shape
    n = weight.out_features
    if out is None:
        out = torch.empty(m, n, dtype=x.dtype, device=x.device)
    if m == 0:
        return out
    if config is None:
        config = select_config(x, weight, bias, out, cache=cache)
        _launch(x, weight, bias, out, config)
        if x.device.type == "cuda" and not torch.cuda.is_current_stream_capturing():
            key = config_key(torch.cuda.get_device_name(x.device), weight, x.dtype, m)
            mark_launched(key, config, _device_label(x.device))
    else:
        _launch(x, weight, bias, out, config)
    return out


def _check_inputs(x, weight: KernelWeight, bias, out) -> None:
    if not isinstance(x, torch.Tensor) or x.ndim != 2:
        raise ShapeError(f"x must be a 2-D tensor [M, K], got {getattr(x, 'shape', type(x))}")
    if x.dtype not in ACT_DTYPES:
        raise DtypeError(f"x must be float16, bfloat16 or float32, got {x.dtype}")
    m, k = x.shape
    if k == 0 or weight.in_features == 0 or weight.out_features == 0:
        raise ShapeError(f"K and N must be positive: x is {tuple(x.shape)}, weight is "
                         f"[{weight.out_features}, {weight.in_features}]")
    if weight.group_size is not None and k % weight.group_size:
        raise ShapeError(f"K = {k} is not divisible by the group size {weight.group_size}")
    if k != weight.in_features:
        raise ShapeError(f"x has K = {k} features but the weight expects {weight.in_features}")
    weight.validate()
    if not x.is_contiguous():
        raise LayoutError("x must be contiguous (call .contiguous() first)")
    devices = {"x": x.device, "weight": weight.device}
    n = weight.out_features
    if bias is not None:
        devices["bias"] = bias.device
        if bias.shape != (n,):
            raise ShapeError(f"bias must have shape ({n},), got {tuple(bias.shape)}")
        if bias.dtype != x.dtype:
            raise DtypeError(f"bias dtype {bias.dtype} differs from x dtype {x.dtype}")
        if not bias.is_contiguous():
            raise LayoutError("bias must be contiguous")
    if out is not None:
        devices["out"] = out.device
        if out.shape != (m, n) or out.dtype != x.dtype:
            raise ShapeError(f"out must be {x.dtype} of shape ({m}, {n}), got {out.dtype} {tuple(out.shape)}")
        if not out.is_contiguous():
            raise LayoutError("out must be contiguous")
    if len(set(devices.values())) != 1:
        raise DeviceError(f"tensors are on different devices: {', '.join(f'{k}={v}' for k, v in devices.items())}")
    if x.device.type != "cuda" and not triton_interpreter():
        raise DeviceError(
            f"the Triton kernels run on CUDA devices; x is on {x.device}. On CPU use "
            "QuantLinear (plain-torch path) or quant_matmul_reference"
        )


def _alloc_partials(split_k: int, m: int, n: int, device) -> torch.Tensor:
    # every element is written by exactly one split before the reduce kernel reads it
    return torch.empty(split_k, m, n, dtype=torch.float32, device=device)


def _launch(x, weight: KernelWeight, bias, out, config: MatmulConfig) -> None:
    m, k = x.shape
    n = weight.out_features
    split_k, tiles_per_split = effective_split(k, config.split_k)
    target = out if split_k == 1 else _alloc_partials(split_k, m, n, x.device)
    int64 = needs_int64_offsets(m, n, k, split_k, weight.qweight.numel(), weight.num_groups)
    meta = dict(
        BITS=weight.bits,
        GROUP_SIZE=weight.group_size or 0,
        HAS_ZERO=weight.zero is not None,
        HAS_BIAS=bias is not None,
        WRITE_PARTIAL=split_k > 1,
        INT64=int64,
        BLOCK_N=config.block_n,
        num_warps=config.num_warps,
        num_stages=config.num_stages,
        enable_fp_fusion=FP_FUSION,
    )
    zero = weight.zero if weight.zero is not None else weight.scale  # unused when HAS_ZERO=False
    bias_arg = bias if bias is not None else weight.scale  # unused when HAS_BIAS=False
    stride_os = m * n
    if config.kernel == "gemv":
        grid: tuple[int, ...] = (triton.cdiv(n, config.block_n), split_k, m)
        _quant_gemv_kernel[grid](
            x, weight.qweight, weight.scale, zero, bias_arg, target,
            n, k, tiles_per_split,
            x.stride(0), weight.qweight.stride(0), n, stride_os,
            TILES=config.tiles, **meta,
        )
    else:
        grid = (triton.cdiv(m, config.block_m) * triton.cdiv(n, config.block_n), split_k)
        scale_on_acc = weight.group_size is not None and config.block_m <= weight.group_size
        _quant_dot_kernel[grid](
            x, weight.qweight, weight.scale, zero, bias_arg, target,
            m, n, k, tiles_per_split,
            x.stride(0), weight.qweight.stride(0), n, stride_os,
            SCALE_ON_ACC=scale_on_acc, BLOCK_M=config.block_m, GROUP_M=config.group_m, K128=config.k128, **meta,
        )
    if split_k > 1:
        block = 1024
        _splitk_reduce_kernel[(triton.cdiv(m * n, block),)](
            target, bias_arg, out, m * n, n, m * n, split_k,
            HAS_BIAS=bias is not None, INT64=int64, BLOCK=block, num_warps=4, enable_fp_fusion=FP_FUSION,
        )


def _sm_count(device: torch.device) -> int:
    if device.type != "cuda":
        return 1
    return torch.cuda.get_device_properties(device).multi_processor_count


# ----------------------------------------------------------------------------- config selection
#
# On CUDA a shape's config comes from, in order: the configs this process already launched
# (their kernels are compiled *and loaded*), the tuning cache (memory, then disk), and only on a
# miss from timing the candidates. CUDA-graph capture follows the same order, so a graph runs
# the tuned config, and it runs the kernel the warm-up step loaded (loading a module while a
# stream captures fails). A capture that has to use an untuned config, or one whose kernel this
# process never launched, is counted and warned about: it is slower than it should be, or
# about to fail capture.

_launched: dict[str, MatmulConfig] = {}  # key (device index included) -> config launched here
_capture_stats = {"untuned_in_capture": 0, "unloaded_in_capture": 0}


def capture_stats() -> dict[str, int]:
    """Counters of CUDA-graph captures that did not get a tuned, already-loaded kernel:
    untuned_in_capture (tuning-cache miss: the heuristic config was captured) and
    unloaded_in_capture (the config was never launched in this process before the capture)."""
    return dict(_capture_stats)


def reset_capture_stats() -> None:
    for name in _capture_stats:
        _capture_stats[name] = 0


def config_key(device_name: str, weight: KernelWeight, dtype: torch.dtype, m: int) -> str:
    """The tuning-cache key of a launch: device, triton, bits, group, zero, dtype, N, K, M bucket."""
    return tuning_key(
        device_name, triton.__version__, "quant_matmul",
        f"b{weight.bits}", f"g{weight.group_size or 'chan'}", "asym" if weight.zero is not None else "sym",
        dtype, f"N{weight.out_features}", f"K{weight.in_features}", f"M{m_bucket(m)}",
    )


def _cached_config(cache: TuningCache, key: str) -> MatmulConfig | None:
    cached = cache.get(key)
    if cached is None:
        return None
    try:
        return MatmulConfig(**cached)
    except (TypeError, ValueError):
        return None  # written by an older version: re-tune


def choose_config(
    key: str,
    m: int,
    n: int,
    k: int,
    bits: int,
    sms: int,
    cache: TuningCache,
    *,
    capturing: bool,
    tune: Callable[[list[MatmulConfig]], tuple[MatmulConfig, float]],
    device: str = "cuda:0",
) -> MatmulConfig:
    """The config of one CUDA launch (see the comment above); `tune` times candidates (never
    while capturing). Split out of `select_config` so the order is testable on CPU."""
    launched = _launched.get(f"{device}|{key}")
    if launched is not None:
        return launched
    config = _cached_config(cache, key)
    if capturing:
        if config is None:
            _capture_stats["untuned_in_capture"] += 1
            warnings.warn(
                f"quant_matmul: no tuned config for M={m}, N={n}, K={k} ({bits}-bit) while a CUDA graph is "
                "being captured; capturing the untuned default. Run the shape once eagerly before capture "
                "(a warm-up step) so it is tuned and its kernel loaded",
                RuntimeWarning, stacklevel=3,
            )
            return heuristic_config(m, n, k, bits, sms)
        _capture_stats["unloaded_in_capture"] += 1
        warnings.warn(
            f"quant_matmul: the tuned kernel for M={m}, N={n}, K={k} ({bits}-bit) was never launched in this "
            "process, so it would be loaded during CUDA-graph capture, which fails; run the shape once eagerly "
            "before capture (a warm-up step)",
            RuntimeWarning, stacklevel=3,
        )
        return config
    if config is None:
        config, ms = tune(candidate_configs(m, n, k, bits, sms))
        cache.put(key, dataclasses.asdict(config), ms)
    return config


def mark_launched(key: str, config: MatmulConfig, device: str = "cuda:0") -> None:
    """Record that `config`'s kernels ran (so are loaded) in this process for `key` on `device`."""
    _launched.setdefault(f"{device}|{key}", config)


def _device_label(device: torch.device) -> str:
    return f"cuda:{device.index if device.index is not None else torch.cuda.current_device()}"


def select_config(x, weight: KernelWeight, bias=None, out=None, *, cache: TuningCache | None = None) -> MatmulConfig:
    """The config `quant_matmul(x, weight, bias)` launches with (tuning it first if needed)."""
    m, k = x.shape
    n = weight.out_features
    sms = _sm_count(x.device)
    if x.device.type != "cuda":
        return heuristic_config(m, n, k, weight.bits, sms)
    if out is None:
        out = torch.empty(m, n, dtype=x.dtype, device=x.device)
    key = config_key(torch.cuda.get_device_name(x.device), weight, x.dtype, m)
    return choose_config(
        key, m, n, k, weight.bits, sms, cache or default_cache(),
        capturing=torch.cuda.is_current_stream_capturing(),
        tune=lambda cands: pick_fastest(lambda cfg: _launch(x, weight, bias, out, cfg), cands),
        device=_device_label(x.device),
    )


# ----------------------------------------------------------------------------- reference


def quant_matmul_reference(x: torch.Tensor, weight: KernelWeight, bias: torch.Tensor | None = None) -> torch.Tensor:
    """fp32 reference: unpack the kernel layout, dequantize (q - zero) * scale, x @ W.T + bias."""
    w = unpack_kernel_weight(weight).dequantize(torch.float32)
    y = x.to(torch.float32) @ w.to(x.device).t()
    if bias is not None:
        y = y + bias.to(torch.float32)
    return y
