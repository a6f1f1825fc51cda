"""GPU-only checks of issue 17, part 3 (skipped without CUDA; run them on a lent GPU):

- every tuning candidate, not only the defaults, against the reference on real layer shapes,
  fp16 and bf16, with NaN-poisoned outputs and split-K partials;
- CUDA-graph capture in a fresh process with a warm tuning cache: it succeeds, captures the tuned
  config (no fallback counted) and replays bit for bit what eager computes;
- split-K results bit-identical across runs;
- no register spills and 128-bit weight loads in the compiled kernels of the chosen configs;
- the Triton path against the plain-torch path on a whole model: logits and perplexity;
- which attention backend the serving runner's decode step gets (the math fallback is slow).

Runtime on an H100: a few minutes, most of it compiling every candidate once.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from tests.kernels.conftest import ON_GPU

pytestmark = pytest.mark.skipif(not ON_GPU, reason="needs a CUDA GPU (issue 17, part 3: run on a lent GPU)")

REPO = Path(__file__).resolve().parents[2]
LAYERS = [(4096, 4096), (14336, 4096), (4096, 14336)]  # Llama-3-8B q/o, gate/up, down (N, K)
# max |error| / max |reference|: fp16 output rounding (2^-11) plus fp16 weight slices; bf16 has 2^-8
REL_TOL = {torch.float16: 1e-2, torch.bfloat16: 3e-2}


def layer_weight(name: str, n: int, k: int, seed: int = 0):
    from kernels.layouts import repack_for_kernel
    from kernels.quantize import quantize_rtn
    from kernels.scheme import QuantScheme

    gen = torch.Generator(device="cuda").manual_seed(seed)
    w = torch.randn(n, k, device="cuda", generator=gen) * 0.02
    return repack_for_kernel(quantize_rtn(w, QuantScheme.from_name(name), torch.float16), "cuda")


def _poisoned(monkeypatch):
    from kernels import quant_matmul as qm

    monkeypatch.setattr(qm, "_alloc_partials", lambda s, m, n, device: torch.full(
        (s, m, n), math.nan, dtype=torch.float32, device=device))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
@pytest.mark.parametrize("m", [1, 16, 64, 2048])
@pytest.mark.parametrize("name", ["int4-g128", "int8"])
def test_every_tuning_candidate_matches_the_reference(name, m, dtype, monkeypatch):
    from kernels import quant_matmul as qm

    _poisoned(monkeypatch)
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    for n, k in LAYERS if m <= 64 else LAYERS[:1]:
        kw = layer_weight(name, n, k)
        x = torch.randn(m, k, device="cuda", dtype=dtype)
        ref = qm.quant_matmul_reference(x, kw)
        bound = REL_TOL[dtype] * ref.abs().max().item()
        for config in qm.candidate_configs(m, n, k, kw.bits, sms):
            out = torch.full((m, n), math.nan, dtype=dtype, device="cuda")
            try:
                qm.quant_matmul(x, kw, out=out, config=config)
            except Exception as exc:  # out of shared memory on this card: the tuner skips it too
                if "resource" in str(exc):
                    continue
                raise
            assert not torch.isnan(out).any(), f"{config}: outputs never written"
            err = (out.float() - ref).abs().max().item()
            assert err <= bound, f"{config}: max error {err:.3g} > {bound:.3g}"


CAPTURE_SCRIPT = textwrap.dedent("""
    import dataclasses, json, sys, warnings
    import torch
    from kernels import quant_matmul as qm
    from kernels.autotune_cache import TuningCache
    from tests.kernels.test_gpu_kernels import layer_weight

    cache = TuningCache(sys.argv[1])
    kw = layer_weight("int4-g128", 4096, 4096)
    x = torch.randn(int(sys.argv[2]), 4096, device="cuda", dtype=torch.float16)
    if sys.argv[3] == "tune":
        qm.quant_matmul(x, kw, cache=cache)
        print(json.dumps({"tuned": True}))
        sys.exit(0)
    out = torch.empty(x.shape[0], 4096, device="cuda", dtype=torch.float16)
    stream = torch.cuda.Stream()  # the serving runner's order: eager warm-up, then capture
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        qm.quant_matmul(x, kw, out=out, cache=cache)
    torch.cuda.current_stream().wait_stream(stream)
    eager = out.clone()
    graph = torch.cuda.CUDAGraph()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a capture fallback warning fails the run
        with torch.cuda.graph(graph):
            qm.quant_matmul(x, kw, out=out, cache=cache)
    out.fill_(float("nan"))
    graph.replay()
    torch.cuda.synchronize()
    key = qm.config_key(torch.cuda.get_device_name(), kw, x.dtype, x.shape[0])
    print(json.dumps({"equal": bool(torch.equal(out, eager)), "stats": qm.capture_stats(),
                      "captured": dataclasses.asdict(qm.select_config(x, kw, cache=cache)),
                      "cached": cache.get(key)}))
