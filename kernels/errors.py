"""Errors raised by `kernels`.

Kept in one small module so they can later be rebased onto the project-wide hierarchy
(`commonforge.errors.ForgeError`) without touching the rest of the package. Each error also
subclasses the matching builtin, so callers that catch `ValueError`/`TypeError` keep working.
Every message says what was wrong and what to do about it.
"""

from __future__ import annotations


class KernelError(Exception):
    """Base class of every error raised by `kernels`."""


class ShapeError(KernelError, ValueError):
    """A tensor has the wrong shape or size (K or N of 0, K not divisible by the group size, ...)."""


class DtypeError(KernelError, TypeError):
    """A tensor has a dtype the operation does not support."""


class DeviceError(KernelError, ValueError):
    """Tensors live on different devices, or on a device the operation cannot run on."""


class LayoutError(KernelError, ValueError):
    """A tensor is not contiguous, or is not laid out as the operation expects."""


class SchemeError(KernelError, ValueError):
    """A quantization scheme or a `quantization_config` is invalid or unsupported."""


class DigestMismatchError(KernelError, ValueError):
    """Packed tensors do not match the digest they were published with (corrupted or tampered)."""
