"""Everything a build's bits depend on, pinned in one place, before torch is imported.

A stage process calls :func:`pin` first thing (before ``import torch``), then
:func:`configure_torch` once torch is imported. What is pinned and why (see STACK.md):

* ``ATEN_CPU_CAPABILITY=avx2``: ATen picks vectorized kernels by CPU; AVX-512 and AVX2 kernels
  round differently. Every x86-64 CPU of the last decade has AVX2, so all rebuilders can
  take the same path (a CPU without AVX2 is reported, not silently used).
* ``MKL_CBWR=AVX2,STRICT``: MKL's conditional numerical reproducibility, so BLAS results
  do not depend on the CPU's vector units (Intel vs AMD, AVX2 vs AVX-512).
* ``ONEDNN_MAX_CPU_ISA=AVX2``, ``MKL_ENABLE_INSTRUCTIONS=AVX2``: the same for oneDNN and MKL
  dispatch (no effect on this AMD machine, but cheap insurance on AVX-512 Intel ones).
* thread counts (torch intra-op from the recipe, inter-op 1, OMP/MKL/OpenBLAS, tokenizers'
  Rayon pool): reductions split differently with more threads.
* ``torch.use_deterministic_algorithms(True)``, seeds, and ``CUBLAS_WORKSPACE_CONFIG`` on GPU.

The pins *override* whatever the parent environment says (a user's ``OMP_NUM_THREADS=1`` or
``ATEN_CPU_CAPABILITY=default`` must not change the bits); they are recorded in the build
manifest's environment, and ``reproduce`` compares them first.
"""

from __future__ import annotations

import os
import platform
import sys
from importlib import metadata

from commonforge.errors import BuildError

# Variables fixed for every stage process regardless of the parent's environment.
PINNED_ENV: dict[str, str] = {
    "ATEN_CPU_CAPABILITY": "avx2",
    "MKL_CBWR": "AVX2,STRICT",
    "MKL_ENABLE_INSTRUCTIONS": "AVX2",
    "ONEDNN_MAX_CPU_ISA": "AVX2",
    "CUBLAS_WORKSPACE_CONFIG": ":4096:8",
    "TOKENIZERS_PARALLELISM": "true",
    "PYTHONHASHSEED": "0",  # effective in children; this process never relies on hash() order
}
# Per-build thread variables, set from the recipe's `training.threads`.
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "RAYON_NUM_THREADS")

# Distributions whose versions decide the bits (recorded in the manifest's environment).
BUILD_PACKAGES = ("torch", "transformers", "tokenizers", "safetensors", "datasets", "numpy", "compressed-tensors")


def pin(threads: int) -> dict[str, str]:
    """Apply the pins to ``os.environ``. Must run before torch (or tokenizers) is imported."""
    heavy = [m for m in ("torch", "tokenizers", "numpy") if m in sys.modules]
    if heavy:
        raise BuildError(
            f"determinism pins applied after {', '.join(heavy)} was imported: they would not take effect",
            hint="call pipelines.determinism.pin() at the top of the stage, before importing torch",
        )
    if threads < 1:
        raise BuildError(f"threads must be >= 1, got {threads}")
    pins = dict(PINNED_ENV)
    pins.update({var: str(threads) for var in THREAD_VARS})
    os.environ.update(pins)
    return pins


def configure_torch(seed: int, threads: int) -> None:
    """Seeds, threads and deterministic algorithms; checks the CPU path really is the pinned one."""
    import torch

    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass  # already set in this process (only possible once); the value is still 1 if we set it
    torch.use_deterministic_algorithms(True)
    if torch.cuda.is_available():
        torch.backends.cudnn.benchmark = False
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False


def cpu_capability() -> str:
    import torch

    return str(torch.backends.cpu.get_cpu_capability())


def package_versions() -> dict[str, str]:
    versions = {}
    for dist in BUILD_PACKAGES:
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return versions


def environment(threads: int) -> dict:
    """The pinned build environment as recorded in the manifest (never the machine)."""
    determinism = {k: v for k, v in PINNED_ENV.items() if k != "PYTHONHASHSEED"}
    determinism["threads"] = str(threads)
    determinism["cpu_capability_used"] = cpu_capability()
    determinism["deterministic_algorithms"] = "true"
    return {
        "python": ".".join(platform.python_version_tuple()[:2]),
        "packages": package_versions(),
        "determinism": determinism,
    }