""")


@pytest.mark.parametrize("m", [1, 16])
def test_capture_in_a_fresh_process_with_a_warm_cache(tmp_path, m):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    cache = str(tmp_path / "tune.json")

    def run(mode):
        proc = subprocess.run([sys.executable, "-c", CAPTURE_SCRIPT, cache, str(m), mode], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return json.loads(proc.stdout.strip().splitlines()[-1])

    run("tune")  # process 1 tunes and writes the cache
    result = run("capture")  # process 2 starts with the warm cache on disk
    assert result["equal"], "graph replay differs from eager"
    assert result["stats"] == {"untuned_in_capture": 0, "unloaded_in_capture": 0}
    assert result["captured"] == result["cached"], "the graph did not capture the tuned config"


def test_split_k_is_bit_identical_across_runs(monkeypatch):
    from kernels.quant_matmul import MatmulConfig, quant_matmul

    kw = layer_weight("int4-g128", 4096, 14336)
    for m, config in ((1, MatmulConfig("gemv", block_n=32, tiles=2, split_k=8)),
                      (16, MatmulConfig("dot", block_m=16, block_n=64, split_k=4, num_stages=3))):
        x = torch.randn(m, 14336, device="cuda", dtype=torch.float16)
        first = quant_matmul(x, kw, config=config)
        for _ in range(5):
            assert torch.equal(quant_matmul(x, kw, config=config), first)


def test_the_128_bit_load_check_reads_ptx():
    assert has_128bit_loads("ld.global.L1::evict_first.v4.b32 { %r1, %r2, %r3, %r4 }, [ %rd1 + 0 ];")
    assert has_128bit_loads("cp.async.cg.shared.global [ %r5 + 0 ], [ %rd2 + 0 ], 0x10, %r6;")
    assert not has_128bit_loads("ld.global.b32 { %r1 }, [ %rd1 + 0 ];\nst.global.v4.b32 [ %rd3 ], { %r1, %r2, %r3, %r4 };")


@pytest.mark.parametrize("name", ["int4-g128", "int8"])
@pytest.mark.parametrize("m", [1, 16, 2048])
def test_chosen_configs_do_not_spill_and_load_128_bits(name, m, monkeypatch, tmp_path):
    from kernels import quant_matmul as qm
    from kernels.autotune_cache import TuningCache

    compiled = []
    for attr in ("_quant_gemv_kernel", "_quant_dot_kernel"):
        kernel = getattr(qm, attr)

        class Recorder:
            def __init__(self, kernel):
                self.kernel = kernel

            def __getitem__(self, grid):
                return lambda *a, **kw: compiled.append(self.kernel[grid](*a, **kw))

        monkeypatch.setattr(qm, attr, Recorder(kernel))
    kw = layer_weight(name, 4096, 4096)
    x = torch.randn(m, 4096, device="cuda", dtype=torch.float16)
    cache = TuningCache(tmp_path / "tune.json")
    config = qm.select_config(x, kw, cache=cache)
    compiled.clear()
    qm.quant_matmul(x, kw, config=config)
    torch.cuda.synchronize()
    assert compiled, "no kernel launched"
    for k in compiled:
        assert k.n_spills == 0, f"{config}: {k.n_spills} register spills ({k.n_regs} registers)"
        assert has_128bit_loads(k.asm["ptx"]), f"{config}: no 128-bit global loads"


def has_128bit_loads(ptx: str) -> bool:
    """A vector load of 4 x 32 bits (any cache hint), or a 16-byte asynchronous copy to shared
    memory (how pipelined loads feeding tensor-core dots are compiled)."""
    return bool(re.search(r"ld\.global(\.[\w:]+)*\.v4\.(b32|u32|f32)", ptx)
                or re.search(r"cp\.async\.c[ag]\.shared\.global[^;]*,\s*(16|0x10)\s*[,;]", ptx))


def _small_llama(seed=0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(hidden_size=1024, intermediate_size=2816, num_hidden_layers=4, num_attention_heads=16,
                      num_key_value_heads=4, vocab_size=8192, max_position_embeddings=512, tie_word_embeddings=False)
    return LlamaForCausalLM(cfg).eval()


def _real_model():
    """A local Llama-shaped checkpoint named by COMMONFORGE_GPU_TEST_MODEL (the GPU machine has no
    network), else a seeded random one of a real layer width (the kernel check still holds)."""
    path = os.environ.get("COMMONFORGE_GPU_TEST_MODEL")
    if path:
        from transformers import AutoModelForCausalLM

        return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval(), path
    return _small_llama(), "random llama (hidden 1024, 4 layers)"


@pytest.mark.parametrize("scheme", ["int4-g128", "int8"])
def test_triton_path_matches_torch_path_on_a_model(scheme):
    import copy

    from kernels import QuantLinear, quantize_model

    model, label = _real_model()
    quantized = quantize_model(copy.deepcopy(model), scheme).to("cuda", torch.float16)
    ids = torch.randint(3, model.config.vocab_size, (2, 128), generator=torch.Generator().manual_seed(0)).cuda()
    results = {}
    for backend in ("torch", "triton"):
        for module in quantized.modules():
            if isinstance(module, QuantLinear):
                module.backend = backend
        with torch.no_grad():
            logits = quantized(ids).logits.float()
        nll = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1))
        results[backend] = (logits, nll.exp().item())
    (lt, pt), (lx, px) = results["torch"], results["triton"]
    assert (lx - lt).abs().max().item() < 5e-2 * lt.abs().max().item(), label
    assert abs(px - pt) / pt < 5e-3, f"{label}: perplexity torch {pt:.3f} vs triton {px:.3f}"


@pytest.mark.xfail(reason="issue 17 §2.5: decode attention with a mask and GQA may fall back to the math "
                   "backend; this records which backend it gets", strict=False)
def test_decode_attention_avoids_the_math_backend():
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from serving.runner import SlotRunner

    model = _small_llama().to("cuda", torch.float16)
    runner = SlotRunner(model, slots=4, max_len=256, cuda_graphs=False)
    for slot in range(2):
        runner.prefill(slot, list(range(3, 40 + slot)))
    with sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.CUDNN_ATTENTION]):
        logits = runner.decode([5, 6], [37, 38])  # raises "No available kernel" if only math fits
    assert torch.isfinite(logits).all()
