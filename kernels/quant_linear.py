"""`QuantLinear`, swapping it into a model, and moving quantized models to and from compressed-tensors.

QuantLinear is shaped like nn.Linear (in_features, out_features, bias, forward over any leading
dims). Its persistent state *is* the compressed-tensors format (weight_packed, weight_scale,
weight_zero_point, weight_shape, bias), so `state_dict()` is what we publish and what transformers
and vLLM load. What runs is derived from it on first use and cached on the module:
- CUDA input: the weight repacked to the kernels' layout (`kernels.layouts`) and the Triton kernels.
  The repacked copy then *replaces* the checkpoint-format buffers (weights on the device once):
  the buffers become kernel_qweight / kernel_scale / kernel_zero (not persistent), and
  `state_dict()` rebuilds the compressed-tensors tensors from them, bit for bit (the repacking is
  exact both ways). Loading a state dict or compressed tensors switches back first;
- CPU input (or backend="torch"): the plain-torch reference, dequantize then F.linear, with the
  dequantized weight cached per dtype when `cache_dequantized` is set (the default: fast CPU
  decode at the cost of holding a float copy; turn it off to keep only the packed weights).
  float32 inputs always take this path (its bits are those of every published evaluation);
- bfloat16 CPU input with backend="auto": torch's weight-only int4/int8 CPU ops
  (`kernels.cpu_matmul`), on the integers prepacked once and cached (no float copy of the
  weight). int4 layers whose N is not a multiple of 16 fall back to the bf16 reference.
The caches are dropped when the buffers change (load_state_dict, .to(), in-place edits).

    quantize_model(model, scheme, calibration)      float Llama -> QuantLinears, in place
    export_compressed_tensors(model)                 -> state dict + quantization_config + digest
    save_compressed_tensors(model, directory)        model.safetensors + config.json, atomically
    load_quantized_model(skeleton, tensors, config)  float skeleton + packed tensors -> QuantLinears
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from kernels.calibrate import quantize_weights
from kernels.cpu_matmul import CpuWeight, cpu_linear, int4_supported, is_cpu_fast_path, prepack_int4, prepack_int8
from kernels.errors import DeviceError, SchemeError, ShapeError
from kernels.formats import (
    compress_weight,
    decompress_weight,
    quantization_config,
    scheme_from_quantization_config,
    state_dict_digest,
    verify_digest,
)
from kernels.packing import QuantizedWeight
from kernels.scheme import QuantScheme

COMPRESSED_KEYS = ("weight_packed", "weight_scale", "weight_zero_point", "weight_shape")
_KERNEL_BUFFERS = ("kernel_qweight", "kernel_scale", "kernel_zero")  # the repacked form (kernels.layouts)


class QuantLinear(nn.Module):
    """A weight-only quantized linear layer: y = x @ dequant(W).T + bias."""

    # Checkpoint-format buffers (compressed-tensors names), until repacked for the kernels.
    weight_packed: torch.Tensor
    weight_scale: torch.Tensor

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        *,
        scheme: QuantScheme,
        dtype: torch.dtype = torch.float16,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        if in_features <= 0 or out_features <= 0:
            raise ShapeError(f"QuantLinear needs positive sizes, got in={in_features}, out={out_features}")
        if scheme.group_size and in_features % scheme.group_size:
            raise ShapeError(f"in_features {in_features} is not divisible by group_size {scheme.group_size}")
        self.in_features, self.out_features, self.scheme = in_features, out_features, scheme
        per_word = 32 // scheme.bits
        groups = in_features // scheme.group_size if scheme.group_size else 1
        # compressed-tensors names and shapes (see kernels.formats); dtype = the scales' dtype
        self.register_buffer("weight_packed",
                             torch.zeros(out_features, -(-in_features // per_word), dtype=torch.int32, device=device))
        self.register_buffer("weight_scale", torch.ones(out_features, groups, dtype=dtype, device=device))
        if not scheme.symmetric:
            self.register_buffer("weight_zero_point",
                                 torch.zeros(-(-out_features // per_word), groups, dtype=torch.int32, device=device))
        else:
            self.register_buffer("weight_zero_point", None)  # symmetric: no zero point is stored
        self.register_buffer("weight_shape", torch.tensor([out_features, in_features], dtype=torch.int64, device=device))
        self.bias = nn.Parameter(torch.zeros(out_features, dtype=dtype, device=device), requires_grad=False) if bias else None
        self.backend = "auto"  # "auto": Triton for CUDA inputs, torch otherwise; or "torch" / "triton"
        self.cache_dequantized = True
        self._dequant_cache: tuple[tuple, torch.Tensor] | None = None
        self._kernel_cache: tuple[tuple, object] | None = None
        self._cpu_cache: tuple[tuple, CpuWeight | None] | None = None  # kernels.cpu_matmul's prepacked form
        self._repacked = False  # True: the buffers hold the kernel layout (see the module docstring)

    # --- construction

    @classmethod
    def from_quantized(cls, qw: QuantizedWeight, scheme: QuantScheme, bias: torch.Tensor | None = None) -> QuantLinear:
        n, k = qw.shape
        if qw.bits != scheme.bits or qw.group_size != scheme.group_size or (qw.zero_point is None) != scheme.symmetric:
            raise SchemeError(f"quantized weight ({qw.bits}-bit, group {qw.group_size}) does not match scheme {scheme.name}")
        module = cls(k, n, bias is not None, scheme=scheme, dtype=qw.scale.dtype, device=qw.qweight.device)
        module.load_compressed(compress_weight(qw), bias)
        return module

    def load_compressed(self, tensors: Mapping[str, torch.Tensor], bias: torch.Tensor | None = None, where: str = "") -> None:
        """Set the buffers from compressed-tensors tensors (local names), validating them first."""
        qw = decompress_weight(tensors, self.scheme, where)  # raises on any inconsistency
        if qw.shape != (self.out_features, self.in_features):
            raise ShapeError(f"{where}: packed weight is {qw.shape}, module is {(self.out_features, self.in_features)}")
        self.restore_checkpoint_format()
        self._dequant_cache = self._cpu_cache = None
        device = self.weight_packed.device
        self.weight_packed = tensors["weight_packed"].to(device).contiguous()
        self.weight_scale = tensors["weight_scale"].to(device).contiguous()
        self.weight_shape = tensors["weight_shape"].to(device=device, dtype=torch.int64)
        if not self.scheme.symmetric:
            self.weight_zero_point = tensors["weight_zero_point"].to(device).contiguous()
        if (bias is None) != (self.bias is None):
            raise ShapeError(f"{where}: bias {'missing' if bias is None else 'unexpected'} for this layer")
        if bias is not None:
            if bias.shape != (self.out_features,):
                raise ShapeError(f"{where}: bias shape {tuple(bias.shape)} != ({self.out_features},)")
            self.bias = nn.Parameter(bias.detach().to(device).clone(), requires_grad=False)

    def quantized_weight(self) -> QuantizedWeight:
        """The integers, scales and zero points, unpacked from the buffers."""
        if self._repacked:
            from kernels.layouts import unpack_kernel_weight

            return unpack_kernel_weight(self.kernel_weight())
        return decompress_weight({k: v for k, v in self._buffers.items() if v is not None}, self.scheme)

    # --- the two forms of the weight: checkpoint format, or repacked for the kernels

    def _weight_buffers(self) -> list[torch.Tensor]:
        names = _KERNEL_BUFFERS if self._repacked else COMPRESSED_KEYS[:3]
        return [b for b in (self._buffers.get(name) for name in names) if b is not None]

    def _set_weight_buffers(self, tensors: Mapping[str, torch.Tensor | None], persistent: bool) -> None:
        for name in (*COMPRESSED_KEYS[:3], *_KERNEL_BUFFERS):
            self._buffers.pop(name, None)
            self._non_persistent_buffers_set.discard(name)
        for name, t in tensors.items():
            self.register_buffer(name, t, persistent=persistent)

    def restore_checkpoint_format(self) -> None:
        """Put the compressed-tensors buffers back in place of the kernel layout (no-op if present)."""
        if not self._repacked:
            return
        tensors = compress_weight(self.quantized_weight())
        device = self.kernel_qweight.device
        tensors = {k: tensors[k].to(device) if k in tensors else None for k in COMPRESSED_KEYS[:3]}
        self._set_weight_buffers(tensors, persistent=True)
        self._repacked = False
        self._kernel_cache = None

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        super()._save_to_state_dict(destination, prefix, keep_vars)
        if self._repacked:
            # rebuild the checkpoint tensors (exact), in the order the buffers had before repacking
            shape = destination.pop(prefix + "weight_shape")
            for key, t in compress_weight(self.quantized_weight()).items():
                if key != "weight_shape":
                    destination[prefix + key] = t
            destination[prefix + "weight_shape"] = shape

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        self.restore_checkpoint_format()  # the checkpoint's tensors are copied into these buffers
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    # --- derived caches

    def _state_token(self) -> tuple:
        # identifies the buffers' current contents: storage and in-place version counters
        return tuple((b.device, b.data_ptr(), b._version) for b in self._weight_buffers())

    def dequantized_weight(self, dtype: torch.dtype) -> torch.Tensor:
        """W [N, K] = (q - zero) * scale in `dtype`, on the buffers' device (cached if enabled)."""
        token = (*self._state_token(), dtype)
        if self._dequant_cache is not None and self._dequant_cache[0] == token:
            return self._dequant_cache[1]
        w = self.quantized_weight().dequantize(dtype)
        if self.cache_dequantized:
            self._dequant_cache = (token, w)
        return w

    def cpu_weight(self) -> CpuWeight | None:
        """The weight prepacked for the bf16 CPU ops (cached), or None where they cannot run it."""
        token = self._state_token()
        if self._cpu_cache is not None and self._cpu_cache[0] == token:
            return self._cpu_cache[1]
        qw = self.quantized_weight()
        cw: CpuWeight | None = None
        if qw.bits == 8:
            cw = prepack_int8(qw.qweight, qw.scale)
        elif qw.group_size is not None and int4_supported(self.out_features, self.in_features, qw.group_size):
            # W = (q - zp) * s = (code - 8) * s + zero, code = q + 8, zero = -zp * s (float32, then bf16)
            scale = qw.scale.to(torch.float32)
            zero = torch.zeros_like(scale) if qw.zero_point is None else -(qw.zero_point.to(torch.float32) * scale)
            cw = prepack_int4(qw.qweight.to(torch.int32) + 8, scale, zero, qw.group_size)
        self._cpu_cache = (token, cw)
        return cw

    def kernel_weight(self):
        """The weight in the Triton kernels' layout. The first call repacks it and frees the
        checkpoint-format buffers (see the module docstring); later calls reuse the buffers."""
        from kernels.layouts import KernelWeight, repack_for_kernel

        if not self._repacked:
            kw = repack_for_kernel(self.quantized_weight(), self.weight_packed.device)
            self._set_weight_buffers({"kernel_qweight": kw.qweight, "kernel_scale": kw.scale, "kernel_zero": kw.zero},
                                     persistent=False)
            self._repacked = True
            self._dequant_cache = None
        token = self._state_token()
        if self._kernel_cache is None or self._kernel_cache[0] != token:
            kw = KernelWeight(self.kernel_qweight, self.kernel_scale, self.kernel_zero, self.out_features,
                              self.in_features, self.scheme.bits, self.scheme.group_size)
            self._kernel_cache = (token, kw)
        return self._kernel_cache[1]

    def _apply(self, fn, recurse=True):
        self._dequant_cache = self._kernel_cache = self._cpu_cache = None
        return super()._apply(fn, recurse)

    # --- forward

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.in_features:
            raise ShapeError(f"input has {x.shape[-1]} features, layer expects {self.in_features}")
        use_triton = self.backend == "triton" or (self.backend == "auto" and x.is_cuda)
        if not use_triton:
            if self.backend == "auto" and is_cpu_fast_path(x):
                cw = self.cpu_weight()
                if cw is not None:
                    return cpu_linear(x, cw, self.bias)
            bias = None if self.bias is None else self.bias.to(x.dtype)
            return F.linear(x, self.dequantized_weight(x.dtype), bias)
        from kernels.quant_matmul import quant_matmul  # imports triton: GPU path only

        lead = x.shape[:-1]
        x2 = x.reshape(-1, self.in_features).contiguous()
        bias = None if self.bias is None else self.bias.to(x.dtype)
        y = quant_matmul(x2, self.kernel_weight(), bias)
        return y.reshape(*lead, self.out_features)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"bias={self.bias is not None}, scheme={self.scheme.name}"
        )


