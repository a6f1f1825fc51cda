"""QuantLinear, quantize_model and the compressed-tensors round trip through our own loader."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from torch import nn

from kernels import (
    DeviceError,
    DigestMismatchError,
    QuantLinear,
    QuantScheme,
    SchemeError,
    ShapeError,
    export_compressed_tensors,
    load_quantized_model,
    quantize_model,
    quantize_rtn,
    save_compressed_tensors,
)
from tests.kernels.conftest import DEVICE, tiny_llama


def relative_mse(y: torch.Tensor, ref: torch.Tensor) -> float:
    return (((y - ref) ** 2).mean() / (ref**2).mean()).item()


@pytest.fixture(scope="module")
def batches():
    gen = torch.Generator().manual_seed(7)
    calibration = [torch.randint(0, 256, (4, 32), generator=gen) for _ in range(4)]
    held_out = torch.randint(0, 256, (4, 32), generator=gen)
    return calibration, held_out


def make_quant_linear(name: str, n: int, k: int, bias: bool, gen) -> tuple[QuantLinear, nn.Linear]:
    linear = nn.Linear(k, n, bias=bias)
    with torch.no_grad():
        linear.weight.copy_(torch.randn(n, k, generator=gen))
        if bias:
            linear.bias.copy_(torch.randn(n, generator=gen))
    scheme = QuantScheme.from_name(name)
    return QuantLinear.from_quantized(quantize_rtn(linear.weight, scheme), scheme, linear.bias), linear


@pytest.mark.parametrize("name", ["int4-g32-asym", "int4-g128", "int8"])
def test_quant_linear_is_shaped_like_nn_linear(name, seeded):
    ql, linear = make_quant_linear(name, 40, 256, True, seeded)
    assert (ql.in_features, ql.out_features) == (256, 40)
    x = torch.randn(2, 3, 256, generator=seeded)
    y = ql(x)
    assert y.shape == (2, 3, 40)
    expected = torch.nn.functional.linear(x, ql.quantized_weight().dequantize(), ql.bias)
    torch.testing.assert_close(y, expected)
    # close to the float layer it replaces (quantization error only)
    assert relative_mse(y, linear(x).detach()) < (0.02 if name.startswith("int4") else 1e-4)
    with pytest.raises(ShapeError, match="expects 256"):
        ql(torch.randn(3, 128))


@pytest.mark.parametrize("name", ["int4-g32", "int4-g64-asym", "int8"])
def test_triton_backend_matches_torch_backend(name, seeded):
    ql, _ = make_quant_linear(name, 48, 128, True, seeded)
    ql = ql.to(DEVICE)
    x = torch.randn(3, 5, 128, generator=seeded).to(DEVICE)
    ql.backend = "torch"
    expected = ql(x)
    ql.backend = "triton"  # Triton kernel (interpreted on CPU), M = 15 -> skinny dot path
    torch.testing.assert_close(ql(x), expected, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(ql(x[:1, :1]), expected[:1, :1], atol=1e-4, rtol=1e-4)  # M = 1: GEMV


def test_caches_follow_the_buffers(seeded):
    ql, _ = make_quant_linear("int4-g32", 16, 64, False, seeded)
    x = torch.randn(4, 64, generator=seeded)
    y0 = ql(x)
    assert ql._dequant_cache is not None
    with torch.no_grad():
        ql.weight_scale.mul_(2)  # in-place edit: the cached dequantized weight must be dropped
    torch.testing.assert_close(ql(x), 2 * y0)
    kw0 = ql.kernel_weight()
    assert ql.kernel_weight() is kw0  # repacked once per buffer state
    torch.testing.assert_close(ql(x), 2 * y0)  # the torch path now reads the repacked buffers
    with torch.no_grad():
        ql.kernel_scale.mul_(0.5)
    assert ql.kernel_weight() is not kw0
    torch.testing.assert_close(ql(x), y0)
    ql.cache_dequantized = False
    ql._dequant_cache = None
    ql(x)
    assert ql._dequant_cache is None
    ql.to(torch.float16)  # moving/casting drops every cache and keeps the integers
    assert ql._kernel_cache is None and ql.kernel_qweight.dtype == torch.int32
    ql.restore_checkpoint_format()
    assert ql.weight_packed.dtype == torch.int32 and ql.weight_scale.dtype == torch.float16


def _tensor_bytes(module) -> dict[str, int]:
    return {name: t.numel() * t.element_size() for name, t in [*module.named_buffers(), *module.named_parameters()]}


@pytest.mark.parametrize("name", ["int4-g32", "int4-g64-asym", "int8"])
def test_repacking_frees_the_checkpoint_copy(name, seeded):
    # issue 17: the module holds the weights once, in the kernels' layout, after the first
    # Triton call; state_dict() still gives the compressed-tensors tensors, bit for bit
    ql, _ = make_quant_linear(name, 48, 256, True, seeded)
    ql = ql.to(DEVICE)
    before = {k: v.clone() for k, v in ql.state_dict().items()}
    packed_bytes = sum(v for k, v in _tensor_bytes(ql).items() if k != "bias" and k != "weight_shape")
    x = torch.randn(2, 256, generator=seeded).to(DEVICE)
    ql.backend = "torch"
    expected = ql(x)
    ql.cache_dequantized = False
    ql.backend = "triton"
    torch.testing.assert_close(ql(x), expected, atol=1e-4, rtol=1e-4)
    held = _tensor_bytes(ql)
    assert not {"weight_packed", "weight_scale", "weight_zero_point"} & set(held), held
    assert {"kernel_qweight", "kernel_scale"} <= set(held)
    weight_bytes = sum(v for k, v in held.items() if k.startswith("kernel_"))
    # once, not twice (the kernel layout keeps zero points as floats beside the scales)
    assert weight_bytes < 1.5 * packed_bytes
    after = ql.state_dict()
    assert list(after) == list(before)
    for key in before:
        assert after[key].dtype == before[key].dtype and torch.equal(after[key].cpu(), before[key].cpu()), key
    ql.backend = "torch"  # the plain-torch path and a reload still work from the repacked form
    torch.testing.assert_close(ql(x), expected, atol=1e-5, rtol=1e-5)
    fresh, _ = make_quant_linear(name, 48, 256, True, torch.Generator().manual_seed(99))
    fresh = fresh.to(DEVICE)
    fresh.kernel_weight()  # repacked with other weights, then loaded over
    fresh.load_state_dict(before)
    assert "weight_packed" in dict(fresh.named_buffers())
    torch.testing.assert_close(fresh(x), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", ["int4-g32", "int4-g64-asym", "int8"])
def test_quantized_tiny_llama_stays_close_and_gptq_helps(name, batches):
    calibration, held_out = batches
    full = tiny_llama()
    with torch.no_grad():
        ref = full(held_out).logits
    errors = {}
    for method in ("rtn", "gptq"):
        model = quantize_model(copy.deepcopy(full), QuantScheme.from_name(name, method=method), calibration)
        quantized = [n for n, m in model.named_modules() if isinstance(m, QuantLinear)]
        assert len(quantized) == 14  # 7 linears x 2 layers; lm_head and embeddings stay float
        assert isinstance(model.lm_head, nn.Linear) and isinstance(model.model.embed_tokens, nn.Embedding)
        with torch.no_grad():
            errors[method] = relative_mse(model(held_out).logits, ref)
    assert errors["rtn"] < (0.03 if name.startswith("int4") else 1e-4)
    assert errors["gptq"] < errors["rtn"]


def test_quantize_model_accepts_names_and_rejects_bad_requests(batches):
    calibration, _ = batches
    model = quantize_model(tiny_llama(), "int8")
    assert model.model.layers[0].mlp.down_proj.scheme.name == "int8"
    with pytest.raises(SchemeError, match="calibration"):
        quantize_model(tiny_llama(), QuantScheme.from_name("int4-g32", method="gptq"))
    with pytest.raises(SchemeError, match="matches no linear"):
        quantize_model(tiny_llama(), QuantScheme.from_name("int8", targets=("re:nothing",)))
    with pytest.raises(ShapeError, match="not divisible by group_size"):
        quantize_model(tiny_llama(intermediate_size=96), "int4-g64")
    with pytest.raises(SchemeError, match="tied"):
        quantize_model(tiny_llama(tie_word_embeddings=True), QuantScheme.from_name("int8", ignore=()))
    with pytest.raises(ShapeError, match="token ids"):
        quantize_model(tiny_llama(), QuantScheme.from_name("int8", method="gptq"), [torch.randn(2, 8)])


def test_lm_head_can_be_quantized_with_gptq(batches):
    calibration, held_out = batches
    model = quantize_model(tiny_llama(), QuantScheme.from_name("int8", method="gptq", ignore=()), calibration)
    assert isinstance(model.lm_head, QuantLinear)
    assert torch.isfinite(model(held_out).logits).all()


@pytest.mark.parametrize("name", ["int4-g32-asym", "int4-g64", "int8"])
def test_export_and_load_round_trip(name, batches, tmp_path):
    _, held_out = batches
    model = quantize_model(tiny_llama(), name)
    with torch.no_grad():
        expected = model(held_out).logits
    export = save_compressed_tensors(model, tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["quantization_config"] == export.quantization_config
    assert "model.layers.0.self_attn.q_proj.weight_packed" in export.state_dict
    assert "model.layers.0.self_attn.q_proj.weight" not in export.state_dict
    assert ("model.layers.0.self_attn.q_proj.weight_zero_point" in export.state_dict) == name.endswith("asym")

    from safetensors.torch import load_file

    tensors = load_file(tmp_path / "model.safetensors")
    skeleton = tiny_llama(seed=99)  # different float weights: everything must come from the file
    rebuilt = load_quantized_model(skeleton, tensors, config, expected_digest=export.digest)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(held_out).logits, expected, atol=0, rtol=0)
    # the same bytes again when saved twice (deterministic files)
    again = save_compressed_tensors(rebuilt, tmp_path / "again")
    assert again.digest == export.digest
    assert (tmp_path / "again" / "model.safetensors").read_bytes() == (tmp_path / "model.safetensors").read_bytes()


def test_load_rejects_corrupted_or_mismatched_tensors():
    model = quantize_model(tiny_llama(), "int4-g32-asym")
    export = export_compressed_tensors(model)
    key = "model.layers.1.mlp.up_proj.weight_packed"
    corrupted = dict(export.state_dict)
    corrupted[key] = corrupted[key].clone()
    corrupted[key][3, 1] ^= 0x10  # one flipped bit
    with pytest.raises(DigestMismatchError, match="expected sha256 " + export.digest):
        load_quantized_model(tiny_llama(), corrupted, export.quantization_config, export.digest)

    missing = {k: v for k, v in export.state_dict.items() if k != key}
    with pytest.raises(ShapeError, match="no model.layers.1.mlp.up_proj.weight_packed"):
        load_quantized_model(tiny_llama(), missing, export.quantization_config)
    extra = dict(export.state_dict, **{"model.layers.0.mlp.up_proj.weight": torch.zeros(128, 64)})
    with pytest.raises(ShapeError, match="unexpected"):
        load_quantized_model(tiny_llama(), extra, export.quantization_config)
    no_norm = {k: v for k, v in export.state_dict.items() if k != "model.norm.weight"}
    with pytest.raises(ShapeError, match="missing"):
        load_quantized_model(tiny_llama(), no_norm, export.quantization_config)
    bad_shape = dict(export.state_dict)
    bad_shape["model.layers.0.mlp.down_proj.weight_scale"] = torch.ones(64, 3)
    with pytest.raises(ShapeError):
        load_quantized_model(tiny_llama(), bad_shape, export.quantization_config)
    with torch.device("meta"):
        meta_skeleton = tiny_llama()
    with pytest.raises(DeviceError, match="meta device"):
        load_quantized_model(meta_skeleton, export.state_dict, export.quantization_config)
    w4a8 = copy.deepcopy(export.quantization_config)
    w4a8["config_groups"]["group_0"]["input_activations"] = {"num_bits": 8, "type": "int"}
    with pytest.raises(SchemeError, match="activation quantization"):
        load_quantized_model(tiny_llama(), export.state_dict, w4a8)
