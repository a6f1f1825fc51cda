"""GGUF block quantization (Q4_0, Q4_1, Q8_0) as a variant format: parse, dequantize, load, run.

A GGUF model (llama.cpp's file format) quantizes each linear weight W [N out, K in] in blocks of 32
consecutive input features. We keep those blocks exactly, so a variant converted from a GGUF
computes what llama.cpp computes from the same file, and can be exported back to the same blocks.

On disk (the contract with pipelines/convert.py): a variant directory holds config.json (the full
model's config, `tie_word_embeddings: false`, and the `quantization_config` below) and
model.safetensors. Per quantized linear `<name>`:

    <name>.weight_packed  int32 [N, K*b/32]  signed q packed along K like compressed-tensors
                                             (kernels.packing.pack_int32(q, b, dim=1)), b = 4 or 8;
                                             Q4_0/Q4_1: q = code - 8 (code = the GGUF nibble, 0..15);
                                             Q8_0: q = the GGUF int8
    <name>.weight_scale   float16 [N, K/32]  each block's d, the GGUF's fp16 bits unchanged
    <name>.weight_min     float16 [N, K/32]  each block's m (Q4_1 only)
    <name>.weight_shape   int64 [2] = (N, K)
    <name>.bias           as in the source, if any

    quantization_config = {"quant_method": "gguf-blocks", "format": "gguf-blocks", "block_size": 32,
                           "layers": {"model.layers.0.self_attn.q_proj": "Q4_1", ..., "lm_head": "Q8_0"},
                           "source": "gguf"}

Every other tensor (norms, the embedding) is dense float32; lm_head is its own Q8_0 layer even when
the GGUF ties it to the embedding. Dequantization, in float32 with a separate multiply and add (no
fused multiply-add), which equals `gguf.quants.dequantize` bit for bit:

    Q4_0: d * q          Q4_1: d * code + m  (code = q + 8)          Q8_0: d * q

(d * q is exact in float32: 11 significant bits times at most 8; only Q4_1's add rounds, once, as
gguf's numpy code does.)

Who loads it: our loader (serving.loader -> `load_block_quantized_model`) only. llama.cpp loads the
same blocks once they are written back into a GGUF file; transformers and vLLM do not read this
`quantization_config` (their GGUF support reads .gguf files, not this layout).

What runs (`BlockQuantLinear`): float32 (and fp16, and CUDA) inputs dequantize once, cache the
weight per dtype and call F.linear: the bit-exact reference. bfloat16 CPU inputs take
`kernels.cpu_matmul`'s fast path: Q4_0/Q4_1 through torch's int4 CPU op (scale d, zero 0 or m + 8d),
Q8_0 as two int4 halves (q = 16 hi + lo) for inputs of up to SPLIT_MAX_ROWS rows (decode) and a
bf16 dense copy of the exactly dequantized weight for more (see that module for why and the
measurements).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from kernels.cpu_matmul import (
    SPLIT_MAX_ROWS,
    CpuWeight,
    SplitInt4CpuWeight,
    cpu_linear,
    int4_supported,
    is_cpu_fast_path,
    prepack_int4,
    prepack_split_int8,
)
from kernels.errors import DeviceError, DtypeError, SchemeError, ShapeError
from kernels.packing import pack_int32, unpack_int32

QUANT_METHOD = "gguf-blocks"
FORMAT = "gguf-blocks"
BLOCK = 32
TYPES = ("Q4_0", "Q4_1", "Q8_0")
BLOCK_KEYS = ("weight_packed", "weight_scale", "weight_min", "weight_shape")
# bytes per block of 32 weights, in llama.cpp's layouts (ggml-common.h block_q4_0 / block_q4_1 / block_q8_0)
BYTES_PER_BLOCK = {"Q4_0": 2 + 16, "Q4_1": 2 + 2 + 16, "Q8_0": 2 + 32}
BITS = {"Q4_0": 4, "Q4_1": 4, "Q8_0": 8}


def _check_type(type_name: str, where: str = "") -> str:
    if type_name not in TYPES:
        label = f"{where}: " if where else ""
        raise SchemeError(
            f"{label}GGUF tensor type {type_name!r} is not supported; supported block types: {', '.join(TYPES)}. "
            "Re-quantize the GGUF with llama-quantize to one of them, or convert from the float model"
        )
    return type_name


def _check_shape(shape, where: str = "") -> tuple[int, int]:
    label = f"{where}: " if where else ""
    if len(shape) != 2:
        raise ShapeError(f"{label}a block-quantized weight is 2-D (N, K), got shape {tuple(shape)}")
    n, k = (int(v) for v in shape)
    if n <= 0 or k <= 0 or k % BLOCK:
        raise ShapeError(f"{label}weight shape {(n, k)}: N and K must be positive and K a multiple of {BLOCK}")
    return n, k


# ----------------------------------------------------------------------------- GGUF bytes -> tensors


def blocks_from_gguf(type_name: str, raw: np.ndarray, shape: tuple[int, int]) -> dict[str, torch.Tensor]:
    """One GGUF tensor's raw blocks -> our tensors (local names weight_packed, weight_scale, ...).

    raw: uint8, as `gguf.GGUFReader` gives a quantized tensor's data ([N, K/32 * bytes_per_block],
    any shape with that many bytes is accepted); shape: (N, K) in torch order (GGUF lists it
    reversed). Layouts (little-endian, one block = 32 consecutive weights of a row):
        Q4_0: fp16 d, 16 bytes of nibbles (low nibble of byte j = element j, high = element j + 16)
        Q4_1: fp16 d, fp16 m, the same 16 bytes
        Q8_0: fp16 d, 32 int8
    """
    _check_type(type_name)
    n, k = _check_shape(shape)
    if not isinstance(raw, np.ndarray) or raw.dtype != np.uint8:
        raise DtypeError(f"GGUF block data must be a numpy uint8 array, got {type(raw).__name__} "
                         f"{getattr(raw, 'dtype', '')}")
    per_block = BYTES_PER_BLOCK[type_name]
    expected = n * (k // BLOCK) * per_block
    if raw.size != expected:
        raise ShapeError(
            f"{type_name} tensor of shape {(n, k)} needs {expected} bytes ({n} rows x {k // BLOCK} blocks x "
            f"{per_block} bytes), got {raw.size} (shape {tuple(raw.shape)}); is the type or the shape wrong?"
        )
    # A copy: the reader's arrays are read-only views of a memory map, which torch would warn about
    # (and must never write through); the fields below are copied out of it anyway.
    blocks = torch.from_numpy(np.array(raw, copy=True).reshape(n, k // BLOCK, per_block))
    # fp16 fields: two bytes each, viewed in place (the host is little-endian like the file; torch
    # and numpy both view natively, so this matches gguf's own `view(np.float16)`)
    d = blocks[..., 0:2].contiguous().view(torch.float16).reshape(n, k // BLOCK)
    out: dict[str, torch.Tensor] = {}
    if type_name == "Q8_0":
        q = blocks[..., 2:].contiguous().view(torch.int8).reshape(n, k)
    else:
        start = 4 if type_name == "Q4_1" else 2
        qs = blocks[..., start:start + 16]
        codes = torch.cat([qs & 0x0F, qs >> 4], dim=-1)  # [N, K/32, 32]: elements 0..15, then 16..31
        q = (codes.to(torch.int16) - 8).to(torch.int8).reshape(n, k)
        if type_name == "Q4_1":
            out["weight_min"] = blocks[..., 2:4].contiguous().view(torch.float16).reshape(n, k // BLOCK).clone()
    out["weight_packed"] = pack_int32(q, BITS[type_name], dim=1)
    out["weight_scale"] = d.clone()
    out["weight_shape"] = torch.tensor([n, k], dtype=torch.int64)
    return {key: out[key] for key in BLOCK_KEYS if key in out}


def _validate(tensors: Mapping[str, torch.Tensor], type_name: str, where: str = "") -> tuple[int, int]:
    """Check every field of a layer's tensors against its type; return (N, K)."""
    _check_type(type_name, where)
    label = f"{where}: " if where else ""
    needed = ["weight_packed", "weight_scale", "weight_shape"] + (["weight_min"] if type_name == "Q4_1" else [])
    for key in needed:
        if key not in tensors:
            raise ShapeError(f"{label}missing tensor {key!r} for a {type_name} layer")
    if type_name != "Q4_1" and "weight_min" in tensors:
        raise ShapeError(f"{label}unexpected tensor 'weight_min' for a {type_name} layer (only Q4_1 has one)")
    shape = tensors["weight_shape"]
    if shape.numel() != 2:
        raise ShapeError(f"{label}weight_shape must hold (N, K), got {shape.tolist()}")
    n, k = _check_shape(shape.tolist(), where)
    packed = tensors["weight_packed"]
    if packed.dtype != torch.int32:
        raise DtypeError(f"{label}weight_packed must be int32, got {packed.dtype}")
    if tuple(packed.shape) != (n, k * BITS[type_name] // 32):
        raise ShapeError(f"{label}weight_packed {tuple(packed.shape)} does not match weight_shape {(n, k)} "
                         f"for {type_name} (expected {(n, k * BITS[type_name] // 32)})")
    for key in ("weight_scale", "weight_min"):
        if key in tensors:
            t = tensors[key]
            if t.dtype != torch.float16 or tuple(t.shape) != (n, k // BLOCK):
                raise ShapeError(f"{label}{key} must be float16 [{n}, {k // BLOCK}] (one per block of {BLOCK}), "
                                 f"got {t.dtype} {tuple(t.shape)}")
    return n, k


def _codes(tensors: Mapping[str, torch.Tensor], type_name: str, n: int, k: int) -> torch.Tensor:
    """Signed q int8 [N, K] (Q4: code - 8; Q8_0: the int8 itself)."""
    return unpack_int32(tensors["weight_packed"], BITS[type_name], k, dim=1)


def dequantize(tensors: Mapping[str, torch.Tensor], type_name: str, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """W [N, K] from a layer's tensors; the float32 result equals gguf.quants.dequantize bit for bit.

    Computed in float32 with a separate multiply and add (never addcmul / fma: the fused op rounds
    once where numpy rounds twice), then cast to `dtype`.
    """
    n, k = _validate(tensors, type_name)
    q = _codes(tensors, type_name, n, k).to(torch.float32).view(n, k // BLOCK, BLOCK)
    d = tensors["weight_scale"].to(torch.float32).unsqueeze(-1)
    if type_name == "Q4_1":
        m = tensors["weight_min"].to(torch.float32).unsqueeze(-1)
        w = torch.add(torch.mul(d, q + 8.0), m)  # d * code + m, code = q + 8 (exact)
    else:
        w = torch.mul(d, q)  # exact
    return w.reshape(n, k).to(dtype)


# ----------------------------------------------------------------------------- quantization_config


def quantization_config(layers: Mapping[str, str]) -> dict:
    """The config.json entry of a gguf-blocks variant: module name -> GGUF type of each layer."""
    for name, type_name in layers.items():
        _check_type(type_name, name)
    if not layers:
        raise SchemeError("a gguf-blocks variant needs at least one quantized layer")
    return {"quant_method": QUANT_METHOD, "format": FORMAT, "block_size": BLOCK, "layers": dict(layers),
            "source": "gguf"}


def parse_quantization_config(config: Mapping) -> dict[str, str]:
    """Validate a gguf-blocks `quantization_config` (or a whole config.json); return its layers."""
    config = config.get("quantization_config", config)
    if not isinstance(config, Mapping):
        raise SchemeError(f"quantization_config must be an object, got {type(config).__name__}")
    if config.get("quant_method") != QUANT_METHOD:
        raise SchemeError(f"quant_method must be {QUANT_METHOD!r}, got {config.get('quant_method')!r}")
    if config.get("format", FORMAT) != FORMAT:
        raise SchemeError(f"format must be {FORMAT!r}, got {config.get('format')!r}")
    if config.get("block_size", BLOCK) != BLOCK:
        raise SchemeError(f"block_size must be {BLOCK} (GGUF's Q4_0/Q4_1/Q8_0 blocks), got {config.get('block_size')!r}")
    layers = config.get("layers")
    if not isinstance(layers, Mapping) or not layers:
        raise SchemeError("quantization_config.layers must map module names to GGUF types, e.g. "
                          "{'lm_head': 'Q8_0'}; it is missing or empty")
    out: dict[str, str] = {}
    for name, type_name in layers.items():
        if not isinstance(name, str) or not isinstance(type_name, str):
            raise SchemeError(f"quantization_config.layers: {name!r}: {type_name!r} is not a name -> type string pair")
        out[name] = _check_type(type_name, name)
    return out


# ----------------------------------------------------------------------------- the module


class BlockQuantLinear(nn.Module):
    """A linear layer with GGUF block-quantized weights: y = x @ dequant(W).T + bias.

    Shaped like nn.Linear; the persistent buffers are the format's tensors, so `state_dict()` is
    exactly what the variant file holds.
    """

    weight_packed: torch.Tensor
    weight_scale: torch.Tensor
    weight_shape: torch.Tensor

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        *,
        type_name: str,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        _check_type(type_name)
        n, k = _check_shape((out_features, in_features))
        self.in_features, self.out_features, self.type_name = k, n, type_name
        bits = BITS[type_name]
        self.register_buffer("weight_packed", torch.zeros(n, k * bits // 32, dtype=torch.int32, device=device))
        self.register_buffer("weight_scale", torch.zeros(n, k // BLOCK, dtype=torch.float16, device=device))
        self.register_buffer("weight_min", torch.zeros(n, k // BLOCK, dtype=torch.float16, device=device)
                             if type_name == "Q4_1" else None)
        self.register_buffer("weight_shape", torch.tensor([n, k], dtype=torch.int64, device=device))
        self.bias = nn.Parameter(torch.zeros(n, dtype=dtype, device=device), requires_grad=False) if bias else None
        self.backend = "auto"  # "auto": the bf16 CPU fast path for bf16 CPU inputs; "torch": always the reference
        self.cache_dequantized = True
        self._dequant_cache: tuple[tuple, torch.Tensor] | None = None
        self._cpu_cache: tuple[tuple, CpuWeight | None] | None = None

    def tensors(self) -> dict[str, torch.Tensor]:
        """The layer's format tensors (local names), without the bias."""
        return {key: b for key in BLOCK_KEYS if (b := self._buffers.get(key)) is not None}

    def load_blocks(self, tensors: Mapping[str, torch.Tensor], bias: torch.Tensor | None = None, where: str = "") -> None:
        """Set the buffers from a layer's tensors (local names), validating them first."""
        n, k = _validate(tensors, self.type_name, where)
        if (n, k) != (self.out_features, self.in_features):
            raise ShapeError(f"{where}: block weight is {(n, k)}, module is {(self.out_features, self.in_features)}")
        device = self.weight_packed.device
        for key in BLOCK_KEYS:
            if key in tensors:
                setattr(self, key, tensors[key].to(device).contiguous())
        self.weight_shape = self.weight_shape.to(torch.int64)
        if (bias is None) != (self.bias is None):
            raise ShapeError(f"{where}: bias {'missing' if bias is None else 'unexpected'} for this layer")
        if bias is not None:
            if tuple(bias.shape) != (self.out_features,):
                raise ShapeError(f"{where}: bias shape {tuple(bias.shape)} != ({self.out_features},)")
            self.bias = nn.Parameter(bias.detach().to(device).clone(), requires_grad=False)
        self._dequant_cache = self._cpu_cache = None

    # --- derived caches (dropped when the buffers change: new storage, in-place edits, .to())

    def _state_token(self) -> tuple:
        return tuple((b.device, b.data_ptr(), b._version) for b in self.tensors().values())

    def dequantized_weight(self, dtype: torch.dtype) -> torch.Tensor:
        """W [N, K] in `dtype` (float32: gguf's values bit for bit), cached per dtype if enabled."""
        token = (*self._state_token(), dtype)
        if self._dequant_cache is not None and self._dequant_cache[0] == token:
            return self._dequant_cache[1]
        w = dequantize(self.tensors(), self.type_name, dtype)
        if self.cache_dequantized:
            self._dequant_cache = (token, w)
        return w

    def cpu_weight(self) -> CpuWeight | None:
        """Prepacked for torch's CPU int4 op (cached): Q4_0/Q4_1 as one int4 weight, Q8_0 as two
        (:class:`~kernels.cpu_matmul.SplitInt4CpuWeight`); None for shapes the op cannot run."""
        token = self._state_token()
        if self._cpu_cache is not None and self._cpu_cache[0] == token:
            return self._cpu_cache[1]
        cw: CpuWeight | None = None
        if int4_supported(self.out_features, self.in_features, BLOCK):
            if self.weight_packed.device.type != "cpu":
                raise DeviceError(f"the layer's weights are on {self.weight_packed.device}, the input on the CPU")
            q = _codes(self.tensors(), self.type_name, self.out_features, self.in_features)
            d = self.weight_scale.to(torch.float32)
            if self.type_name == "Q8_0":
                cw = prepack_split_int8(q, d, BLOCK)
            else:
                # W = d * (code - 8) + zero; Q4_0: zero = 0, Q4_1: zero = m + 8 d (float32, then bf16)
                zero = torch.zeros_like(d) if self.weight_min is None else self.weight_min.to(torch.float32) + 8.0 * d
                cw = prepack_int4(q.to(torch.int32) + 8, d, zero, BLOCK)
        self._cpu_cache = (token, cw)
        return cw

    def _apply(self, fn, recurse=True):
        # .to(device) moves everything; .to(dtype) / .half() convert the bias but never the fp16 block
        # scales: they are the file's bits (a bf16 round trip would change the weights)
        self._dequant_cache = self._cpu_cache = None
        scales = {key: b for key in ("weight_scale", "weight_min") if (b := self._buffers.get(key)) is not None}
        out = super()._apply(fn, recurse)
        for key, old in scales.items():
            new = self._buffers[key]
            if new is not None and new.dtype != old.dtype:
                self._buffers[key] = old.to(new.device)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.in_features:
            raise ShapeError(f"input has {x.shape[-1]} features, layer expects {self.in_features}")
        if self.backend == "auto" and is_cpu_fast_path(x):
            cw = self.cpu_weight()
            rows = x.numel() // self.in_features
            if cw is not None and (not isinstance(cw, SplitInt4CpuWeight) or rows <= SPLIT_MAX_ROWS):
                return cpu_linear(x, cw, self.bias)
            # Q8_0 on more rows (or an N the int4 op cannot take): bf16 dense copy of the exact weight, below
        bias = None if self.bias is None else self.bias.to(x.dtype)
        return F.linear(x, self.dequantized_weight(x.dtype), bias)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}, type={self.type_name}")


# ----------------------------------------------------------------------------- model level


def _replace(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)


def load_block_quantized_model(model: nn.Module, tensors: Mapping[str, torch.Tensor], config: Mapping) -> nn.Module:
    """Swap BlockQuantLinears into an un-quantized skeleton and load every tensor; return the model.

    model: built from the variant's config on the target device (not meta); tensors: the
    safetensors contents; config: the `quantization_config` (or the whole config.json). Every
    tensor must be used and every parameter set: anything else is a ShapeError naming keys.
    """
    layers = parse_quantization_config(config)
    if any(p.is_meta for p in model.parameters()):
        raise DeviceError(
            "the skeleton has parameters on the meta device; build it on a real device "
            "(e.g. LlamaForCausalLM(config) under torch.device('cpu')) so every tensor can be loaded"
        )
    if getattr(getattr(model, "config", None), "tie_word_embeddings", False) and "lm_head" in layers:
        raise SchemeError("the model ties lm_head to the embedding, but the variant quantizes lm_head; "
                          "a gguf-blocks variant's config.json must say tie_word_embeddings: false")
    remaining = dict(tensors)
    for name, type_name in layers.items():
        try:
            module = model.get_submodule(name)
        except AttributeError:
            raise ShapeError(f"the config quantizes {name!r}, which the model does not have") from None
        if not isinstance(module, nn.Linear):
            raise ShapeError(f"the config quantizes {name!r}, a {type(module).__name__}, not a Linear")
        local = {key: remaining.pop(f"{name}.{key}") for key in BLOCK_KEYS if f"{name}.{key}" in remaining}
        if "weight_packed" not in local:
            raise ShapeError(f"{name}: no {name}.weight_packed in the checkpoint, but the config quantizes it")
        bias = remaining.pop(f"{name}.bias", None)
        layer = BlockQuantLinear(module.in_features, module.out_features, bias is not None, type_name=type_name,
                                 dtype=module.weight.dtype, device=module.weight.device)
        layer.load_blocks(local, bias, where=name)
        _replace(model, name, layer)
    stray = sorted(k for k in remaining if k.rpartition(".")[0] in layers)
    if stray:
        raise ShapeError(f"unexpected tensors for block-quantized layers: {stray[:5]}")
    result = model.load_state_dict(remaining, strict=False)
    missing = [k for k in result.missing_keys if k.rpartition(".")[0] not in layers]
    if missing or result.unexpected_keys:
        raise ShapeError(
            f"checkpoint does not match the model: missing {sorted(missing)[:5]}, "
            f"unexpected {sorted(result.unexpected_keys)[:5]}"
        )
    return model
