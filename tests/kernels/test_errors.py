"""Every error of `kernels` is a `commonforge.errors.ForgeError` and keeps its builtin base."""

from __future__ import annotations

import pytest

from commonforge.errors import ForgeError, InputError
from kernels import errors
from kernels.scheme import QuantScheme


@pytest.mark.parametrize(("cls", "builtin", "code"), [
    (errors.ShapeError, ValueError, 2),
    (errors.DtypeError, TypeError, 2),
    (errors.DeviceError, ValueError, 2),
    (errors.LayoutError, ValueError, 2),
    (errors.SchemeError, ValueError, 2),
    (errors.DigestMismatchError, ValueError, 1),
])
def test_kernel_errors_join_the_forge_hierarchy(cls, builtin, code):
    err = cls("what went wrong", hint="what to do")
    assert isinstance(err, errors.KernelError) and isinstance(err, ForgeError) and isinstance(err, builtin)
    assert err.exit_code == code
    assert str(err) == "what went wrong\n  hint: what to do"


def test_bad_input_errors_are_input_errors_and_messages_survive():
    with pytest.raises(InputError, match="int8 is per-output-channel"):
        QuantScheme(name="int8-g128", bits=8, group_size=128, symmetric=True)
    assert not issubclass(errors.DigestMismatchError, InputError)  # a failed verification, not bad input
