"""Tuned kernel configurations, cached per device and shape in memory and in a small JSON file.

Why not only `triton.autotune`: its cache lives in process memory (every server start would
re-benchmark every layer shape, seconds per shape on a 7B model), its key format is internal and
differs between Triton releases (we run 3.6 on GPUs and 3.9 in CI), it cannot benchmark under
the CPU interpreter, and it must not run while a CUDA graph is being captured. So we keep
autotune's idea (a key of the arguments that change the best config; candidates timed once per
key, the winner reused) and own the cache:

    key   = "<device name>|triton <version>|<op>|<shape fields...>"   e.g.
            "NVIDIA H100 80GB HBM3|triton 3.6.0|quant_matmul|b4|g128|sym|torch.float16|N4096|K4096|M1"
    value = {"config": {...kernel meta-parameters...}, "ms": 0.0041}

The file (default ~/.cache/commonforge/kernel_tuning.json, or $COMMONFORGE_KERNEL_TUNING_CACHE)
is re-read and merged before every write and replaced atomically (temporary file in the same
directory, fsync, rename), so concurrent processes never leave a torn file; the worst case is a
lost entry, which is re-tuned. A corrupt or unreadable file is ignored (and rewritten on the
next tune): the cache is an optimization, never a source of truth.
"""

from __future__ import annotations

import functools
import json
import os
import tempfile
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from commonforge import settings

CACHE_ENV = settings.KERNEL_TUNING_ENV
FORMAT_VERSION = 1


def default_cache_path() -> Path:
    """$COMMONFORGE_KERNEL_TUNING_CACHE, else ~/.cache/commonforge/kernel_tuning.json (read per call)."""
    return settings.kernel_tuning_cache()


def tuning_key(device_name: str, triton_version: str, op: str, *fields: object) -> str:
    return "|".join([device_name, f"triton {triton_version}", op, *(str(f) for f in fields)])


class TuningCache:
    """Key -> best config, backed by a JSON file. Thread-safe; writes are atomic."""

    def __init__(self, path: Path | str | None = None) -> None:
        self._path = Path(path) if path is not None else None
        self._entries: dict[str, dict[str, Any]] | None = None
        self._lock = threading.Lock()

    @property
    def path(self) -> Path:
        return self._path if self._path is not None else default_cache_path()

    def get(self, key: str) -> dict[str, Any] | None:
        """The cached config dict for `key`, or None."""
        with self._lock:
            if self._entries is None:
                self._entries = _read(self.path)
            entry = self._entries.get(key)
        return None if entry is None else dict(entry["config"])

    def put(self, key: str, config: dict[str, Any], ms: float) -> None:
        """Record `config` (timed at `ms`) for `key`, in memory and on disk."""
        entry = {"config": dict(config), "ms": float(ms)}
        with self._lock:
            if self._entries is None:
                self._entries = _read(self.path)
            self._entries[key] = entry
            on_disk = _read(self.path)  # merge what other processes wrote meanwhile
            on_disk[key] = entry
            try:
                _write_atomic(self.path, {"version": FORMAT_VERSION, "entries": on_disk})
            except OSError:
                pass  # read-only home, full disk: keep the in-memory entry and carry on


def _read(path: Path) -> dict[str, dict[str, Any]]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("version") != FORMAT_VERSION:
        return {}
    entries = data.get("entries")
    if not isinstance(entries, dict):
        return {}
    return {k: v for k, v in entries.items() if isinstance(v, dict) and isinstance(v.get("config"), dict)}


def _write_atomic(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=1, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


FLUSH_MIB = 256  # larger than the L2 of every current card (50 MB on H100, 60 MB on H200)


def l2_read_flush(device, mib: int = FLUSH_MIB) -> Callable[[], None]:
    """A no-argument cache flush for `device`: a read pass over `mib` MiB, summed into a scalar.

    Reads leave clean lines, so the call timed after it pays no write-back for the flush. (A
    write flush, `zero_()` as in triton.testing.do_bench, leaves dirty lines that the timed
    kernel's reads then write back: every weight under the flush size pays about its own size
    again.) The buffer itself is never written after setup."""
    import torch

    buf = torch.ones(mib * 2**20 // 2, dtype=torch.float16, device=device)
    return ReadFlush(buf, torch.empty((), dtype=torch.float32, device=device))


class ReadFlush:
    """The read pass of `l2_read_flush`: a sum over `buffer` into a scalar. It keeps the buffer
    alive and shows it, so callers and tests can check that it stays unwritten."""

    def __init__(self, buffer: Any, sink: Any) -> None:
        self.buffer, self._sink = buffer, sink

    def __call__(self) -> Any:
        import torch

        return torch.sum(self.buffer, dim=0, dtype=torch.float32, out=self._sink)


def median_ms(call: Callable[[], Any], flush: Callable[[], Any], *, reps: int, warmup: int,
              device: str = "cuda") -> float:
    """Median time of `call()` over `reps` runs after `warmup`, `flush()` before each, timed by CUDA
    events around the call alone (wall clock for device="cpu", where only rehearsals run)."""
    import time

    import torch

    times = []
    for i in range(warmup + reps):
        flush()
        if device == "cpu":
            t0 = time.perf_counter()
            call()
            elapsed = (time.perf_counter() - t0) * 1e3
        else:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            call()
            end.record()
            end.synchronize()
            elapsed = start.elapsed_time(end)
        if i >= warmup:
            times.append(elapsed)
    return sorted(times)[len(times) // 2]


def pick_fastest(run: Callable[[Any], None], candidates: Sequence[Any]) -> tuple[Any, float]:
    """Time `run(candidate)` for each candidate on the current CUDA device; return the best.

    Every timed call follows a read flush of the L2 cache (`l2_read_flush`), so small weights are
    timed as they run in a real model (streamed from HBM). A candidate that fails to compile or
    launch (e.g. too much shared memory on this GPU) is skipped. Raises RuntimeError if every
    candidate fails.
    """
    import torch

    flush = l2_read_flush(torch.device("cuda", torch.cuda.current_device()))
    best, best_ms, errors = None, float("inf"), []
    for cand in candidates:
        try:
            ms = median_ms(functools.partial(run, cand), flush, reps=20, warmup=3)
        except Exception as exc:  # noqa: BLE001 - a config that cannot run is just not a candidate
            errors.append(f"{cand}: {exc}")
            continue
        if ms < best_ms:
            best, best_ms = cand, ms
    if best is None:
        raise RuntimeError("no kernel configuration could run:\n" + "\n".join(errors[:5]))
    return best, best_ms


_default_cache: TuningCache | None = None


def default_cache() -> TuningCache:
    """The process-wide cache at `default_cache_path()`."""
    global _default_cache
    if _default_cache is None:
        _default_cache = TuningCache()
    return _default_cache
