"""Everything a build's bits depend on, pinned in one place, before torch is imported.

A stage process calls :func:`pin` first thing (before ``import torch``), then
:func:`configure_torch` once torch is imported. What is pinned and why (docs/determinism.md):

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
manifest's environment, and ``reproduce`` compares them first. So are the distributions a
stage process imported (:func:`imported_distributions`): the libraries that can shape the bits,
computed rather than listed by hand. docs/determinism.md says what was measured.
"""

from __future__ import annotations

import os
import platform
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
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

# The project itself: its code is pinned by the source commit, not by a version.
PROJECT_DISTRIBUTION = "commonforge"


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


def normalize_dist(name: str) -> str:
    """PEP 503 normalization: ``PyYAML`` and ``pyyaml``, ``ruamel.yaml`` and ``ruamel-yaml`` are one name."""
    return re.sub(r"[-_.]+", "-", name).lower()


# Modules first imported inside `untracked_imports()`: left out of the stage's record.
_untracked: set[str] = set()


@contextmanager
def untracked_imports() -> Iterator[None]:
    """Leave the modules first imported inside this block out of :func:`imported_distributions`.

    For experiment tracking: which client libraries MLflow loads depends on the tracking backend
    (a sqlite file loads SQLAlchemy and Alembic, a server does not) and on whether its database
    already exists, never on the bits a stage writes. Without this, a rebuild that logs to
    another backend would record other packages and get another release digest.
    """
    before = set(sys.modules)
    try:
        yield
    finally:
        _untracked.update(set(sys.modules) - before)


def imported_distributions() -> dict[str, str]:
    """{normalized distribution name: installed version} of every module this process imported.

    Taken from ``sys.modules`` (top-level names mapped to the distributions that provide them),
    without the standard library, the project itself and what only experiment tracking loaded
    (:func:`untracked_imports`). A stage records it when its work is done, so everything it
    imported lazily counts too.
    """
    providers = metadata.packages_distributions()
    tracked = [name for name in list(sys.modules) if name not in _untracked]
    tops = {name.partition(".")[0] for name in tracked} - set(sys.stdlib_module_names)
    dists = {normalize_dist(d) for top in tops for d in providers.get(top, ())}
    dists.discard(PROJECT_DISTRIBUTION)
    return {d: metadata.version(d) for d in sorted(dists)}


def environment(threads: int) -> dict:
    """Python and the pins of a build as recorded in the manifest (never the machine)."""
    determinism = {k: v for k, v in PINNED_ENV.items() if k != "PYTHONHASHSEED"}
    determinism["threads"] = str(threads)
    determinism["cpu_capability_used"] = cpu_capability()
    determinism["deterministic_algorithms"] = "true"
    return {
        "python": ".".join(platform.python_version_tuple()[:2]),
        "determinism": determinism,
    }
