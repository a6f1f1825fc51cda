"""Field-by-field comparison of two build manifests, explained in pipeline order.

``reproduce`` and ``release`` use it to say *where* and *why* two builds differ instead of
reporting a bare hash difference: first the pinned environment (a different library version
or CPU path explains everything downstream), then the inputs (recipe, lock), then each
stage's outputs in pipeline order (dataset splits, tokenizer, weights, quantized variants).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from registry.schema import BuildManifest

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


def compare_manifests(expected: BuildManifest, actual: BuildManifest, *, ignore_commit: bool = False) -> ManifestDiff:
    diff = ManifestDiff()
    ea, aa = expected.environment, actual.environment
    if ea and aa:
        if ea.python != aa.python:
            diff.environment.append(f"python {ea.python} -> {aa.python}")
        diff.environment += _dict_diff("package ", ea.packages, aa.packages)
        diff.environment += _dict_diff("pin ", ea.determinism, aa.determinism)
    if expected.lock_sha256 != actual.lock_sha256:
        diff.environment.append(f"requirements.lock sha256 {expected.lock_sha256} -> {actual.lock_sha256}")
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
        stage = (ea_ or aa_).stage
        if ea_ is None or aa_ is None:
            stages.setdefault(stage, []).append(f"{path} only in {'rebuild' if aa_ else 'release'}")
        elif (ea_.sha256, ea_.size) != (aa_.sha256, aa_.size):
            stages.setdefault(stage, []).append(
                f"{path}: sha256 {ea_.sha256[:12]} ({ea_.size} B) -> {aa_.sha256[:12]} ({aa_.size} B)"
            )
    order = {s: i for i, s in enumerate(STAGE_ORDER)}
    diff.stages = dict(sorted(stages.items(), key=lambda kv: order.get(kv[0], len(order))))
    return diff
