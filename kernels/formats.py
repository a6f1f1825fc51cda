"""compressed-tensors "pack-quantized": the on-disk format of our quantized variants.

A quantized release is a plain Hugging Face model directory whose `config.json` carries a
`quantization_config` that transformers (with the `compressed-tensors` package) and vLLM read.
Per quantized linear `<name>` the safetensors file holds (checked against compressed-tensors 0.20):

    <name>.weight_packed      int32 [N, ceil(K*b/32)]  signed b-bit q + 2^(b-1), packed along K
    <name>.weight_scale       model dtype [N, K/G] (int4 group) or [N, 1] (int8 per channel)
    <name>.weight_zero_point  int32 [ceil(N*b/32), K/G], zero + 2^(b-1) packed along N (asym only)
    <name>.weight_shape       int64 [2] = (N, K)
    <name>.bias               unchanged, if the layer has one

Bit order is described in `kernels.packing`. int8 uses the same pack-quantized format with
num_bits=8 and strategy "channel" (what vLLM calls W8A16); transformers loads it as well.

What transformers 5.24 + compressed-tensors 0.20 load (tested in tests/kernels):
- int4 symmetric (any group size) and int8: `AutoModelForCausalLM.from_pretrained(dir)`.
- int4 asymmetric: only with `quantization_config=CompressedTensorsConfig(dequantize=True)`.
  The default path first calls compressed-tensors' `compress_model` on the meta-device model, and
  `PackedQuantizationCompressor.compress` skips packing the zero point on meta tensors, so the
  model expects an unpacked [N, K/G] zero point while every pack-quantized checkpoint (ours, and
  llm-compressor's) stores it packed [N/8, K/G]: the load stops with a size mismatch. Storing it
  unpacked instead fails later in `decompress` ("Expected torch.int32 but got torch.int8"). This
  is a compressed-tensors bug; our files follow the format its own compressor writes.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping

import torch

from kernels.errors import DigestMismatchError, DtypeError, SchemeError, ShapeError
from kernels.packing import QuantizedWeight, pack_int32, unpack_int32
from kernels.scheme import QuantScheme

PACK_QUANTIZED = "pack-quantized"
FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


def quantization_config(scheme: QuantScheme) -> dict:
    """The `quantization_config` entry of config.json for a model quantized with `scheme`."""
    weights = {
        "num_bits": scheme.bits,
        "type": "int",
        "symmetric": scheme.symmetric,
        "strategy": "group" if scheme.group_size else "channel",
        "group_size": scheme.group_size,
        "dynamic": False,
        "observer": "minmax",
    }
    return {
        "quant_method": "compressed-tensors",
        "format": PACK_QUANTIZED,
        "quantization_status": "compressed",
        "config_groups": {
            "group_0": {
                "targets": list(scheme.targets),
                "weights": weights,
                "input_activations": None,
                "output_activations": None,
                "format": PACK_QUANTIZED,
            }
        },
        "ignore": list(scheme.ignore),
        "kv_cache_scheme": None,
    }


def scheme_from_quantization_config(config: Mapping, name: str | None = None) -> QuantScheme:
    """Parse a compressed-tensors `quantization_config` (ours, or llm-compressor's W4A16/W8A16).

    Only weight-only int schemes with a single config group are supported; anything else is a
    clear `SchemeError` (we would otherwise load weights we cannot compute with).
    """
    if config.get("quant_method") != "compressed-tensors":
        raise SchemeError(f"quant_method must be 'compressed-tensors', got {config.get('quant_method')!r}")
    groups = config.get("config_groups") or {}
    if len(groups) != 1:
        raise SchemeError(f"expected exactly one config group, got {len(groups)}; mixed schemes are not supported")
    (group,) = groups.values()
    fmt = group.get("format") or config.get("format")
    if fmt != PACK_QUANTIZED:
        raise SchemeError(f"format must be {PACK_QUANTIZED!r}, got {fmt!r}")
    if group.get("input_activations") or group.get("output_activations"):
        raise SchemeError("activation quantization is not supported (weight-only schemes only)")
    w = group.get("weights") or {}
    if w.get("type", "int") != "int" or w.get("dynamic"):
        raise SchemeError(f"only static int weights are supported, got type={w.get('type')!r}")
    if w.get("actorder") not in (None, "weight", False):
        raise SchemeError(f"actorder={w['actorder']!r} needs a group index (g_idx), which is not supported")
    bits, strategy = w.get("num_bits"), w.get("strategy")
    group_size = w.get("group_size") if strategy == "group" else None
    if bits not in (4, 8) or strategy not in ("group", "channel") or (strategy == "group") != (bits == 4):
        raise SchemeError(f"supported: int4 'group' or int8 'channel' strategy, got {bits}-bit {strategy!r}")
    symmetric = bool(w.get("symmetric", True))
    if name is None:
        name = "int8" if bits == 8 else f"int4-g{group_size}" + ("" if symmetric else "-asym")
    return QuantScheme(
        name=name,
        bits=bits,
        group_size=group_size,
        symmetric=symmetric,
        targets=tuple(group.get("targets") or ()),
        ignore=tuple(config.get("ignore") or ()),
    )


def compress_weight(qw: QuantizedWeight) -> dict[str, torch.Tensor]:
    """QuantizedWeight -> compressed-tensors tensors with local names (weight_packed, ...)."""
    n, k = qw.shape
    out = {
        "weight_packed": pack_int32(qw.qweight, qw.bits, dim=1),
        "weight_scale": qw.scale.contiguous(),
        "weight_shape": torch.tensor([n, k], dtype=torch.int64),
    }
    if qw.zero_point is not None:
        out["weight_zero_point"] = pack_int32(qw.zero_point, qw.bits, dim=0)
    return out


def decompress_weight(tensors: Mapping[str, torch.Tensor], scheme: QuantScheme, where: str = "") -> QuantizedWeight:
    """compressed-tensors tensors (local names) -> QuantizedWeight, validating every field."""
    label = f"{where}: " if where else ""
    for key in ("weight_packed", "weight_scale", "weight_shape"):
        if key not in tensors:
            raise ShapeError(f"{label}missing tensor {key!r} for a {scheme.name} layer")
    packed, scale, shape = tensors["weight_packed"], tensors["weight_scale"], tensors["weight_shape"]
    if packed.dtype != torch.int32:
        raise DtypeError(f"{label}weight_packed must be int32, got {packed.dtype}")
    if scale.dtype not in FLOAT_DTYPES:
        raise DtypeError(f"{label}weight_scale must be fp16/bf16/fp32, got {scale.dtype}")
    if shape.numel() != 2:
        raise ShapeError(f"{label}weight_shape must hold (out, in), got {shape.tolist()}")
    n, k = (int(v) for v in shape.tolist())
    per_word = 32 // scheme.bits
    if n <= 0 or k <= 0 or tuple(packed.shape) != (n, -(-k // per_word)):
        raise ShapeError(f"{label}weight_packed {tuple(packed.shape)} does not match weight_shape {(n, k)}")
    qweight = unpack_int32(packed, scheme.bits, k, dim=1)
    zero = None
    if not scheme.symmetric:
        if "weight_zero_point" not in tensors:
            raise ShapeError(f"{label}asymmetric scheme {scheme.name} needs weight_zero_point")
        zp = tensors["weight_zero_point"]
        groups = scale.shape[1] if scale.ndim == 2 else 0
        if zp.dtype != torch.int32 or tuple(zp.shape) != (-(-n // per_word), groups):
            raise ShapeError(
                f"{label}weight_zero_point must be int32 [{-(-n // per_word)}, {groups}] (packed along out), "
                f"got {zp.dtype} {tuple(zp.shape)}"
            )
        zero = unpack_int32(zp, scheme.bits, n, dim=0)
    return QuantizedWeight(qweight, scale, zero, scheme.bits, scheme.group_size)


def state_dict_digest(tensors: Mapping[str, torch.Tensor]) -> str:
    """sha256 over (name, dtype, shape, raw bytes) of every tensor, in sorted name order.

    Independent of file layout and safetensors metadata, so the digest of the tensors we export
    equals the digest of the tensors read back from any file that holds them.
    """
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().contiguous().cpu()
        header = json.dumps([name, str(t.dtype), list(t.shape)], separators=(",", ":"))
        h.update(header.encode() + b"\n")
        # view as bytes: works for every dtype (bf16 has no numpy equivalent)
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def verify_digest(tensors: Mapping[str, torch.Tensor], expected: str) -> None:
    """Raise `DigestMismatchError` naming both digests if the tensors do not hash to `expected`."""
    actual = state_dict_digest(tensors)
    if actual != expected:
        raise DigestMismatchError(
            f"quantized tensors do not match their published digest: expected sha256 {expected}, "
            f"got {actual}. The weights are corrupted or were altered; fetch them again from a "
            "trusted peer and verify the release before loading"
        )
