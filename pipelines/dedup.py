"""Exact and near-duplicate detection over documents in id order; deterministic everywhere.

    dupes = find_duplicates(docs, spec)     # docs: [(id, text)] sorted by id; spec: DedupSpec

The earlier document (by id) is kept and every later duplicate of a kept one is dropped.

* **exact**: same normalized text (case-folded, whitespace runs collapsed), by sha256.
* **near**: MinHash over word shingles (``spec.shingle`` case-folded ``\\w+`` words), with
  LSH banding to find candidates, then the estimated Jaccard similarity over all
  ``spec.num_perm`` hash functions; a later document at or above ``spec.threshold`` to a kept
  one is dropped. Documents are compared with kept documents only, so a chain A~B~C with B
  dropped keeps C unless C is itself near A.

Hashing never uses Python's salted ``hash()``: a word's hash is the first 8 bytes of its keyed
BLAKE2b digest; a shingle's 32-bit hash combines its words' hashes with fixed odd multipliers
(uint64, wrapping) and keeps the high 32 bits; hash function k is the multiply-add-shift family
``h_k(x) = ((a_k * x + b_k) mod 2**64) >> 32`` with ``a_k`` odd, all drawn once from NumPy's
PCG64 seeded with :data:`SEED`. Signatures are computed in NumPy blocks, not per shingle.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

import numpy as np

from registry.schema import DedupSpec

SEED = 20261124  # the hash family: changing it changes which near duplicates are found
_WORD = re.compile(r"\w+")
_BLOCK = 4096  # shingles per NumPy block: (4096, num_perm) uint64 = 4 MiB at 128 functions
_KEY = b"commonforge-minhash-v1"


@dataclass(frozen=True)
class Duplicate:
    id: str  # the dropped document
    of: str  # the kept document it duplicates
    kind: Literal["exact", "near"]
    similarity: float  # 1.0 for exact; the MinHash estimate for near


def normalized(text: str) -> str:
    return " ".join(text.casefold().split())


def exact_duplicates(docs: Iterable[tuple[str, str]]) -> list[Duplicate]:
    first: dict[bytes, str] = {}
    out = []
    for doc_id, text in docs:
        key = hashlib.sha256(normalized(text).encode("utf-8")).digest()
        if key in first:
            out.append(Duplicate(doc_id, first[key], "exact", 1.0))
        else:
            first[key] = doc_id
    return out


def lsh_bands(threshold: float, num_perm: int) -> tuple[int, int]:
    """(bands, rows) with bands * rows <= num_perm minimizing false positives + false negatives.

    A pair with Jaccard s becomes a candidate with probability 1 - (1 - s**rows)**bands; the
    areas under that curve below ``threshold`` (false positives) and above it (misses) are
    weighted equally, as in datasketch.
    """
    s = np.linspace(0.0, 1.0, 1001)
    below, above = s <= threshold, s >= threshold
    best, best_err = (1, num_perm), float("inf")
    for bands in range(1, num_perm + 1):
        for rows in range(1, num_perm // bands + 1):
            p = 1.0 - (1.0 - s**rows) ** bands
            # 1-D inputs: each trapezoid is a float64 scalar, so float() is exact (numpy types it as maybe-array)
            err = float(np.trapezoid(p[below], s[below]) + np.trapezoid(1.0 - p[above], s[above]))
            if err < best_err - 1e-12:
                best, best_err = (bands, rows), err
    return best


class MinHasher:
    def __init__(self, num_perm: int, shingle: int, seed: int = SEED) -> None:
        rng = np.random.Generator(np.random.PCG64(seed))
        self.num_perm, self.shingle = num_perm, shingle
        self.a = rng.integers(0, 2**64, size=num_perm, dtype=np.uint64, endpoint=False) | np.uint64(1)
        self.b = rng.integers(0, 2**64, size=num_perm, dtype=np.uint64, endpoint=False)
        self.mix = rng.integers(0, 2**64, size=shingle, dtype=np.uint64, endpoint=False) | np.uint64(1)
        self._words: dict[str, int] = {}

    def _word_hashes(self, text: str) -> np.ndarray:
        cache = self._words
        out = []
        for w in _WORD.findall(text.casefold()):
            h = cache.get(w)
            if h is None:
                h = cache[w] = int.from_bytes(hashlib.blake2b(w.encode("utf-8"), digest_size=8, key=_KEY).digest(), "little")
            out.append(h)
        return np.array(out, dtype=np.uint64)

    def shingles(self, text: str) -> np.ndarray:
        """32-bit hashes of the text's word shingles (uint64 array holding values < 2**32)."""
        w = self._word_hashes(text)
        if len(w) == 0:
            return w
        k = min(self.shingle, len(w))
        n = len(w) - k + 1
        acc = np.zeros(n, dtype=np.uint64)
        for i in range(k):  # wrapping uint64 arithmetic: sum_i w[j + i] * mix[i]
            acc += w[i : i + n] * self.mix[i]
        return acc >> np.uint64(32)

    def signature(self, text: str) -> np.ndarray | None:
        """(num_perm,) uint32 minima, or None for a text without words."""
        x = self.shingles(text)
        if len(x) == 0:
            return None
        sig = np.full(self.num_perm, np.iinfo(np.uint64).max, dtype=np.uint64)
        for start in range(0, len(x), _BLOCK):
            block = x[start : start + _BLOCK, None]  # (n, 1)
            h = (block * self.a + self.b) >> np.uint64(32)  # (n, num_perm), wrapping mod 2**64
            np.minimum(sig, h.min(axis=0), out=sig)
        return sig.astype(np.uint32)


