"""The errors of the trust layer (all ForgeErrors, with the exit codes of commonforge.errors)."""

from __future__ import annotations

from commonforge.errors import InputError, VerificationError


class StatementError(InputError):
    """A statement file is malformed: not a DSSE envelope, not an in-toto Statement, wrong predicate."""


class SignatureError(VerificationError):
    """A signature does not verify, or is by a key that the policy does not let count."""


class PolicyError(VerificationError):
    """The policy chain does not verify: unsigned change, rollback, skipped version, changed pin."""
