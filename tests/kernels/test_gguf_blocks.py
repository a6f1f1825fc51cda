"""GGUF block quantization: our parse + dequantize against the gguf package (llama.cpp's own layouts),
BlockQuantLinear, and loading a whole (tiny) Llama from gguf-blocks tensors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from gguf import GGMLQuantizationType
from gguf.quants import dequantize as gguf_dequantize
from gguf.quants import quantize as gguf_quantize

from kernels import BlockQuantLinear, SchemeError, ShapeError, load_block_quantized_model
from kernels.gguf_blocks import (
    BYTES_PER_BLOCK,
    TYPES,
    blocks_from_gguf,
    dequantize,
    parse_quantization_config,
    quantization_config,
)
from tests.kernels.conftest import tiny_llama_config


def random_fp16_bits(rng: np.random.Generator, size: int) -> np.ndarray:
    """fp16 values from random bit patterns: every finite value is possible (subnormals, -0, 65504,
    negatives); NaN/Inf patterns are replaced, plus a few fixed odd ones."""
    bits = rng.integers(0, 1 << 16, size=size, dtype=np.uint16)
    bits = np.where((bits & 0x7C00) == 0x7C00, bits & 0x83FF, bits).astype(np.uint16)  # no exponent 31
    odd = np.array([0x0001, 0x8001, 0x03FF, 0x8000, 0x0000, 0x7BFF, 0xFBFF, 0x3C00, 0xBC00], dtype=np.uint16)
    bits[: min(size, odd.size)] = odd[: min(size, odd.size)]
    return bits


def random_blocks(type_name: str, n: int, k: int, seed: int) -> np.ndarray:
    """Raw GGUF bytes [N, K/32 * bytes_per_block]: random fp16 d (and m), random nibbles / int8."""
    rng = np.random.default_rng(seed)
    nb = n * (k // 32)
    d = random_fp16_bits(rng, nb).view(np.uint8).reshape(nb, 2)
    parts = [d]
    if type_name == "Q4_1":
        m = random_fp16_bits(rng, nb)
        m[::3] |= 0x8000  # plenty of negative m
        parts.append(m.view(np.uint8).reshape(nb, 2))
    parts.append(rng.integers(0, 256, size=(nb, 32 if type_name == "Q8_0" else 16), dtype=np.uint8))
    return np.concatenate(parts, axis=1).reshape(n, (k // 32) * BYTES_PER_BLOCK[type_name])


def gguf_weight(type_name: str, raw: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(gguf_dequantize(raw, GGMLQuantizationType[type_name]).copy())


@pytest.mark.parametrize("type_name", TYPES)
def test_dequantize_is_bit_exact_with_gguf(type_name):
    n, k = 24, 576  # K = 18 blocks, not a multiple of 128 (like SmolLM2's hidden size)
    raw = random_blocks(type_name, n, k, seed=TYPES.index(type_name))
    tensors = blocks_from_gguf(type_name, raw, (n, k))
    expected = gguf_weight(type_name, raw)
    ours = dequantize(tensors, type_name)
    assert ours.shape == (n, k) and ours.dtype == torch.float32
    assert torch.equal(ours.view(torch.int32), expected.view(torch.int32))  # every bit, -0.0 included
    # and on blocks gguf itself quantized from real-valued weights
    w = np.random.default_rng(3).standard_normal((n, k)).astype(np.float32)
    raw = gguf_quantize(w, GGMLQuantizationType[type_name])
    assert torch.equal(dequantize(blocks_from_gguf(type_name, raw, (n, k)), type_name).view(torch.int32),
                       gguf_weight(type_name, raw).view(torch.int32))


def test_block_layout_is_llama_cpps():
    """One hand-written Q4_1 block: low nibbles are elements 0..15, high nibbles 16..31."""
    d, m = np.float16(0.5), np.float16(-2.0)
    nibbles = np.array([(j % 16) | ((15 - j % 16) << 4) for j in range(16)], dtype=np.uint8)
    raw = np.concatenate([np.array([d]).view(np.uint8), np.array([m]).view(np.uint8), nibbles])[None, :]
    tensors = blocks_from_gguf("Q4_1", raw, (1, 32))
    assert set(tensors) == {"weight_packed", "weight_scale", "weight_min", "weight_shape"}
    assert tensors["weight_packed"].dtype == torch.int32 and tensors["weight_packed"].shape == (1, 4)
    assert tensors["weight_scale"].view(torch.int16).item() == np.array([d]).view(np.int16).item()
    w = dequantize(tensors, "Q4_1")[0]
    codes = list(range(16)) + list(range(15, -1, -1))
    assert w.tolist() == [0.5 * c - 2.0 for c in codes]


@pytest.mark.parametrize("bad", ["Q5_0", "Q4_K", "F16", "q4_1"])
def test_unsupported_types_are_refused(bad):
    with pytest.raises(SchemeError, match=rf"{bad}.*Q4_0, Q4_1, Q8_0"):
        blocks_from_gguf(bad, np.zeros((2, 18), dtype=np.uint8), (2, 32))
    with pytest.raises(SchemeError, match=bad):
        BlockQuantLinear(32, 2, type_name=bad)
    with pytest.raises(SchemeError, match=bad):
        parse_quantization_config({"quant_method": "gguf-blocks", "layers": {"lm_head": bad}})


def test_wrong_byte_counts_and_shapes_are_refused():
    raw = random_blocks("Q8_0", 4, 64, seed=1)
    with pytest.raises(ShapeError, match="needs 272 bytes"):
        blocks_from_gguf("Q8_0", raw[:, :-1], (4, 64))
    with pytest.raises(ShapeError, match="needs"):
        blocks_from_gguf("Q4_0", raw, (4, 64))  # Q8_0 bytes read as Q4_0: the count is wrong
    with pytest.raises(ShapeError, match="multiple of 32"):
        blocks_from_gguf("Q8_0", raw, (4, 48))
    tensors = blocks_from_gguf("Q8_0", raw, (4, 64))
    with pytest.raises(ShapeError, match="weight_packed"):
        dequantize({**tensors, "weight_packed": tensors["weight_packed"][:, :-1]}, "Q8_0")
    with pytest.raises(ShapeError, match="weight_min"):
        dequantize(blocks_from_gguf("Q4_0", random_blocks("Q4_0", 4, 64, 2), (4, 64)), "Q4_1")


def test_quantization_config_round_trip_and_validation():
    layers = {"model.layers.0.self_attn.q_proj": "Q4_1", "lm_head": "Q8_0"}
    cfg = quantization_config(layers)
    assert cfg == {"quant_method": "gguf-blocks", "format": "gguf-blocks", "block_size": 32, "layers": layers,
                   "source": "gguf"}
    assert parse_quantization_config(cfg) == layers
    assert parse_quantization_config({"model_type": "llama", "quantization_config": cfg}) == layers
    for bad, match in [({**cfg, "quant_method": "compressed-tensors"}, "quant_method"),
                       ({**cfg, "block_size": 64}, "block_size"), ({**cfg, "layers": {}}, "layers"),
                       ({**cfg, "format": "pack-quantized"}, "format")]:
        with pytest.raises(SchemeError, match=match):
            parse_quantization_config(bad)
    with pytest.raises(SchemeError):
        quantization_config({})


@pytest.mark.parametrize("type_name", TYPES)
def test_block_linear_float32_forward_is_f_linear_of_ggufs_weight(type_name):
    n, k = 40, 96
    w = np.random.default_rng(5).standard_normal((n, k)).astype(np.float32)
    raw = gguf_quantize(w, GGMLQuantizationType[type_name])
    tensors = blocks_from_gguf(type_name, raw, (n, k))
    bias = torch.randn(n)
    layer = BlockQuantLinear(k, n, True, type_name=type_name)
    layer.load_blocks(tensors, bias)
    x = torch.randn(2, 3, k)
    assert torch.equal(layer(x), F.linear(x, gguf_weight(type_name, raw), bias))
    # state_dict() is the file's tensors, nothing else
    state = layer.state_dict()
    assert set(state) == {*tensors, "bias"}
    assert all(torch.equal(state[key], t) for key, t in tensors.items())
    # .to(dtype) moves the bias but keeps the file's fp16 block scales bit for bit
    layer.to(torch.bfloat16)
    assert layer.weight_scale.dtype == torch.float16 and torch.equal(layer.weight_scale, tensors["weight_scale"])
    assert layer.bias is not None and layer.bias.dtype == torch.bfloat16
    with pytest.raises(ShapeError, match="expects 96"):
        layer(torch.randn(3, 64))


def tiny_gguf_llama(seed: int = 0):
    """A random tiny Llama, its gguf-blocks tensors (linears Q4_1, lm_head Q8_0, via gguf's own quantizer)
    and the dense model carrying gguf's dequantized weights."""
    from transformers import LlamaForCausalLM

    torch.manual_seed(seed)
    config = tiny_llama_config()
    dense = LlamaForCausalLM(config).eval()
    tensors: dict[str, torch.Tensor] = {}
    layers: dict[str, str] = {}
    state = dense.state_dict()
    for name, module in dense.named_modules():
        if isinstance(module, torch.nn.Linear):
            type_name = "Q8_0" if name == "lm_head" else "Q4_1"
            raw = gguf_quantize(module.weight.detach().numpy(), GGMLQuantizationType[type_name])
            layers[name] = type_name
            tensors.update({f"{name}.{key}": t for key, t in blocks_from_gguf(type_name, raw, module.weight.shape).items()})
            state[f"{name}.weight"] = gguf_weight(type_name, raw)
    dense.load_state_dict(state)
    for key, t in state.items():
        if key.rpartition(".")[0] not in layers:
            tensors[key] = t.clone()
    return config, dense, tensors, quantization_config(layers)


def test_tiny_llama_loads_and_matches_the_dense_model():
    from transformers import LlamaForCausalLM

    config, dense, tensors, qcfg = tiny_gguf_llama()
    model = load_block_quantized_model(LlamaForCausalLM(config), tensors, {"quantization_config": qcfg}).eval()
    assert isinstance(model.lm_head, BlockQuantLinear) and model.lm_head.type_name == "Q8_0"
    assert model.model.layers[1].mlp.down_proj.type_name == "Q4_1"
    ids = torch.randint(0, config.vocab_size, (2, 12))
    with torch.no_grad():
        assert torch.equal(model(ids).logits, dense(ids).logits)
        # the bf16 CPU fast path: close to the float32 logits (bf16 activations through 2 layers)
        fast = model.to(torch.bfloat16)(ids).logits.float()
    ref = dense(ids).logits
    assert ((fast - ref).norm() / ref.norm()).item() < 0.03
    assert set(model.state_dict()) == set(tensors)


def test_loading_is_strict():
    from transformers import LlamaForCausalLM

    config, _, tensors, qcfg = tiny_gguf_llama()
    missing = dict(tensors)
    del missing["model.norm.weight"]
    with pytest.raises(ShapeError, match=r"missing \['model.norm.weight'\]"):
        load_block_quantized_model(LlamaForCausalLM(config), missing, qcfg)
    with pytest.raises(ShapeError, match="model.extra"):
        load_block_quantized_model(LlamaForCausalLM(config), {**tensors, "model.extra": torch.zeros(1)}, qcfg)
    with pytest.raises(ShapeError, match="lm_head.weight"):
        load_block_quantized_model(LlamaForCausalLM(config), {**tensors, "lm_head.weight": torch.zeros(256, 64)}, qcfg)
    no_min = {k: v for k, v in tensors.items() if k != "model.layers.0.mlp.up_proj.weight_min"}
    with pytest.raises(ShapeError, match="up_proj.*weight_min"):
        load_block_quantized_model(LlamaForCausalLM(config), no_min, qcfg)
    no_layer = {k: v for k, v in tensors.items() if not k.startswith("model.layers.1.self_attn.o_proj.")}
    with pytest.raises(ShapeError, match="o_proj.weight_packed"):
        load_block_quantized_model(LlamaForCausalLM(config), no_layer, qcfg)
    with pytest.raises(ShapeError, match="does not have"):
        load_block_quantized_model(LlamaForCausalLM(config), tensors,
                                   quantization_config({**qcfg["layers"], "model.nope": "Q8_0"}))
    with pytest.raises(SchemeError, match="tie_word_embeddings"):
        load_block_quantized_model(LlamaForCausalLM(tiny_llama_config(tie_word_embeddings=True)), tensors, qcfg)
