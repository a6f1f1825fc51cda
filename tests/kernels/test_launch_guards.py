"""The launcher's guards (issue 17, part 1): which config CUDA-graph capture gets, int64 offsets,
per-channel zero points, and the explicit FP-fusion choice.

The config order is tested through `choose_config` (the decision, with a fake tuner) because
capture itself needs a GPU (see test_gpu_kernels.py for the real capture); the int64 and zero
point paths run the kernels under the interpreter against the fp32 reference.
"""

from __future__ import annotations

import dataclasses
import math
import warnings

import pytest
import torch

from kernels import quant_matmul as qm
from kernels.autotune_cache import TuningCache
from kernels.layouts import repack_for_kernel
from kernels.packing import QuantizedWeight
from kernels.quant_matmul import MatmulConfig, quant_matmul, quant_matmul_reference
from tests.kernels.conftest import DEVICE
from tests.kernels.test_quant_matmul import make_weight, run_and_check

SHAPE = dict(m=1, n=4096, k=4096, bits=4, sms=132)
TUNED = MatmulConfig("gemv", block_n=64, tiles=1, split_k=4, num_warps=8)  # differs from the heuristic


@pytest.fixture
def fresh_state(monkeypatch):
    """No configs launched and zeroed counters, whatever other tests did in this process."""
    monkeypatch.setattr(qm, "_launched", {})
    qm.reset_capture_stats()
    yield
    qm.reset_capture_stats()


def no_tuning(candidates):
    raise AssertionError("must not time candidates here")


def choose(cache, *, capturing, tune=no_tuning):
    return qm.choose_config("KEY", **SHAPE, cache=cache, capturing=capturing, tune=tune)


def test_capture_uses_the_tuned_config_from_the_cache(tmp_path, fresh_state):
    assert TUNED != qm.heuristic_config(**SHAPE)
    cache = TuningCache(tmp_path / "tune.json")
    cache.put("KEY", dataclasses.asdict(TUNED), 0.01)
    fresh = TuningCache(tmp_path / "tune.json")  # a new process with a warm cache on disk
    with pytest.warns(RuntimeWarning, match="never launched in this process"):
        assert choose(fresh, capturing=True) == TUNED
    assert qm.capture_stats() == {"untuned_in_capture": 0, "unloaded_in_capture": 1}
    # after a warm-up launch the capture gets the same config, silently
    qm.mark_launched("KEY", TUNED)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert choose(fresh, capturing=True) == TUNED
    assert qm.capture_stats()["unloaded_in_capture"] == 1


def test_capture_on_a_cache_miss_warns_with_the_shape_and_counts(tmp_path, fresh_state):
    cache = TuningCache(tmp_path / "tune.json")
    with pytest.warns(RuntimeWarning, match=r"M=1, N=4096, K=4096 \(4-bit\)"):
        assert choose(cache, capturing=True) == qm.heuristic_config(**SHAPE)
    assert qm.capture_stats() == {"untuned_in_capture": 1, "unloaded_in_capture": 0}
    assert cache.get("KEY") is None  # nothing was tuned or stored during capture


def test_eager_miss_tunes_once_then_reads_the_cache(tmp_path, fresh_state):
    cache = TuningCache(tmp_path / "tune.json")
    seen = []

    def tune(candidates):
        seen.append(candidates)
        return TUNED, 0.01

    assert choose(cache, capturing=False, tune=tune) == TUNED
    assert len(seen) == 1 and TUNED in seen[0]
    assert choose(TuningCache(tmp_path / "tune.json"), capturing=False) == TUNED
    assert qm.capture_stats() == {"untuned_in_capture": 0, "unloaded_in_capture": 0}


def test_stale_cache_entry_is_retuned(tmp_path, fresh_state):
    cache = TuningCache(tmp_path / "tune.json")
    cache.put("KEY", {"kernel": "gemv", "block_n": 48}, 0.01)  # invalid today (not a power of two)
    assert choose(cache, capturing=False, tune=lambda c: (TUNED, 0.02)) == TUNED


def test_int64_offsets_decision_at_the_limit():
    words, groups = 16384 * 512, 32
    # split-K partials S*M*N: 8 * 16384 * 16384 = 2^31 needs int64, 7 * ... does not
    assert qm.needs_int64_offsets(16384, 16384, 4096, 8, words, groups)
    assert not qm.needs_int64_offsets(16384, 16384, 4096, 7, words, groups)
    # the output alone (S = 1), the activations M*K, the weight words, the scales
    assert qm.needs_int64_offsets(2**16, 2**15, 4096, 1, words, groups)
    assert qm.needs_int64_offsets(2**16, 128, 2**15, 1, words, groups)
    assert qm.needs_int64_offsets(1, 128, 128, 1, 2**31, groups)
    assert qm.needs_int64_offsets(1, 2**24, 128, 1, words, 2**7)
    assert not qm.needs_int64_offsets(1, 4096, 4096, 16, 4096 * 512, 32)
    assert qm.effective_split(4096, 16) == (16, 2) and qm.effective_split(300, 8) == (3, 1)


