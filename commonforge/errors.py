"""The forge's one error hierarchy.

Every error says what went wrong *and what to do about it*. Library code raises; only the
CLI turns errors into exit codes and messages:

    0  ok
    1  verification failed (a digest mismatch, a rebuild that differs)
    2  bad input (malformed entry, unknown ref, wrong argument, path escape, ...)
    3  anything else the forge understood (a stage failed, a source is unreachable, ...)

Domain errors also subclass the matching builtin, so callers that only know Python's
exceptions still catch them (``NotFoundError`` is a ``LookupError``, ``IntegrityError`` a
``ValueError``).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class ForgeError(Exception):
    """Base of every error the forge raises on purpose.

    ``message`` says what went wrong, ``hint`` what to do next. ``str(err)`` joins them.
    """

    exit_code = 3

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message}\n  hint: {self.hint}" if self.hint else self.message


class InputError(ForgeError, ValueError):
    """Bad input: a malformed entry, a wrong argument, a path that leaves the repository."""

    exit_code = 2


class NotFoundError(InputError, LookupError):
    """A ref, entry, file or object that does not exist. Suggests close matches."""

    def __init__(
        self,
        what: str,
        *,
        candidates: Iterable[str] = (),
        hint: str | None = None,
    ) -> None:
        close = difflib.get_close_matches(what.split("/")[-1], list(candidates), n=3, cutoff=0.5)
        if close and hint is None:
            hint = "did you mean " + " or ".join(repr(c) for c in close) + "?"
        super().__init__(f"not found: {what}", hint=hint)
        self.what = what
        self.suggestions = close


class IntegrityError(ForgeError, ValueError):
    """Content does not match its recorded digest: never use it."""

    exit_code = 1

    def __init__(self, what: str, expected: str, actual: str, *, hint: str | None = None) -> None:
        super().__init__(
            f"digest mismatch for {what}: expected sha256 {expected}, got {actual}",
            hint=hint
            or "the file was changed or corrupted; fetch it again or restore it from a peer or remote",
        )
        self.what = what
        self.expected = expected
        self.actual = actual


class VerificationError(ForgeError):
    """A check the user asked for came out negative (e.g. a rebuild that is not identical)."""

    exit_code = 1


class BuildError(ForgeError, RuntimeError):
    """A build step failed for a reason that is not bad input (a stage crashed, a tool is missing)."""


class FetchError(ForgeError, OSError):
    """A pinned source could not be fetched (unreachable registry, client failure)."""
