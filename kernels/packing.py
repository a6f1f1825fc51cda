"""Quantized weights in plain torch: the `QuantizedWeight` record and int32 bit packing.

A quantized linear weight W [N out, K in] is stored as signed integers q, one scale per
(row, group of G input features), and for asymmetric schemes one integer zero point per scale:

    W[n, k] ~= (q[n, k] - zero[n, k // G]) * scale[n, k // G]        q, zero in [-2^(b-1), 2^(b-1)-1]

(int8 is per output channel: a single group of G = K.) This is compressed-tensors' convention,
so our integers are theirs bit for bit.

Packing (compressed-tensors "pack-quantized"): 32 // b consecutive values along the packed
dimension share one int32, lowest bits first, each stored with an offset of 2^(b-1) so the
field is unsigned. For int4 along K (the weight) and along N (the zero point):

    weight_packed[n, w]   bits:  31..28  27..24  ...   7..4    3..0
                          k:     8w+7    8w+6    ...   8w+1    8w      (value = q + 8)

    weight_zero_point[w, g]  holds zero[8w + i, g] + 8 in bits 4i..4i+3 (packed along N)

int8 packs 4 values per word the same way (value = q + 128). Packing is plain integer
arithmetic on int64, so it is exact and independent of the host's byte order.
"""

from __future__ import annotations

import dataclasses

import torch

from kernels.errors import DtypeError, ShapeError


@dataclasses.dataclass
class QuantizedWeight:
    """One quantized linear weight, unpacked (what quantizers produce and packers consume)."""

    qweight: torch.Tensor  # int8 [N, K], values in [qmin, qmax]
    scale: torch.Tensor  # float [N, K // G] (int4) or [N, 1] (int8); stored in the model dtype
    zero_point: torch.Tensor | None  # int8 [N, K // G] for asymmetric schemes, else None
    bits: int  # 4 or 8
    group_size: int | None  # G for int4; None means one group per row (per channel)

    def __post_init__(self) -> None:
        if self.qweight.dtype != torch.int8 or self.qweight.ndim != 2:
            raise DtypeError(f"qweight must be a 2-D int8 tensor, got {self.qweight.dtype} {tuple(self.qweight.shape)}")
        n, k = self.qweight.shape
        if n == 0 or k == 0:
            raise ShapeError(f"quantized weight has an empty dimension: shape {(n, k)}")
        groups = 1 if self.group_size is None else k // self.group_size
        if self.group_size is not None and k % self.group_size:
            raise ShapeError(f"in_features {k} is not divisible by group_size {self.group_size}")
        if tuple(self.scale.shape) != (n, groups):
            raise ShapeError(f"scale must have shape {(n, groups)}, got {tuple(self.scale.shape)}")
        if self.zero_point is not None and (
            self.zero_point.dtype != torch.int8 or tuple(self.zero_point.shape) != (n, groups)
        ):
            raise ShapeError(
                f"zero_point must be int8 {(n, groups)}, got {self.zero_point.dtype} {tuple(self.zero_point.shape)}"
            )

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.qweight.shape)

    def dequantize(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """W [N, K] in `dtype`, computed in fp32: (q - zero) * scale."""
        return dequantize_groupwise(self.qweight, self.scale, self.zero_point, self.group_size).to(dtype)


def dequantize_groupwise(
    qweight: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor | None, group_size: int | None
) -> torch.Tensor:
    """(q - zero) * scale in fp32, broadcasting each scale over its group of input features.

    (q - zero) is a small integer and scale a half or float, so the fp32 product is exact;
    rounding it to the scale's dtype gives what compressed-tensors computes in that dtype.
    """
    n, k = qweight.shape
    g = k if group_size is None else group_size
    q = qweight.to(torch.float32).view(n, k // g, g)
    if zero_point is not None:
        q = q - zero_point.to(torch.float32).unsqueeze(-1)
    return (q * scale.to(torch.float32).unsqueeze(-1)).view(n, k)


def _check_bits(bits: int) -> int:
    if bits not in (4, 8):
        raise ShapeError(f"only 4- and 8-bit packing is supported, got bits={bits}")
    return 32 // bits


def pack_int32(values: torch.Tensor, bits: int, dim: int = 1) -> torch.Tensor:
    """Pack signed `bits`-bit integers (int8 [R, C]) into int32 along `dim` (0 or 1).

    dim=1: [R, C] -> [R, ceil(C * bits / 32)]; dim=0: [R, C] -> [ceil(R * bits / 32), C].
    The tail of the last word is zero-padded, as compressed-tensors does.
    """
    per_word = _check_bits(bits)
    if values.dtype != torch.int8 or values.ndim != 2:
        raise DtypeError(f"pack_int32 expects a 2-D int8 tensor, got {values.dtype} {tuple(values.shape)}")
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    if values.numel() and (int(values.min()) < lo or int(values.max()) > hi):
        raise ShapeError(f"values out of the signed {bits}-bit range [{lo}, {hi}]")
    v = values.t() if dim == 0 else values
    rows, cols = v.shape
    words = -(-cols // per_word)
    # [rows, words, per_word] unsigned fields; padding fields are 0 (not the offset), like ct
    fields = torch.zeros(rows, words * per_word, dtype=torch.int64, device=values.device)
    fields[:, :cols] = v.to(torch.int64) + (1 << (bits - 1))
    fields = fields.view(rows, words, per_word)
    shifts = torch.arange(per_word, device=values.device, dtype=torch.int64) * bits
    packed = (fields << shifts).sum(-1)  # [rows, words], in [0, 2^32)
    packed = torch.where(packed >= 2**31, packed - 2**32, packed).to(torch.int32)
    return (packed.t() if dim == 0 else packed).contiguous()


def unpack_int32(packed: torch.Tensor, bits: int, size: int, dim: int = 1) -> torch.Tensor:
    """Inverse of `pack_int32`: int32 words -> int8 [.., size] (dim=1) or [size, ..] (dim=0)."""
    per_word = _check_bits(bits)
    if packed.dtype != torch.int32 or packed.ndim != 2:
        raise DtypeError(f"unpack_int32 expects a 2-D int32 tensor, got {packed.dtype} {tuple(packed.shape)}")
    p = packed.t() if dim == 0 else packed
    if p.shape[1] * per_word < size or (p.shape[1] - 1) * per_word >= size:
        raise ShapeError(
            f"{p.shape[1]} packed words hold {p.shape[1] * per_word} {bits}-bit values, "
            f"which does not fit a size of {size}"
        )
    shifts = torch.arange(per_word, device=packed.device, dtype=torch.int64) * bits
    fields = (p.to(torch.int64).unsqueeze(-1) & 0xFFFFFFFF) >> shifts & ((1 << bits) - 1)
    values = (fields.reshape(p.shape[0], -1)[:, :size] - (1 << (bits - 1))).to(torch.int8)
    return (values.t() if dim == 0 else values).contiguous()


def pack_int4(values: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """Signed int4 values (int8 tensor in [-8, 7]) -> int32, 8 per word, along `dim`."""
    return pack_int32(values, 4, dim)


def unpack_int4(packed: torch.Tensor, size: int, dim: int = 1) -> torch.Tensor:
    """int32 words -> signed int4 values as int8, `size` of them along `dim`."""
    return unpack_int32(packed, 4, size, dim)
