"""The shape every check returns, and the report ``commonforge check`` builds from them.

A check is a function ``(CheckInput) -> CheckResult``. It never raises for a problem in the
contribution (that is a *failed* result with problems that say what to do); it raises a
:class:`~commonforge.errors.ForgeError` only for bad input to ``check`` itself (exit 2).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

Outcome = Literal["passed", "failed", "skipped"]


@dataclass(frozen=True)
class Problem:
    """One thing wrong, where it is, and what to do about it."""

    message: str
    fix: str | None = None  # what the contributor should do
    path: str | None = None  # repository-relative file
    line: int | None = None  # 1-based, where known

    def location(self) -> str:
        if self.path is None:
            return ""
        return f"{self.path}:{self.line}" if self.line else self.path

    def as_dict(self) -> dict[str, Any]:
        return {"message": self.message, "fix": self.fix, "path": self.path, "line": self.line}


@dataclass(frozen=True)
class CheckResult:
    check: str  # e.g. "licenses"
    outcome: Outcome
    summary: str  # one line for the report
    problems: tuple[Problem, ...] = ()
    details: dict[str, Any] = field(default_factory=dict)  # statistics, JSON-serialisable
    seconds: float = 0.0

    @classmethod
    def passed(cls, check: str, summary: str, **details: Any) -> CheckResult:
        return cls(check, "passed", summary, (), dict(details))

    @classmethod
    def failed(cls, check: str, summary: str, problems: list[Problem] | tuple[Problem, ...], **details: Any) -> CheckResult:
        return cls(check, "failed", summary, tuple(problems), dict(details))

    @classmethod
    def skipped(cls, check: str, why: str, **details: Any) -> CheckResult:
        return cls(check, "skipped", why, (), dict(details))

    def as_dict(self) -> dict[str, Any]:
        return {"check": self.check, "outcome": self.outcome, "summary": self.summary,
                "problems": [p.as_dict() for p in self.problems], "details": self.details,
                "seconds": round(self.seconds, 3)}


@dataclass(frozen=True)
class CheckInput:
    """What a check of one added entry sees."""

    root: Path  # the checkout being checked (head), with registry/entries/ and params.yaml
    ref: str  # e.g. "dataset/psalms@1"
    path: str  # the entry's repository-relative file
    base_root: Path | None = None  # a checkout of the base, where one is needed (existing datasets)
    cache: Path | None = None  # the download cache for pinned sources
    options: dict[str, Any] = field(default_factory=dict)  # thresholds and switches (e.g. {"dry_run": False})
