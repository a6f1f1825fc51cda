"""The kernels' own weight layout, and the repacking between it and compressed-tensors.

compressed-tensors packs 8 consecutive K values per int32 (see `kernels.packing`). Unpacking
lane j of such a word yields the columns k = 8w + j: a stride-8 gather of the activations, which
tensor-core dots cannot consume. At load time we repack every weight once (cached on its
`QuantLinear`) into tiles of TILE_K = 128 input features in which lane j of the R words of a
row holds R *consecutive* features:

    b = bits, LANES = 32 / b (8 for int4, 4 for int8), R = TILE_K / LANES (16 for int4, 32 for int8)

    qweight  int32 [N, ceil(K / 128) * R]          row n, K tile t:
              word (n, t*R + r), lane j (bits j*b .. j*b+b-1)  <->  W[n, 128*t + j*R + r] + 2^(b-1)

              tile t of row n (int4):   r = 0      r = 1      ...  r = 15
                              lane 0:   k=0        k=1        ...  k=15
                              lane 1:   k=16       k=17       ...  k=31
                               ...
                              lane 7:   k=112      k=113      ...  k=127

    scale    [num_groups, N]  (checkpoint dtype)   group-major: the N scales of one group are
                                                   contiguous, so a tile of outputs loads them
                                                   in one coalesced read
    zero     [num_groups, N]  same dtype, holding the unsigned zero point (zero + 2^(b-1)), exact;
                              None for symmetric schemes (the zero is then 2^(b-1))

A kernel then extracts lane j of a [BLOCK_N, R] word tile with one shift and mask, and gets a
[BLOCK_N, R] weight slice for R consecutive k: exactly the operand of one tl.dot (K = R >= 16)
or one FMA sweep against R contiguous activations. Group sizes 32/64/128 divide 128 and are
multiples of R, so each lane slice lies inside one group; int8's per-channel scale is one group
(num_groups = 1) applied to the accumulator after the K loop. K is zero-padded up to a multiple
of 128 (the activations are masked, so padding contributes nothing). Rows stay K-contiguous, so a
program streaming K for a block of rows reads R*4 contiguous bytes (64 B for int4) per row per tile.
"""

from __future__ import annotations

import dataclasses

import torch

from kernels.errors import DtypeError, ShapeError
from kernels.packing import QuantizedWeight

TILE_K = 128  # input features per layout tile; every supported group size divides it


def lanes_per_word(bits: int) -> int:
    return 32 // bits


def words_per_tile(bits: int) -> int:
    return TILE_K // lanes_per_word(bits)


@dataclasses.dataclass
class KernelWeight:
    """A quantized weight in the kernels' layout (see module docstring), on one device."""

    qweight: torch.Tensor  # int32 [N, ceil(K/128) * R]
    scale: torch.Tensor  # [num_groups, N], fp16/bf16/fp32
    zero: torch.Tensor | None  # [num_groups, N], same dtype as scale, unsigned zero; None = symmetric
    out_features: int  # N
    in_features: int  # K
    bits: int  # 4 or 8
    group_size: int | None  # None: one group per row (per channel)

    @property
    def num_groups(self) -> int:
        return 1 if self.group_size is None else self.in_features // self.group_size

    @property
    def device(self) -> torch.device:
        return self.qweight.device

    def validate(self) -> None:
        """Check internal consistency (shapes, dtypes, devices, contiguity) before a launch."""
        n, k, bits = self.out_features, self.in_features, self.bits
        if n <= 0 or k <= 0:
            raise ShapeError(f"quantized weight has an empty dimension: out_features={n}, in_features={k}")
        if bits not in (4, 8):
            raise ShapeError(f"bits must be 4 or 8, got {bits}")
        if self.group_size is not None and (self.group_size % words_per_tile(bits) or TILE_K % self.group_size):
            raise ShapeError(f"group_size {self.group_size} unsupported: use 32, 64 or 128")
        if self.group_size is not None and k % self.group_size:
            raise ShapeError(f"in_features {k} is not divisible by group_size {self.group_size}")
        expected = (n, -(-k // TILE_K) * words_per_tile(bits))
        if self.qweight.dtype != torch.int32 or tuple(self.qweight.shape) != expected:
            raise ShapeError(f"qweight must be int32 {expected}, got {self.qweight.dtype} {tuple(self.qweight.shape)}")
        for label, t in (("scale", self.scale), ("zero", self.zero)):
            if t is None:
                continue
            if t.dtype not in (torch.float16, torch.bfloat16, torch.float32):
                raise DtypeError(f"{label} must be fp16/bf16/fp32, got {t.dtype}")
            if tuple(t.shape) != (self.num_groups, n):
                raise ShapeError(f"{label} must have shape {(self.num_groups, n)}, got {tuple(t.shape)}")
        for label, t in (("qweight", self.qweight), ("scale", self.scale), ("zero", self.zero)):
            if t is not None and not t.is_contiguous():
                raise ShapeError(f"{label} must be contiguous")
            if t is not None and t.device != self.qweight.device:
                raise ShapeError(f"{label} is on {t.device} but qweight is on {self.qweight.device}")


def repack_for_kernel(qw: QuantizedWeight, device: torch.device | str | None = None) -> KernelWeight:
    """QuantizedWeight (compressed-tensors integers) -> KernelWeight on `device`."""
    n, k = qw.shape
    bits, lanes, r = qw.bits, lanes_per_word(qw.bits), words_per_tile(qw.bits)
    tiles = -(-k // TILE_K)
    offset = 1 << (bits - 1)
    u = torch.zeros(n, tiles * TILE_K, dtype=torch.int64, device=qw.qweight.device)
    u[:, :k] = qw.qweight.to(torch.int64) + offset  # unsigned fields; padding stays 0
    u = u.view(n, tiles, lanes, r)
    shifts = (torch.arange(lanes, device=u.device, dtype=torch.int64) * bits).view(1, 1, lanes, 1)
    words = (u << shifts).sum(2)  # [N, tiles, R] in [0, 2^32)
    words = torch.where(words >= 2**31, words - 2**32, words).to(torch.int32).reshape(n, tiles * r)
    scale = qw.scale.t().contiguous()
    zero = None
    if qw.zero_point is not None:
        zero = (qw.zero_point.to(torch.float32) + offset).to(scale.dtype).t().contiguous()
    kw = KernelWeight(words, scale, zero, n, k, bits, qw.group_size)
    if device is not None:
        kw = dataclasses.replace(
            kw,
            qweight=kw.qweight.to(device),
            scale=kw.scale.to(device),
            zero=None if kw.zero is None else kw.zero.to(device),
        )
    kw.validate()
    return kw


def unpack_kernel_weight(kw: KernelWeight) -> QuantizedWeight:
    """Inverse of `repack_for_kernel` (exact): used by the reference path and the tests."""
    kw.validate()
    n, k, bits = kw.out_features, kw.in_features, kw.bits
    lanes, r = lanes_per_word(bits), words_per_tile(bits)
    words = kw.qweight.to(torch.int64).view(n, -1, 1, r) & 0xFFFFFFFF
    shifts = (torch.arange(lanes, device=words.device, dtype=torch.int64) * bits).view(1, 1, lanes, 1)
    u = (words >> shifts) & ((1 << bits) - 1)  # [N, tiles, LANES, R]
    offset = 1 << (bits - 1)
    q = (u.reshape(n, -1)[:, :k] - offset).to(torch.int8)
    zero = None if kw.zero is None else (kw.zero.t().to(torch.float32) - offset).to(torch.int8)
    return QuantizedWeight(q.contiguous(), kw.scale.t().contiguous(), zero, bits, kw.group_size)