# ----------------------------------------------------------------------------- model level


def quantize_model(
    model: nn.Module, scheme: QuantScheme | str, calibration: Iterable | None = None
) -> nn.Module:
    """Quantize `model`'s targeted linears in place and return it.

    scheme: a QuantScheme or a name ("int4-g128", "int4-g32-asym", "int8"); method "gptq" needs
    `calibration`, an iterable of token-id tensors [B, T] (or [T], or dicts with input_ids and
    attention_mask) run through the model on its current device. Embeddings and, by default,
    lm_head stay in full precision.
    """
    if isinstance(scheme, str):
        scheme = QuantScheme.from_name(scheme)
    if getattr(getattr(model, "config", None), "tie_word_embeddings", False) and scheme.matches(
        "lm_head", nn.Linear(1, 1)
    ):
        raise SchemeError("lm_head is tied to the embeddings; keep 'lm_head' in the scheme's ignore list")
    was_training = model.training
    model.eval()
    quantized = quantize_weights(model, scheme, calibration)
    for name, qw in quantized.items():
        linear = model.get_submodule(name)
        _replace(model, name, QuantLinear.from_quantized(qw, scheme, linear.bias))
    model.train(was_training)
    return model


def _replace(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)


def model_scheme(model: nn.Module) -> QuantScheme:
    """The single scheme of a model's QuantLinears (error if none or mixed)."""
    schemes = {m.scheme for m in model.modules() if isinstance(m, QuantLinear)}
    if len(schemes) != 1:
        raise SchemeError(f"expected one quantization scheme in the model, found {len(schemes)}")
    return schemes.pop()