def near_duplicates(docs: Iterable[tuple[str, str]], spec: DedupSpec, *, progress: bool = False) -> list[Duplicate]:
    hasher = MinHasher(spec.num_perm, spec.shingle)
    bands, rows = lsh_bands(spec.threshold, spec.num_perm)
    buckets: list[dict[bytes, list[int]]] = [{} for _ in range(bands)]
    kept_ids: list[str] = []
    kept_sigs: list[np.ndarray] = []
    out = []
    items = list(docs)
    if progress:
        from tqdm import tqdm

        items = tqdm(items, desc="minhash", unit="doc", leave=False)
    for doc_id, text in items:
        sig = hasher.signature(text)
        if sig is None:
            continue
        keys = [sig[i * rows : (i + 1) * rows].tobytes() for i in range(bands)]
        candidates = sorted({j for band, key in zip(buckets, keys) for j in band.get(key, ())})
        best_j, best_sim = -1, 0.0
        for j in candidates:
            sim = float(np.count_nonzero(kept_sigs[j] == sig)) / spec.num_perm
            if sim > best_sim:
                best_j, best_sim = j, sim
        if best_j >= 0 and best_sim >= spec.threshold:
            out.append(Duplicate(doc_id, kept_ids[best_j], "near", round(best_sim, 4)))
            continue
        index = len(kept_ids)
        kept_ids.append(doc_id)
        kept_sigs.append(sig)
        for band, key in zip(buckets, keys):
            band.setdefault(key, []).append(index)
    return out


def find_duplicates(docs: list[tuple[str, str]], spec: DedupSpec, *, progress: bool = False) -> list[Duplicate]:
    """Duplicates to drop, exact first, then near among the rest; ``docs`` sorted by id."""
    ids = [d for d, _ in docs]
    if ids != sorted(ids):
        raise ValueError("documents must be sorted by id: the earlier id is the one kept")
    found = exact_duplicates(docs) if spec.exact else []
    if spec.near:
        dropped = {d.id for d in found}
        found += near_duplicates([(i, t) for i, t in docs if i not in dropped], spec, progress=progress)
    return sorted(found, key=lambda d: d.id)
