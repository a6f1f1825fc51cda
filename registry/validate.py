"""Whole-registry validation: every file, every entry, every cross-reference.

The signed statements beside releases are not checked here (``registry`` cannot verify a
signature; ``trust.status.statement_problems`` does, and ``commonforge validate`` runs both).

Problems are collected (not raised) so a reviewer sees all of them at once; each names
the file and says what is wrong.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

from commonforge.errors import ForgeError
from registry.digest import sha256_file
from registry.fsutil import resolve_inside
from registry.refs import KIND_DIRS, NAME_RE
from registry.schema import RECORD_SUFFIXES, CardRecord, Dataset, Recipe, Release

if TYPE_CHECKING:
    from registry.catalog import Registry

_VERSION_FILE = re.compile(r"^(?P<version>[0-9]+(\.[0-9]+){0,2})\.yaml$")
_RECORD_FILE = re.compile(r"^(?P<version>[0-9]+(\.[0-9]+){0,2})\.(?P<suffix>[a-z]+)\.yaml$")
_STATEMENTS_DIR = re.compile(r"^(?P<version>[0-9]+(\.[0-9]+){0,2})\.statements$")
# Unsigned records of schema 1, replaced by signed statements (trust/): never counted, so refused
# with what to do instead.
_LEGACY = {
    "publication": "an unsigned publication record no longer publishes anything: delete it; "
                   "`commonforge publish` signs a publication once the policy holds",
    "revocation": "an unsigned revocation record no longer revokes anything: delete it and have "
                  "maintainers sign `commonforge revoke`",
    "rebuilds": "unsigned rebuild records no longer count: delete the folder; `commonforge reproduce --key K` "
                "(or `commonforge attest rebuild`) signs a rebuild statement",
}


def _rel(reg: Registry, path: Path) -> str:
    try:
        return str(path.relative_to(reg.root))
    except ValueError:
        return str(path)


def _check_layout(reg: Registry) -> list[str]:
    """Files that don't fit ``<kind>s/<name>/<version>[.<record>].yaml``."""
    problems = []
    if not reg.entries_dir.is_dir():
        return [f"{_rel(reg, reg.entries_dir)} is missing"]
    known_dirs = set(KIND_DIRS.values())
    for top in sorted(reg.entries_dir.iterdir()):
        if top.name.startswith("."):
            continue
        if top.name not in known_dirs or not top.is_dir():
            problems.append(f"{_rel(reg, top)}: unexpected; entries live in {', '.join(sorted(known_dirs))}")
            continue
        for name_dir in sorted(top.iterdir()):
            if not name_dir.is_dir() or not NAME_RE.match(name_dir.name):
                problems.append(f"{_rel(reg, name_dir)}: expected a directory named after an entry")
                continue
            for f in sorted(name_dir.iterdir()):
                if f.is_symlink() and not f.resolve().is_relative_to(reg.root):
                    problems.append(f"{_rel(reg, f)}: symlink pointing outside the repository")
                    continue
                if _VERSION_FILE.match(f.name) and f.is_file():
                    continue
                if top.name == "models":
                    legacy = f.name.rsplit(".", 2)[-2] if f.name.endswith(".yaml") else f.name.rsplit(".", 1)[-1]
                    if legacy in _LEGACY and (_RECORD_FILE.match(f.name) or f.is_dir()):
                        problems.append(f"{_rel(reg, f)}: {_LEGACY[legacy]}")
                        continue
                    m = _RECORD_FILE.match(f.name)
                    if m and f.is_file() and m.group("suffix") in RECORD_SUFFIXES:
                        if not (name_dir / f"{m.group('version')}.yaml").is_file():
                            problems.append(f"{_rel(reg, f)}: record for a release that does not exist")
                        continue
                    m = _STATEMENTS_DIR.match(f.name)
                    if m and f.is_dir():
                        # Their signatures are checked by trust (`commonforge validate` runs both).
                        if not (name_dir / f"{m.group('version')}.yaml").is_file():
                            problems.append(f"{_rel(reg, f)}: statements about a release that does not exist")
                        continue
                problems.append(f"{_rel(reg, f)}: unexpected file (not <version>.yaml or a known record)")
    return problems


