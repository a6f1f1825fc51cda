"""Bit packing (compressed-tensors order) and the kernels' repacked layout: exact round trips."""

from __future__ import annotations

import pytest
import torch
from compressed_tensors.compressors.pack_quantized.helpers import pack_to_int32, unpack_from_int32

from kernels.errors import DtypeError, ShapeError
from kernels.formats import compress_weight, decompress_weight
from kernels.layouts import TILE_K, repack_for_kernel, unpack_kernel_weight
from kernels.packing import QuantizedWeight, pack_int4, pack_int32, unpack_int4, unpack_int32
from kernels.quantize import quantize_rtn
from kernels.scheme import QuantScheme


def random_ints(bits: int, rows: int, cols: int, gen: torch.Generator) -> torch.Tensor:
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1))
    return torch.randint(lo, hi, (rows, cols), generator=gen, dtype=torch.int8)


@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.parametrize("dim", [0, 1])
@pytest.mark.parametrize("rows,cols", [(7, 13), (16, 64), (1, 1), (33, 100)])
def test_pack_matches_compressed_tensors_and_round_trips(bits, dim, rows, cols, seeded):
    values = random_ints(bits, rows, cols, seeded)
    ours = pack_int32(values, bits, dim)
    theirs = pack_to_int32(values, bits, packed_dim=dim)
    assert ours.dtype == torch.int32
    assert torch.equal(ours, theirs), "packing differs from compressed-tensors' pack_to_int32"
    size = values.shape[dim]
    assert torch.equal(unpack_int32(ours, bits, size, dim), values)
    assert torch.equal(unpack_from_int32(ours, bits, values.shape, packed_dim=dim), values)


def test_int4_nibble_order_is_low_bits_first():
    # element i of a word sits in bits 4i..4i+3, stored with an offset of 8
    values = torch.tensor([[-8, -7, 0, 1, 2, 3, 7, -1]], dtype=torch.int8)
    word = pack_int4(values)[0, 0].item() & 0xFFFFFFFF
    assert [(word >> (4 * i)) & 0xF for i in range(8)] == [0, 1, 8, 9, 10, 11, 15, 7]
    assert torch.equal(unpack_int4(pack_int4(values), 8), values)


def test_pack_rejects_bad_input():
    with pytest.raises(DtypeError):
        pack_int32(torch.zeros(2, 8, dtype=torch.int32), 4)
    with pytest.raises(ShapeError, match="out of the signed 4-bit range"):
        pack_int32(torch.full((2, 8), 8, dtype=torch.int8), 4)
    with pytest.raises(ShapeError, match="only 4- and 8-bit"):
        pack_int32(torch.zeros(2, 8, dtype=torch.int8), 3)
    with pytest.raises(ShapeError, match="does not fit"):
        unpack_int32(torch.zeros(2, 1, dtype=torch.int32), 4, 9)


@pytest.mark.parametrize("name", ["int4-g32", "int4-g64-asym", "int4-g128", "int4-g128-asym", "int8"])
@pytest.mark.parametrize("n,k", [(5, 128), (24, 384), (9, 640)])
def test_compress_and_kernel_repack_round_trips_are_exact(name, n, k, seeded):
    scheme = QuantScheme.from_name(name)
    qw = quantize_rtn(torch.randn(n, k, generator=seeded), scheme, torch.float16)
    # compressed-tensors tensors -> QuantizedWeight
    back = decompress_weight(compress_weight(qw), scheme)
    assert torch.equal(back.qweight, qw.qweight) and torch.equal(back.scale, qw.scale)
    assert (back.zero_point is None) == scheme.symmetric
    if not scheme.symmetric:
        assert torch.equal(back.zero_point, qw.zero_point)
    # kernel layout -> QuantizedWeight
    kw = repack_for_kernel(qw)
    assert kw.qweight.shape == (n, -(-k // TILE_K) * TILE_K * scheme.bits // 32)
    again = unpack_kernel_weight(kw)
    assert torch.equal(again.qweight, qw.qweight)
    assert torch.equal(again.scale, qw.scale)
    if not scheme.symmetric:
        assert torch.equal(again.zero_point, qw.zero_point)


def test_kernel_layout_lane_holds_consecutive_features():
    # word (n, t*R + r), lane j  <->  k = 128 t + j R + r   (int4: R = 16)
    k = 256
    q = ((torch.arange(k) % 16) - 8).to(torch.int8).view(1, k)
    qw = QuantizedWeight(q, torch.ones(1, k // 32), None, 4, 32)
    words = repack_for_kernel(qw).qweight.to(torch.int64) & 0xFFFFFFFF
    for t in range(2):
        for j in range(8):
            for r in (0, 5, 15):
                u = (words[0, t * 16 + r].item() >> (4 * j)) & 0xF
                assert u == int(q[0, 128 * t + 16 * j + r]) + 8


def test_quantized_weight_validates_shapes():
    q = torch.zeros(4, 64, dtype=torch.int8)
    with pytest.raises(ShapeError, match="scale must have shape"):
        QuantizedWeight(q, torch.ones(4, 1), None, 4, 32)
    with pytest.raises(ShapeError, match="not divisible by group_size"):
        QuantizedWeight(torch.zeros(4, 48, dtype=torch.int8), torch.ones(4, 1), None, 4, 32)
    with pytest.raises(ShapeError, match="empty dimension"):
        QuantizedWeight(torch.zeros(0, 64, dtype=torch.int8), torch.ones(0, 2), None, 4, 32)


def test_decompress_rejects_inconsistent_tensors(seeded):
    scheme = QuantScheme.from_name("int4-g32-asym")
    tensors = compress_weight(quantize_rtn(torch.randn(8, 64, generator=seeded), scheme))
    bad_shape = dict(tensors, weight_shape=torch.tensor([8, 96]))
    with pytest.raises(ShapeError, match="does not match weight_shape"):
        decompress_weight(bad_shape, scheme)
    with pytest.raises(DtypeError, match="int32"):
        decompress_weight(dict(tensors, weight_packed=tensors["weight_packed"].to(torch.int64)), scheme)
    no_zero = {k: v for k, v in tensors.items() if k != "weight_zero_point"}
    with pytest.raises(ShapeError, match="needs weight_zero_point"):
        decompress_weight(no_zero, scheme)
    unpacked_zero = dict(tensors, weight_zero_point=torch.zeros(8, 2, dtype=torch.int8))
    with pytest.raises(ShapeError, match="packed along out"):
        decompress_weight(unpacked_zero, scheme)
