"""References to registry entries: ``kind/name@version``.

    dataset/literary-pd@1      recipe/forge-small@1      model/forge-small@1.0.0

A ref without ``@version`` (``model/forge-small``, or a bare ``forge-small`` where a model is
expected) is resolved by the catalog: the newest published release, or, where none is
published, the newest draft (with a warning). Versions compare numerically part by part
(``1.10.0`` > ``1.9.0``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from commonforge.errors import InputError

Kind = Literal["dataset", "recipe", "model", "conversion"]
KINDS: tuple[Kind, ...] = ("dataset", "recipe", "model", "conversion")
# Plural directory names under registry/entries/.
KIND_DIRS: dict[Kind, str] = {"dataset": "datasets", "recipe": "recipes", "model": "models",
                              "conversion": "conversions"}

NAME_RE = re.compile(r"^[a-z0-9](?:[a-z0-9._-]{0,62}[a-z0-9])?$")
VERSION_RE = re.compile(r"^(0|[1-9][0-9]{0,8})(\.(0|[1-9][0-9]{0,8})){0,2}$")
_REF_RE = re.compile(r"^(?:(?P<kind>[a-z]+)/)?(?P<name>[^@/\s]+)(?:@(?P<version>[^@/\s]+))?$")


def check_name(value: str) -> str:
    if not NAME_RE.match(value):
        raise ValueError(
            f"name {value!r} must be lowercase letters, digits, '.', '_' or '-' "
            "(starting and ending with a letter or digit, at most 64 characters)"
        )
    return value


def check_version(value: str) -> str:
    if not VERSION_RE.match(value):
        raise ValueError(f"version {value!r} must be 1 to 3 dot-separated numbers, e.g. 1 or 1.0.0")
    return value


def version_key(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in version.split("."))


@dataclass(frozen=True, order=True)
class Ref:
    kind: Kind
    name: str
    version: str | None = None

    def __str__(self) -> str:
        return f"{self.kind}/{self.name}" + (f"@{self.version}" if self.version else "")

    @property
    def pinned(self) -> bool:
        return self.version is not None

    @classmethod
    def parse(cls, text: str, *, default_kind: Kind | None = None) -> Ref:
        """Parse ``kind/name@version``; ``default_kind`` allows leaving out ``kind/``."""
        m = _REF_RE.match(text.strip()) if isinstance(text, str) else None
        if not m:
            raise InputError(
                f"bad ref {text!r}",
                hint="write refs as kind/name@version, e.g. model/forge-small@1.0.0",
            )
        kind = m.group("kind") or default_kind
        if kind is None:
            raise InputError(
                f"ref {text!r} does not say its kind",
                hint="prefix it with dataset/, recipe/, conversion/ or model/",
            )
        if kind not in KINDS:
            raise InputError(f"ref {text!r}: unknown kind {kind!r}", hint="kinds are " + ", ".join(KINDS))
        try:
            check_name(m.group("name"))
            if m.group("version") is not None:
                check_version(m.group("version"))
        except ValueError as err:
            raise InputError(f"bad ref {text!r}: {err}") from None
        return cls(kind, m.group("name"), m.group("version"))


def check_ref(value: str, kind: Kind, *, pinned: bool = True) -> str:
    """Pydantic-side validation of a ref field: right kind, and pinned if required."""
    try:
        ref = Ref.parse(value)
    except InputError as err:
        raise ValueError(err.message) from None
    if ref.kind != kind:
        raise ValueError(f"{value!r} is a {ref.kind} ref; a {kind} ref is expected here")
    if pinned and not ref.pinned:
        raise ValueError(f"{value!r} must name a version ({kind}/{ref.name}@VERSION)")
    return value