@dataclasses.dataclass
class CompressedTensorsExport:
    """A quantized model in compressed-tensors form."""

    state_dict: dict[str, torch.Tensor]  # every tensor of the model, quantized linears packed
    quantization_config: dict  # the config.json entry
    digest: str  # kernels.formats.state_dict_digest(state_dict): pass it to load_quantized_model


def export_compressed_tensors(model: nn.Module) -> CompressedTensorsExport:
    """The model's state dict in pack-quantized form, its quantization_config and digest."""
    scheme = model_scheme(model)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    # tied lm_head shares the embedding's storage: store it once, as transformers does
    if getattr(getattr(model, "config", None), "tie_word_embeddings", False):
        state.pop("lm_head.weight", None)
    return CompressedTensorsExport(state, quantization_config(scheme), state_dict_digest(state))


def save_compressed_tensors(model: nn.Module, directory: str | Path) -> CompressedTensorsExport:
    """Write model.safetensors and config.json (with quantization_config) into `directory`.

    Each file is written to a temporary name in the directory, fsynced, then renamed. The
    safetensors metadata has a single key, so the file bytes are reproducible.
    """
    from safetensors.torch import save_file

    export = export_compressed_tensors(model)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    config = model.config.to_dict() if hasattr(model, "config") else {}
    config["quantization_config"] = export.quantization_config
    config_bytes = (json.dumps(config, indent=2, sort_keys=True, default=str) + "\n").encode()

    def write(name: str, writer) -> None:
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", dir=directory)
        os.close(fd)
        try:
            writer(tmp)
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
            os.replace(tmp, directory / name)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    write("model.safetensors", lambda p: save_file(export.state_dict, p, metadata={"format": "pt"}))
    write("config.json", lambda p: Path(p).write_bytes(config_bytes))
    return export