class _Recorder:
    """Stands in for a Triton kernel: records the launch keywords, then launches the real one."""

    def __init__(self, kernel, calls):
        self.kernel, self.calls = kernel, calls

    def __getitem__(self, grid):
        def launch(*args, **kwargs):
            self.calls.append(kwargs)
            return self.kernel[grid](*args, **kwargs)

        return launch


@pytest.fixture
def launches(monkeypatch):
    calls = []
    for name in ("_quant_gemv_kernel", "_quant_dot_kernel", "_splitk_reduce_kernel"):
        monkeypatch.setattr(qm, name, _Recorder(getattr(qm, name), calls))
    return calls


@pytest.mark.parametrize("config", [MatmulConfig("gemv", block_n=32, split_k=2),
                                    MatmulConfig("dot", block_m=16, block_n=32, split_k=2)], ids=["gemv", "dot"])
def test_int64_path_matches_the_reference(config, seeded, monkeypatch, launches):
    monkeypatch.setattr(qm, "needs_int64_offsets", lambda *args: True)
    kw, n, k = make_weight("int4-g32-asym", seeded)
    x = torch.randn(3, k, generator=seeded).to(DEVICE)
    run_and_check(x, kw, torch.randn(n, generator=seeded).to(DEVICE), config)
    assert len(launches) == 2 and all(call["INT64"] for call in launches)


def test_every_launch_sets_fp_fusion_explicitly(seeded, launches):
    kw, n, k = make_weight("int4-g128", seeded)
    for m, config in ((1, MatmulConfig("gemv", block_n=32, split_k=2)), (5, MatmulConfig("dot", block_m=16, block_n=32))):
        quant_matmul(torch.randn(m, k, generator=seeded).to(DEVICE), kw, config=config)
    assert len(launches) == 3  # gemv + reduce, dot
    assert qm.FP_FUSION is True and all(call["enable_fp_fusion"] is qm.FP_FUSION for call in launches)


@pytest.mark.parametrize("bits", [8, 4])
@pytest.mark.parametrize("config", [MatmulConfig("gemv", block_n=32, tiles=2), MatmulConfig("gemv", block_n=16, split_k=2),
                                    MatmulConfig("dot", block_m=16, block_n=32)], ids=["gemv", "gemv-splitk", "dot"])
def test_per_channel_zero_point_is_applied(bits, config, seeded):
    # group size None with a zero point: KernelWeight.validate accepts it, so the kernels honour it
    n, k = 40, 256
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    q = torch.randint(lo, hi + 1, (n, k), generator=seeded, dtype=torch.int8)
    zero = torch.randint(lo, hi + 1, (n, 1), generator=seeded, dtype=torch.int8)
    scale = torch.rand(n, 1, generator=seeded) * 0.1 + 0.01
    kw = repack_for_kernel(QuantizedWeight(q, scale, zero, bits, None), DEVICE)
    assert kw.zero is not None and kw.group_size is None
    kw.validate()
    m = 1 if config.kernel == "gemv" else 4
    x = torch.randn(m, k, generator=seeded).to(DEVICE)
    run_and_check(x, kw, None, config)
    # the zero point matters: dropping it changes the result far beyond the tolerance
    no_zero = quant_matmul_reference(x, dataclasses.replace(kw, zero=None))
    assert (no_zero - quant_matmul_reference(x, kw)).abs().max() > 1.0


def test_heuristic_is_one_launch_at_decode_for_wide_layers():
    for n in (2048, 4096, 14336):
        for bits in (4, 8):
            cfg = qm.heuristic_config(1, n, 4096, bits, sms=132)
            assert cfg.kernel == "gemv" and cfg.split_k == 1 and math.ceil(n / cfg.block_n) >= 128
    assert qm.heuristic_config(1, 1024, 4096, 4, sms=132).split_k > 1  # narrow layers still split K
    cands = qm.candidate_configs(1, 4096, 4096, 4, sms=132)
    assert {c.block_n for c in cands} >= {8, 16, 32, 64} and any(c.num_warps == 8 for c in cands)
    assert qm.heuristic_config(1, 4096, 4096, 4, sms=132) in cands
