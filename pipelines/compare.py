"""Field-by-field comparison of two build manifests, explained in pipeline order.

``reproduce`` and ``release`` use it to say *where* and *why* two builds differ instead of
reporting a bare hash difference: first the pinned environment (a different library version
or CPU path explains everything downstream), then the inputs (recipe, lock), then each
stage's outputs in pipeline order (dataset splits, tokenizer, weights, quantized variants).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from registry.schema import BuildEnvironment, BuildManifest, PackagePin

STAGE_ORDER = ("prepare", "tokenizer", "train", "quantize")


@dataclass
class ManifestDiff:
    environment: list[str] = field(default_factory=list)
    inputs: list[str] = field(default_factory=list)
    stages: dict[str, list[str]] = field(default_factory=dict)  # stage -> differences, in pipeline order

    @property
    def identical(self) -> bool:
        return not (self.environment or self.inputs or self.stages)

    @property
    def first_differing_stage(self) -> str | None:
        return next(iter(self.stages), None)

    def lines(self) -> list[str]:
        out = [f"environment: {d}" for d in self.environment]
        out += [f"input: {d}" for d in self.inputs]
        for stage, diffs in self.stages.items():
            out += [f"{stage}: {d}" for d in diffs]
        return out


def _dict_diff(prefix: str, a: dict, b: dict) -> list[str]:
    out = []
    for k in sorted(set(a) | set(b)):
        if a.get(k) != b.get(k):
            out.append(f"{prefix}{k}: {a.get(k, '(absent)')} -> {b.get(k, '(absent)')}")
    return out


def _package_diff(expected: BuildEnvironment, actual: BuildEnvironment) -> list[str]:
    """Package by package: which distribution the two builds imported differently, and how."""
    out = []
    for name in sorted(set(expected.packages) | set(actual.packages)):
        e, a = expected.packages.get(name), actual.packages.get(name)
        ev = e if isinstance(e, str) or e is None else e.version
        av = a if isinstance(a, str) or a is None else a.version
        if e is None:
            out.append(f"package {name} {av}: imported by the rebuild only")
        elif a is None:
            out.append(f"package {name} {ev}: imported by the release's build only")
        elif ev != av:
            out.append(f"package {name} {ev} -> {av}")
        elif isinstance(e, PackagePin) and isinstance(a, PackagePin) and e.lock_sha256 != a.lock_sha256:
            out.append(f"package {name} {ev}: requirements.lock allows other files for it "
                       f"(their digest {e.lock_sha256[:12]} -> {a.lock_sha256[:12]}): another build of the same version")
    return out


def compare_manifests(expected: BuildManifest, actual: BuildManifest, *, ignore_commit: bool = False) -> ManifestDiff:
    diff = ManifestDiff()
    if expected.schema_version != actual.schema_version:
        diff.environment.append(
            f"manifest schema {expected.schema_version} -> {actual.schema_version} (schema 1 pins the whole "
            "requirements.lock and a fixed package list, schema 2 the packages the stages imported)")
    ea, aa = expected.environment, actual.environment
    if ea and aa:
        if ea.python != aa.python:
            diff.environment.append(f"python {ea.python} -> {aa.python}")
        diff.environment += _package_diff(ea, aa)
        diff.environment += _dict_diff("pin ", ea.determinism, aa.determinism)
    if expected.lock_sha256 and actual.lock_sha256 and expected.lock_sha256 != actual.lock_sha256:
        diff.environment.append(f"requirements.lock sha256 {expected.lock_sha256} -> {actual.lock_sha256}")
    if expected.conversion != actual.conversion:
        e = f"{expected.conversion.ref}@{expected.conversion.sha256[:12]}" if expected.conversion else None
        a = f"{actual.conversion.ref}@{actual.conversion.sha256[:12]}" if actual.conversion else None
        diff.inputs.append(f"conversion {e} -> {a}")
    if expected.recipe != actual.recipe:
        e = expected.recipe.ref + "@" + expected.recipe.sha256[:12] if expected.recipe else None
        a = actual.recipe.ref + "@" + actual.recipe.sha256[:12] if actual.recipe else None
        diff.inputs.append(f"recipe {e} -> {a}")
    if not ignore_commit and expected.source_commit != actual.source_commit:
        diff.inputs.append(f"source commit {expected.source_commit} -> {actual.source_commit}")
    for key in ("name", "version", "license", "provenance", "base_model"):
        if getattr(expected, key) != getattr(actual, key):
            diff.inputs.append(f"{key} {getattr(expected, key)} -> {getattr(actual, key)}")

    stages: dict[str, list[str]] = {}
    e_data = {d.ref: d for d in expected.datasets}
    a_data = {d.ref: d for d in actual.datasets}
    for ref in sorted(set(e_data) | set(a_data)):
        if ref not in e_data or ref not in a_data:
            stages.setdefault("prepare", []).append(f"{ref} only in {'rebuild' if ref in a_data else 'release'}")
            continue
        for split in sorted(set(e_data[ref].splits) | set(a_data[ref].splits)):
            es, as_ = e_data[ref].splits.get(split), a_data[ref].splits.get(split)
            if es != as_:
                stages.setdefault("prepare", []).append(
                    f"{ref} {split}: sha256 {es.sha256[:12] if es else '-'} ({es.documents if es else 0} docs) -> "
                    f"{as_.sha256[:12] if as_ else '-'} ({as_.documents if as_ else 0} docs)"
                )
    e_art = {a.path: a for a in expected.artifacts}
    a_art = {a.path: a for a in actual.artifacts}
    for path in sorted(set(e_art) | set(a_art)):
        ea_, aa_ = e_art.get(path), a_art.get(path)
        if ea_ is None or aa_ is None:
            only = ea_ or aa_
            stages.setdefault(only.stage if only else "", []).append(
                f"{path} only in {'rebuild' if aa_ else 'release'}")
            continue
        if (ea_.sha256, ea_.size) != (aa_.sha256, aa_.size):
            stages.setdefault(ea_.stage, []).append(
                f"{path}: sha256 {ea_.sha256[:12]} ({ea_.size} B) -> {aa_.sha256[:12]} ({aa_.size} B)"
            )
    order = {s: i for i, s in enumerate(STAGE_ORDER)}
    diff.stages = dict(sorted(stages.items(), key=lambda kv: order.get(kv[0], len(order))))
    return diff
