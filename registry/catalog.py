"""The registry of one checkout: entries on disk, refs resolved, records beside releases.

    reg = Registry(root)
    reg.get("recipe/forge-small@1")            -> Recipe
    reg.resolve("dataset/literary-pd")         -> Dataset (datasets and recipes: the newest version)
    reg.validate()                             -> list of problems (every entry, every cross-reference)

Entries are read on demand and cached per instance; writes go through :mod:`registry.yamlio`
(atomic). A release's status (draft, published, revoked) is not known here: it is computed from
signed statements by ``trust.status``, which also resolves a bare model name (newest *verified*
published release). ``registry`` only keeps the records.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Literal, TypeVar

from commonforge.errors import ForgeError, InputError, NotFoundError
from registry.refs import KIND_DIRS, KINDS, Kind, Ref, version_key
from registry.schema import (
    ENTRY_TYPES,
    RECORD_SUFFIXES,
    CardRecord,
    Conversion,
    Dataset,
    Entry,
    EvaluationRecord,
    ProvenanceRecord,
    Recipe,
    Record,
    Release,
)
from registry.yamlio import load_model, save_model

log = logging.getLogger(__name__)

# What trust.status computes for a release (registry never does).
Status = Literal["draft", "published", "revoked"]
E = TypeVar("E", bound=Entry)
R = TypeVar("R", bound=Record)


class Registry:
    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()
        self.entries_dir = self.root / "registry" / "entries"
        self._cache: dict[Path, object] = {}

    # --- reading ------------------------------------------------------------------------

    def _check_inside(self, path: Path) -> None:
        if path.is_symlink() and not path.resolve().is_relative_to(self.root):
            raise InputError(
                f"{path} is a symlink to {path.resolve()}, outside the repository",
                hint="entries must be real files inside the repository",
            )

    def _load(self, model: type, path: Path):
        if path not in self._cache:
            self._check_inside(path)
            self._cache[path] = load_model(model, path)
        return self._cache[path]

    def entry_path(self, ref: Ref) -> Path:
        if ref.version is None:
            raise InputError(f"{ref} has no version")
        return self.entries_dir / KIND_DIRS[ref.kind] / ref.name / f"{ref.version}.yaml"

    def versions(self, kind: Kind, name: str) -> list[str]:
        """Versions of ``kind/name`` on disk, oldest first."""
        folder = self.entries_dir / KIND_DIRS[kind] / name
        if not folder.is_dir():
            return []
        found = []
        for p in folder.glob("*.yaml"):
            stem = p.name[: -len(".yaml")]
            if re.fullmatch(r"[0-9]+(\.[0-9]+){0,2}", stem):
                found.append(stem)
        return sorted(found, key=version_key)

    def names(self, kind: Kind) -> list[str]:
        folder = self.entries_dir / KIND_DIRS[kind]
        return sorted(p.name for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []

    def refs(self, kind: Kind | None = None) -> list[Ref]:
        kinds = (kind,) if kind else KINDS
        return [Ref(k, n, v) for k in kinds for n in self.names(k) for v in self.versions(k, n)]

    def get(self, ref: Ref | str, kind: Kind | None = None) -> Entry:
        """The entry a *pinned* ref names; unknown refs suggest close matches."""
        ref = ref if isinstance(ref, Ref) else Ref.parse(ref, default_kind=kind)
        if not ref.pinned:
            return self.resolve(ref)
        path = self.entry_path(ref)
        if not path.is_file():
            candidates = [str(r) for r in self.refs(ref.kind)]
            hint = None
            if ref.name in self.names(ref.kind):
                hint = f"versions of {ref.kind}/{ref.name}: " + ", ".join(self.versions(ref.kind, ref.name))
            raise NotFoundError(str(ref), candidates=candidates + self.names(ref.kind), hint=hint)
        entry = self._load(ENTRY_TYPES[ref.kind], path)
        if (entry.name, entry.version) != (ref.name, ref.version):
            raise InputError(
                f"{path} declares {entry.ref}, but its path says {ref}",
                hint="an entry's file is <kind>s/<name>/<version>.yaml: rename the file or fix the entry",
            )
        return entry

    def _get_as(self, ref: Ref | str, kind: Kind, cls: type[E]) -> E:
        entry = self.get(ref, kind)
        if not isinstance(entry, cls):  # the ref spelled out another kind, e.g. recipe/... where a dataset is wanted
            raise InputError(f"{ref} is a {entry.kind} ref; a {kind} ref is expected here",
                             hint=f"name it as {kind}/<name>@<version>")
        return entry

    def dataset(self, ref: str) -> Dataset:
        return self._get_as(ref, "dataset", Dataset)

    def recipe(self, ref: str) -> Recipe:
        return self._get_as(ref, "recipe", Recipe)

    def conversion(self, ref: str) -> Conversion:
        return self._get_as(ref, "conversion", Conversion)

    def release(self, ref: str) -> Release:
        return self._get_as(ref, "model", Release)

    def resolve(self, ref: Ref | str, kind: Kind = "dataset") -> Entry:
        """Resolve a dataset or recipe ref that may leave out its version (to the newest).

        A bare *model* name is refused: which release it means depends on verified status,
        which only ``trust.status.resolve`` can compute.
        """
        ref = ref if isinstance(ref, Ref) else Ref.parse(ref, default_kind=kind)
        if ref.pinned:
            return self.get(ref)
        if ref.kind == "model":
            raise InputError(
                f"{ref} names no version; which release a bare model name means depends on signed statements",
                hint=f"name a version (versions: {', '.join(self.versions('model', ref.name)) or 'none'}), "
                "or resolve it with trust.status.resolve",
            )
        versions = self.versions(ref.kind, ref.name)
        if not versions:
            raise NotFoundError(str(ref), candidates=self.names(ref.kind))
        return self.get(Ref(ref.kind, ref.name, versions[-1]))

    def iter_entries(self, kind: Kind | None = None) -> Iterator[Entry]:
        for ref in self.refs(kind):
            yield self.get(ref)

    # --- records beside a release -------------------------------------------------------

    def record_path(self, release: Release, suffix: str) -> Path:
        return self.entry_path(Ref("model", release.name, release.version)).with_suffix(f".{suffix}.yaml")

    def statements_dir(self, release: Release) -> Path:
        """Where the signed statements about ``release`` are kept (read and verified by ``trust``)."""
        return self.entry_path(Ref("model", release.name, release.version)).with_suffix(".statements")

    def record(self, release: Release, suffix: str) -> Record | None:
        path = self.record_path(release, suffix)
        if not path.is_file():
            return None
        rec = self._load(RECORD_SUFFIXES[suffix], path)
        if rec.release_digest != release.release_digest:
            raise InputError(
                f"{path} names release digest {rec.release_digest}, but {release.ref} is {release.release_digest}",
                hint="the record belongs to another build of this version; re-run the step that writes it",
            )
        return rec

    def _record_as(self, release: Release, suffix: str, cls: type[R]) -> R | None:
        rec = self.record(release, suffix)
        assert rec is None or isinstance(rec, cls), f"RECORD_SUFFIXES[{suffix!r}] loads a {cls.__name__}"
        return rec

    def provenance(self, release: Release) -> ProvenanceRecord | None:
        return self._record_as(release, "provenance", ProvenanceRecord)

    def evaluation(self, release: Release) -> EvaluationRecord | None:
        return self._record_as(release, "evals", EvaluationRecord)

    def card(self, release: Release) -> CardRecord | None:
        return self._record_as(release, "card", CardRecord)

    # --- writing ------------------------------------------------------------------------

    def save_release(self, release: Release, *, replace_draft: bool = False) -> Path:
        """Write a release entry. Never rewrites one silently, nor ever one that anybody vouched for.

        ``replace_draft`` replaces a different release under the same version, with its records
        and statements (they describe the other build). The caller has checked, with
        ``trust.status``, that it is a draft; here, without verifying anything, a release with any
        approval, publication or revocation statement beside it is never replaced.
        """
        path = self.entry_path(Ref("model", release.name, release.version))
        if path.exists():
            existing = self.release(f"model/{release.name}@{release.version}")
            if existing.release_digest == release.release_digest:
                return path
            folder = self.statements_dir(existing)
            vouched = sorted(p.name for p in folder.glob("*.json")
                             if p.name.split("-", 1)[0] in ("approval", "publication", "revocation"))
            if vouched or not replace_draft:
                raise ForgeError(
                    f"{existing.ref} already exists with digest {existing.release_digest}; "
                    f"refusing to write a different release ({release.release_digest}) under the same version"
                    + (f": maintainers signed statements about it ({', '.join(vouched)})" if vouched else ""),
                    hint="bump the recipe's version to make a new release"
                    + ("" if vouched else "; or pass --replace-draft to replace this draft"),
                )
            # Records and statements of the replaced draft describe another build: remove them with it.
            for suffix in RECORD_SUFFIXES:
                self.record_path(existing, suffix).unlink(missing_ok=True)
            if folder.is_dir():
                for p in folder.iterdir():
                    p.unlink()
                folder.rmdir()
        save_model(release, path)
        self._cache.pop(path, None)
        return path

    def save_record(self, release: Release, suffix: str, record: Record) -> Path:
        if record.release_digest != release.release_digest:
            raise InputError(f"record names digest {record.release_digest}, not {release.release_digest}")
        if not isinstance(record, RECORD_SUFFIXES[suffix]):
            raise InputError(f"a .{suffix} record must be a {RECORD_SUFFIXES[suffix].__name__}")
        path = self.record_path(release, suffix)
        save_model(record, path)
        self._cache.pop(path, None)
        return path

    # --- validation ---------------------------------------------------------------------

    def validate(self) -> list[str]:
        """Every entry and record, every cross-reference. Returns the problems (empty = valid)."""
        from registry.validate import validate_registry

        return validate_registry(self)
