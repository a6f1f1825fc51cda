"""Errors raised by `kernels`: one branch of the forge's hierarchy (`commonforge.errors`).

`KernelError` is a `ForgeError`, so the CLI turns any of them into a message and an exit code
like every other error of the forge. Each subclass also keeps the matching builtin base, so
callers that catch `ValueError`/`TypeError` keep working. Bad tensors, dtypes, devices, layouts
and schemes are the caller's input (exit code 2, like `InputError`); a digest mismatch is a failed
verification (exit code 1, like `IntegrityError`). Every message says what was wrong and what to
do about it.
"""

from __future__ import annotations

from commonforge.errors import ForgeError, InputError


class KernelError(ForgeError):
    """Base class of every error raised by `kernels`."""


class ShapeError(KernelError, InputError):
    """A tensor has the wrong shape or size (K or N of 0, K not divisible by the group size, ...)."""


class DtypeError(KernelError, TypeError):
    """A tensor has a dtype the operation does not support."""

    exit_code = 2


class DeviceError(KernelError, InputError):
    """Tensors live on different devices, or on a device the operation cannot run on."""


class LayoutError(KernelError, InputError):
    """A tensor is not contiguous, or is not laid out as the operation expects."""


class SchemeError(KernelError, InputError):
    """A quantization scheme or a `quantization_config` is invalid or unsupported."""


class DigestMismatchError(KernelError, ValueError):
    """Packed tensors do not match the digest they were published with (corrupted or tampered)."""

    exit_code = 1