def load_quantized_model(
    model: nn.Module,
    tensors: Mapping[str, torch.Tensor],
    config: Mapping,
    expected_digest: str | None = None,
) -> nn.Module:
    """Swap QuantLinears into an un-quantized skeleton and load every tensor; return the model.

    model: built from the release's config (e.g. LlamaForCausalLM(config)) on the target device;
    tensors: the safetensors contents; config: the `quantization_config` dict (or the whole
    config.json dict). With `expected_digest` the tensors are verified first (DigestMismatchError).
    Every tensor must be used and every parameter set: anything else is a ShapeError naming keys.
    """
    if expected_digest is not None:
        verify_digest(tensors, expected_digest)
    if any(p.is_meta for p in model.parameters()):
        raise DeviceError(
            "the skeleton has parameters on the meta device; build it on a real device "
            "(e.g. LlamaForCausalLM(config) under torch.device('cpu')) so every tensor can be loaded"
        )
    config = config.get("quantization_config", config)
    scheme = scheme_from_quantization_config(config)
    remaining = dict(tensors)
    for name, module in list(model.named_modules()):
        if not (isinstance(module, nn.Linear) and scheme.matches(name, module)):
            continue
        local = {key: remaining.pop(f"{name}.{key}") for key in COMPRESSED_KEYS if f"{name}.{key}" in remaining}
        if "weight_packed" not in local:
            raise ShapeError(f"{name}: no {name}.weight_packed in the checkpoint, but the config quantizes it")
        bias = remaining.pop(f"{name}.bias", None)
        qlinear = QuantLinear(module.in_features, module.out_features, bias is not None,
                              scheme=scheme, dtype=local["weight_scale"].dtype, device=module.weight.device)
        qlinear.load_compressed(local, bias, where=name)
        _replace(model, name, qlinear)
    quant_keys = {k for k, m in model.named_modules() if isinstance(m, QuantLinear)}
    stray = [k for k in remaining if k.rpartition(".")[0] in quant_keys]
    if stray:
        raise ShapeError(f"unexpected tensors for quantized layers: {sorted(stray)[:5]}")
    result = model.load_state_dict(remaining, strict=False)
    missing = [k for k in result.missing_keys if k.rpartition(".")[0] not in quant_keys]
    if getattr(getattr(model, "config", None), "tie_word_embeddings", False) and "lm_head.weight" in missing:
        missing.remove("lm_head.weight")
        if hasattr(model, "tie_weights"):
            model.tie_weights()
    if missing or result.unexpected_keys:
        raise ShapeError(
            f"checkpoint does not match the model: missing {sorted(missing)[:5]}, "
            f"unexpected {sorted(result.unexpected_keys)[:5]}"
        )
    return model
