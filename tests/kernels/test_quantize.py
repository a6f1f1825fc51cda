"""Schemes, RTN and GPTQ: integers compatible with compressed-tensors, GPTQ better than RTN."""

from __future__ import annotations

import pytest
import torch
from compressed_tensors.quantization import QuantizationArgs
from compressed_tensors.quantization.lifecycle.forward import quantize as ct_quantize
from torch import nn

from kernels.errors import SchemeError, ShapeError
from kernels.quantize import HessianAccumulator, quantize_gptq, quantize_rtn
from kernels.scheme import QuantScheme

SCHEMES = ["int4-g32", "int4-g32-asym", "int4-g64", "int4-g128-asym", "int8"]


def test_scheme_names_parse_and_validate():
    s = QuantScheme.from_name("int4-g128")
    assert (s.bits, s.group_size, s.symmetric, s.method) == (4, 128, True, "rtn")
    assert not QuantScheme.from_name("int4-g32-asym").symmetric
    assert QuantScheme.from_name("int8").group_size is None
    assert QuantScheme.from_name("int4-g64", method="gptq", act_order=True).act_order
    for bad in ("int4-g16", "int3", "int4-g128-foo", "fp8"):
        with pytest.raises(SchemeError):
            QuantScheme.from_name(bad)
    with pytest.raises(SchemeError, match="per-output-channel and symmetric"):
        QuantScheme(name="x", bits=8, group_size=None, symmetric=False)
    with pytest.raises(SchemeError, match="method"):
        QuantScheme.from_name("int8", method="awq")
    with pytest.raises(SchemeError, match="embeddings"):
        QuantScheme.from_name("int8", targets=("Linear", "Embedding"))
    with pytest.raises(SchemeError, match="block_size"):
        QuantScheme.from_name("int4-g128", block_size=96)


def test_scheme_matches_like_compressed_tensors():
    s = QuantScheme.from_name("int4-g32", targets=("Linear",), ignore=("lm_head", "re:.*\\.mlp\\.down_proj$"))
    lin = nn.Linear(4, 4)
    assert s.matches("model.layers.0.self_attn.q_proj", lin)
    assert not s.matches("lm_head", lin)
    assert not s.matches("model.layers.3.mlp.down_proj", lin)
    assert not s.matches("model.norm", nn.LayerNorm(4))
    only_attn = QuantScheme.from_name("int8", targets=("re:.*self_attn.*",), ignore=())
    assert only_attn.matches("model.layers.0.self_attn.o_proj", lin)
    assert not only_attn.matches("model.layers.0.mlp.up_proj", lin)


@pytest.mark.parametrize("name", SCHEMES)
def test_rtn_error_is_bounded_by_the_scale(name, seeded):
    scheme = QuantScheme.from_name(name)
    w = torch.randn(24, 256, generator=seeded)
    qw = quantize_rtn(w, scheme)
    assert qw.qweight.min() >= scheme.qmin and qw.qweight.max() <= scheme.qmax
    g = scheme.group_size or 256
    err = (w - qw.dequantize()).abs().view(24, -1, g)
    step = qw.scale.float().unsqueeze(-1)
    # symmetric: round to nearest within range (half a step); asymmetric: the rounded zero point
    # shifts the grid by up to half a step, so an end of the range may clip by another half
    bound = 0.5 if scheme.symmetric else 1.0
    assert (err <= bound * step + 1e-6).all()
    assert err.mean() < 0.3 * step.mean()  # and it really rounds (not a vacuous bound)


@pytest.mark.parametrize("name", SCHEMES)
def test_rtn_integers_equal_compressed_tensors_quantize(name, seeded):
    scheme = QuantScheme.from_name(name)
    w = torch.randn(16, 128, generator=seeded)
    qw = quantize_rtn(w, scheme)
    args = QuantizationArgs(
        num_bits=scheme.bits, type="int", symmetric=scheme.symmetric,
        strategy="group" if scheme.group_size else "channel", group_size=scheme.group_size,
    )
    zero = None if qw.zero_point is None else qw.zero_point.float()
    theirs = ct_quantize(w, qw.scale, zero, args, dtype=torch.int8)
    assert torch.equal(theirs, qw.qweight)


def test_hessian_accumulator_is_the_mean_outer_product(seeded):
    xs = [torch.randn(5, 7, 16, generator=seeded), torch.randn(3, 16, generator=seeded)]
    acc = HessianAccumulator(16)
    for x in xs:
        acc.add_batch(x)
    flat = torch.cat([x.reshape(-1, 16) for x in xs])
    assert acc.count == 38
    torch.testing.assert_close(acc.hessian, 2 * flat.t() @ flat / 38, rtol=1e-5, atol=1e-5)


def correlated_sampler(k: int, gen: torch.Generator):
    """Sampler of activations whose features are strongly correlated (a fixed low-rank mix plus
    noise) with a few high-variance channels, like real transformer activations."""
    mix = torch.randn(k // 2, k, generator=gen)

    def sample(n_tokens: int) -> torch.Tensor:
        x = torch.randn(n_tokens, k // 2, generator=gen) @ mix + 0.3 * torch.randn(n_tokens, k, generator=gen)
        x[:, :4] *= 6.0
        return x

    return sample


def output_error(x: torch.Tensor, w: torch.Tensor, w_hat: torch.Tensor) -> float:
    return ((x @ w.t() - x @ w_hat.t()) ** 2).sum().item()


@pytest.mark.parametrize(
    "name,act_order",
    [("int4-g32", False), ("int4-g32-asym", False), ("int4-g128", False), ("int4-g64-asym", True), ("int8", False)],
)
def test_gptq_beats_rtn_on_layer_output_error(name, act_order, seeded):
    k, n = 256, 48
    sample = correlated_sampler(k, seeded)
    x_cal = sample(1024)
    x_test = sample(512)  # held-out tokens from the same distribution
    w = torch.randn(n, k, generator=seeded) * 0.05
    scheme = QuantScheme.from_name(name, method="gptq", act_order=act_order)
    acc = HessianAccumulator(k)
    acc.add_batch(x_cal)
    gptq = quantize_gptq(w, acc.hessian, scheme).dequantize()
    rtn = quantize_rtn(w, scheme).dequantize()
    e_gptq, e_rtn = output_error(x_test, w, gptq), output_error(x_test, w, rtn)
    assert e_gptq < 0.7 * e_rtn, f"GPTQ error {e_gptq:.4g} not clearly below RTN {e_rtn:.4g}"
    # its integers are valid for the scheme (same storage format as RTN)
    q = quantize_gptq(w, acc.hessian, scheme).qweight.int()
    assert scheme.qmin <= q.min() and q.max() <= scheme.qmax


def test_gptq_handles_dead_inputs_and_checks_shapes(seeded):
    k = 128
    x = correlated_sampler(k, seeded)(256)
    x[:, 7] = 0.0  # an input feature never active in calibration
    acc = HessianAccumulator(k)
    acc.add_batch(x)
    w = torch.randn(16, k, generator=seeded)
    qw = quantize_gptq(w, acc.hessian, QuantScheme.from_name("int4-g32", method="gptq"))
    assert torch.isfinite(qw.dequantize()).all()
    assert (qw.dequantize()[:, 7] == 0).all()
    with pytest.raises(ShapeError, match="Hessian must be"):
        quantize_gptq(w, torch.eye(k + 1), QuantScheme.from_name("int4-g32", method="gptq"))
    with pytest.raises(ShapeError, match="not divisible by group_size"):
        quantize_rtn(torch.randn(4, 96), QuantScheme.from_name("int4-g64"))