def _check_release(reg: Registry, release: Release) -> list[str]:
    problems = []
    m = release.manifest
    where = release.ref
    if m.recipe is not None:
        try:
            recipe = reg.recipe(m.recipe.ref)
        except ForgeError as err:
            problems.append(f"{where}: recipe {m.recipe.ref}: {err.message}")
        else:
            if recipe.digest != m.recipe.sha256:
                problems.append(
                    f"{where}: recipe {m.recipe.ref} has digest {recipe.digest}, but the release was built "
                    f"from {m.recipe.sha256} (a recipe is never edited after release: make a new version)"
                )
            built = sorted(d.ref for d in m.datasets)
            if built != sorted(recipe.datasets):
                problems.append(f"{where}: datasets {built} differ from the recipe's {sorted(recipe.datasets)}")
            if recipe.name != release.name:
                problems.append(f"{where}: built from {m.recipe.ref}, whose name differs")
    if m.conversion is not None:
        try:
            conversion = reg.conversion(m.conversion.ref)
        except ForgeError as err:
            problems.append(f"{where}: conversion {m.conversion.ref}: {err.message}")
        else:
            if conversion.digest != m.conversion.sha256:
                problems.append(
                    f"{where}: conversion {m.conversion.ref} has digest {conversion.digest}, but the release was "
                    f"converted from {m.conversion.sha256} (never edit a released conversion: make a new version)"
                )
            if conversion.source.member_sha256 != m.conversion.checkpoint_sha256:
                problems.append(f"{where}: the conversion pins checkpoint {conversion.source.member_sha256}, the "
                                f"release was converted from {m.conversion.checkpoint_sha256}")
            if conversion.name != release.name:
                problems.append(f"{where}: converted by {m.conversion.ref}, whose name differs")
    for d in m.datasets:
        try:
            reg.dataset(d.ref)
        except ForgeError as err:
            problems.append(f"{where}: dataset {d.ref}: {err.message}")
    if m.base_model:
        try:
            reg.release(m.base_model)
        except ForgeError as err:
            problems.append(f"{where}: base_model {m.base_model}: {err.message}")
    for suffix in RECORD_SUFFIXES:
        try:
            rec = reg.record(release, suffix)
        except ForgeError as err:
            problems.append(str(err.message))
            continue
        # the "card" suffix loads a CardRecord (RECORD_SUFFIXES); isinstance says so to the type checker
        if suffix == "card" and isinstance(rec, CardRecord):
            try:
                card = resolve_inside(reg.root, rec.path, what="card path")
            except ForgeError as err:
                problems.append(f"{where}: {err.message}")
                continue
            if not card.is_file():
                problems.append(f"{where}: card {rec.path} is missing")
            elif sha256_file(card) != rec.sha256:
                problems.append(f"{where}: card {rec.path} does not match its recorded sha256 (re-render it)")
    return problems


def validate_registry(reg: Registry) -> list[str]:
    problems = _check_layout(reg)
    for ref in reg.refs():
        try:
            entry = reg.get(ref)
        except ForgeError as err:
            problems.append(err.message)
            continue
        if isinstance(entry, Recipe):
            for d in entry.datasets:
                try:
                    reg.dataset(d)
                except ForgeError as err:
                    problems.append(f"{entry.ref}: dataset {d}: {err.message}")
        elif isinstance(entry, Dataset):
            for s in entry.sources:
                if s.kind == "local" and s.path:
                    try:
                        if not resolve_inside(reg.root, s.path, what=f"source {s.id} path").exists():
                            problems.append(f"{entry.ref}: source {s.id}: {s.path} does not exist")
                    except ForgeError as err:
                        problems.append(f"{entry.ref}: {err.message}")
        elif isinstance(entry, Release):
            problems.extend(_check_release(reg, entry))
    return problems

