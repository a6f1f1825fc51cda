"""Quantized inference kernels: schemes, quantizers (RTN, GPTQ), compressed-tensors packing,
Triton weight-only matmuls with plain-torch references, and `QuantLinear`; GGUF block
quantization (Q4_0/Q4_1/Q8_0, `kernels.gguf_blocks`) with `BlockQuantLinear`; bf16 CPU fast paths
through torch's packed int4/int8 ops (`kernels.cpu_matmul`).

Importing `kernels` loads torch but not triton or transformers: the Triton kernels
(`int4_matmul`, `int8_matmul`, `quant_matmul`, ...) are imported on first use, so CPU-only users
without a working triton still get `QuantLinear`'s plain-torch path.
"""

from kernels.errors import (
    DeviceError,
    DigestMismatchError,
    DtypeError,
    KernelError,
    LayoutError,
    SchemeError,
    ShapeError,
)
from kernels.formats import quantization_config, scheme_from_quantization_config, state_dict_digest
from kernels.gguf_blocks import QUANT_METHOD as GGUF_BLOCKS
from kernels.gguf_blocks import (
    BlockQuantLinear,
    blocks_from_gguf,
    load_block_quantized_model,
    parse_quantization_config,
)
from kernels.gguf_blocks import dequantize as dequantize_blocks
from kernels.gguf_blocks import quantization_config as gguf_blocks_config
from kernels.packing import QuantizedWeight, pack_int4, unpack_int4
from kernels.quant_linear import (
    CompressedTensorsExport,
    QuantLinear,
    export_compressed_tensors,
    load_quantized_model,
    quantize_model,
    save_compressed_tensors,
)
from kernels.quantize import quantize_gptq, quantize_rtn
from kernels.scheme import QuantScheme

# name -> module: these import triton. (The generic launcher `quant_matmul` is not re-exported:
# its name is that of its module, `kernels.quant_matmul`; import it from there.)
_LAZY = {
    "int4_matmul": "kernels.quant_matmul",
    "int8_matmul": "kernels.quant_matmul",
    "quant_matmul_reference": "kernels.quant_matmul",
    "MatmulConfig": "kernels.quant_matmul",
}

__all__ = [
    "GGUF_BLOCKS",
    "BlockQuantLinear",
    "CompressedTensorsExport",
    "DeviceError",
    "DigestMismatchError",
    "DtypeError",
    "KernelError",
    "LayoutError",
    "QuantLinear",
    "QuantScheme",
    "QuantizedWeight",
    "SchemeError",
    "ShapeError",
    "blocks_from_gguf",
    "dequantize_blocks",
    "export_compressed_tensors",
    "gguf_blocks_config",
    "load_block_quantized_model",
    "load_quantized_model",
    "pack_int4",
    "parse_quantization_config",
    "quantization_config",
    "quantize_gptq",
    "quantize_model",
    "quantize_rtn",
    "save_compressed_tensors",
    "scheme_from_quantization_config",
    "state_dict_digest",
    "unpack_int4",
    *_LAZY,
]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'kernels' has no attribute {name!r}")
