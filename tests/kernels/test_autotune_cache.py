"""The on-disk tuning cache: keyed entries, merged and atomically replaced, corrupt files ignored."""

from __future__ import annotations

import json
import os

from kernels import autotune_cache
from kernels.autotune_cache import TuningCache, tuning_key


def test_put_get_and_persist(tmp_path):
    path = tmp_path / "sub" / "tune.json"
    key = tuning_key("NVIDIA H100 80GB HBM3", "3.6.0", "quant_matmul", "b4", "g128", "N4096", "K4096", "M1")
    assert key.startswith("NVIDIA H100 80GB HBM3|triton 3.6.0|quant_matmul|b4")
    cache = TuningCache(path)
    assert cache.get(key) is None
    cache.put(key, {"kernel": "gemv", "block_n": 32}, 0.004)
    assert cache.get(key) == {"kernel": "gemv", "block_n": 32}
    data = json.loads(path.read_text())
    assert data["version"] == autotune_cache.FORMAT_VERSION
    assert data["entries"][key]["ms"] == 0.004
    assert TuningCache(path).get(key) == {"kernel": "gemv", "block_n": 32}  # a new process reads it
    assert [p.name for p in path.parent.iterdir()] == ["tune.json"]  # no temporary files left


def test_concurrent_writers_merge(tmp_path):
    path = tmp_path / "tune.json"
    a, b = TuningCache(path), TuningCache(path)
    a.get("x")  # both load the (empty) file before either writes
    b.get("x")
    a.put("ka", {"v": 1}, 1.0)
    b.put("kb", {"v": 2}, 2.0)
    fresh = TuningCache(path)
    assert fresh.get("ka") == {"v": 1} and fresh.get("kb") == {"v": 2}


def test_corrupt_or_foreign_file_is_ignored_and_replaced(tmp_path):
    path = tmp_path / "tune.json"
    for content in ("{not json", json.dumps({"version": 999, "entries": {"k": {"config": {}}}}), "[]"):
        path.write_text(content)
        cache = TuningCache(path)
        assert cache.get("k") is None
        cache.put("k", {"v": 3}, 0.1)
        assert TuningCache(path).get("k") == {"v": 3}


def test_unwritable_location_keeps_memory_entry(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    cache = TuningCache(blocker / "tune.json")  # parent is a file: cannot create the directory
    cache.put("k", {"v": 4}, 0.1)
    assert cache.get("k") == {"v": 4}


def test_default_path_follows_environment(tmp_path, monkeypatch):
    monkeypatch.setenv(autotune_cache.CACHE_ENV, str(tmp_path / "env.json"))
    assert autotune_cache.default_cache_path() == tmp_path / "env.json"
    monkeypatch.delenv(autotune_cache.CACHE_ENV)
    assert autotune_cache.default_cache_path().name == "kernel_tuning.json"
    assert os.fspath(autotune_cache.default_cache_path()).startswith(os.path.expanduser("~"))
