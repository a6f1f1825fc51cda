"""Shared setup for the kernels tests.

Without a GPU the Triton kernels run under the interpreter on CPU tensors; TRITON_INTERPRET must
be set before triton is imported (`triton.jit` decides at decoration time), so it is set here,
at the top of the conftest, before any test module imports `kernels.quant_matmul`. With a GPU the
same tests run the compiled kernels on CUDA tensors (COMMONFORGE_TEST_INTERPRET=1 forces the
interpreter anyway).
"""

from __future__ import annotations

import os

import torch

ON_GPU = torch.cuda.is_available() and os.environ.get("COMMONFORGE_TEST_INTERPRET") != "1"
if not ON_GPU:
    os.environ["TRITON_INTERPRET"] = "1"
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest  # noqa: E402

DEVICE = torch.device("cuda" if ON_GPU else "cpu")


@pytest.fixture(autouse=True)
def _isolated_tuning_cache(tmp_path, monkeypatch):
    """Tuned configs (GPU runs only) go to a per-test file, never to ~/.cache."""
    from kernels import autotune_cache

    monkeypatch.setenv(autotune_cache.CACHE_ENV, str(tmp_path / "kernel_tuning.json"))
    monkeypatch.setattr(autotune_cache, "_default_cache", None)


@pytest.fixture
def seeded():
    torch.manual_seed(1234)
    return torch.Generator().manual_seed(1234)


def tiny_llama_config(**overrides):
    """hidden 64, 2 layers, vocab 256: every linear has in_features divisible by 32 and 64."""
    from transformers import LlamaConfig

    fields = dict(
        hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, vocab_size=256, max_position_embeddings=64, tie_word_embeddings=False,
    )
    fields.update(overrides)
    return LlamaConfig(**fields)


def tiny_llama(seed: int = 0, **overrides):
    from transformers import LlamaForCausalLM

    torch.manual_seed(seed)
    return LlamaForCausalLM(tiny_llama_config(**overrides)).eval()
