"""``commonforge build`` and ``commonforge reproduce``: run the pipeline, or re-run it and compare.

``build``: ``dvc repro`` of one recipe's stages (and only the data stages it uses), then
``release``. ``reproduce``: a clean temporary git worktree at the release's source commit,
data from the DVC remote where it is there (else from the pinned sources, verified by
sha256), a full ``dvc repro`` with a fresh DVC cache (so nothing is restored from a run
cache), then the rebuilt manifest compared field by field with the release's. With a rebuilder's key
the result is signed as a rebuild statement beside the release (``trust.status.attest_rebuild``);
without one it is only reported.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from commonforge.errors import BuildError, ForgeError, InputError, NotFoundError
from commonforge.machine import machine_info
from commonforge.settings import Settings
from pipelines.compare import ManifestDiff, compare_manifests
from pipelines.manifest import MANIFEST_STAGES, build_manifest, dataset_names
from pipelines.release import ReleaseResult, SignerPair, builder_name, release
from pipelines.stage import load_recipe
from pipelines.workspace import Params, ensure_dvc_remote, git_repo, recipe_stages, run_dvc
from registry import Registry
from registry.schema import BuildManifest, Release, utc_now

log = logging.getLogger(__name__)


def build(settings: Settings, recipe_name: str, *, replace_draft: bool = False, do_release: bool = True,
          signer: SignerPair | None = None, announce=print) -> ReleaseResult | None:
    """``dvc repro`` one recipe's stages, then release it (or confirm its existing release)."""
    root = settings.root
    params = Params.load(root)
    params.recipe_ref(recipe_name)  # a clear error when params.yaml doesn't build it
    problems = params.problems(Registry(root))
    if problems:
        raise InputError("params.yaml is inconsistent:\n  " + "\n  ".join(problems),
                         hint="fix params.yaml; `commonforge validate` checks it")
    ensure_dvc_remote(root, settings.dvc_remote)
    stages = recipe_stages(root, recipe_name)
    announce(f"building {recipe_name}: dvc repro {' '.join(stages)} (and the data stages they need)")
    started = time.perf_counter()
    run_dvc(root, "repro", *stages)
    announce(f"pipeline finished in {time.perf_counter() - started:.0f} s")
    if not do_release:
        return None
    return release(settings, recipe_name, replace_draft=replace_draft, signer=signer)


@dataclass(frozen=True)
class Rebuild:
    """What one rebuild found (signed into a rebuild statement when the rebuilder gives a key)."""

    release: str  # the ref
    release_digest: str
    result: Literal["identical", "different"]
    rebuilt_digest: str
    rebuilt_by: str
    rebuilt_at: str
    machine: dict[str, str]
    first_differing_stage: str | None
    differences: list[str]  # human-readable, field by field
    environment_differences: list[str]
    wall_seconds: float


@dataclass
class Reproduction:
    record: Rebuild
    diff: ManifestDiff
    rebuilt: BuildManifest
    statement: Path | None  # the signed rebuild statement, when a key was given


def _worktree(root: Path, commit: str) -> Path:
    repo = git_repo(root)
    try:
        repo.commit(commit)
    except (ValueError, Exception):  # noqa: BLE001 - gitpython raises several types for a bad sha
        raise InputError(
            f"source commit {commit} is not in this clone",
            hint="fetch the full history (git fetch --unshallow, or clone without --depth)",
        ) from None
    path = Path(tempfile.mkdtemp(prefix="commonforge-reproduce-"))
    path.rmdir()
    repo.git.worktree("add", "--detach", str(path), commit)
    return path


def _remove_worktree(root: Path, path: Path) -> None:
    try:
        git_repo(root).git.worktree("remove", "--force", str(path))
    except Exception:  # noqa: BLE001 - fall back to deleting the folder and pruning
        shutil.rmtree(path, ignore_errors=True)
        subprocess.run(["git", "worktree", "prune"], cwd=root, capture_output=True)


def reproduce(settings: Settings, model_ref: str, *, keep: bool = False, signer: SignerPair | None = None,
              announce=print) -> Reproduction:
    """Rebuild ``model_ref`` from its source commit and compare; with ``signer``, sign the result.

    The key is checked against the policy (a rebuilder's) before the rebuild starts, so a long
    rebuild never ends in a statement that would not count.
    """
    from trust.policy import load_chain
    from trust.status import require_member, resolve

    root = settings.root
    try:
        rel, _ = resolve(root, model_ref)
    except NotFoundError:
        _refuse_private(root, model_ref)
        raise
    if signer is not None:
        require_member(load_chain(root), signer[1], "rebuilder", "its rebuild")
    m = rel.manifest
    if m.provenance == "finetuned":
        _refuse_private(root, rel)
    if m.provenance == "converted":
        return _reproduce_conversion(settings, rel, keep=keep, signer=signer, announce=announce)
    if m.provenance == "imported" or m.recipe is None or m.source_commit is None:
        raise InputError(
            f"{rel.ref} was imported, not built by the forge: it has no recipe or source commit to rebuild from",
            hint="only releases built by `commonforge build` can be reproduced",
        )
    started = time.perf_counter()
    work = _worktree(root, m.source_commit)
    announce(f"reproducing {rel.ref} in a clean worktree at {m.source_commit[:12]}: {work}")
    try:
        recipe = load_recipe(work, m.recipe.ref)
        ensure_dvc_remote(work, settings.dvc_remote)
        for name in dataset_names(m):
            try:
                run_dvc(work, "pull", "--quiet", f"fetch@{name}", capture=True)
                announce(f"dataset {name}: raw text pulled from the DVC remote")
            except BuildError:
                announce(f"dataset {name}: not on the DVC remote; fetching its pinned sources")
        # Only the stages whose outputs the manifest records (evaluation and cards are records
        # beside the release, free to differ between rebuilds).
        targets = [s for s in recipe_stages(work, recipe.name) if s.split("@")[0] in MANIFEST_STAGES]
        run_dvc(work, "repro", *targets)
        rebuilt = build_manifest(work, recipe, m.source_commit)
    except ForgeError:
        if not keep:
            _remove_worktree(root, work)
        raise
    if not keep:
        _remove_worktree(root, work)
    return _compared(settings, rel, rebuilt, started, signer)


def _reproduce_conversion(settings: Settings, rel: Release, *, keep: bool, signer: SignerPair | None,
                          announce) -> Reproduction:
    """Re-run a converted release's conversion at its source commit and compare (no DVC: one stage)."""
    from pipelines.convert import conversion_manifest, load_conversion, run_conversion

    root, m = settings.root, rel.manifest
    assert m.conversion is not None and m.source_commit is not None, "a converted release names both"
    started = time.perf_counter()
    work = _worktree(root, m.source_commit)
    announce(f"re-converting {rel.ref} in a clean worktree at {m.source_commit[:12]}: {work}")
    try:
        conversion = load_conversion(work, m.conversion.ref)
        run_conversion(work, conversion.ref)
        rebuilt = conversion_manifest(work, conversion, m.source_commit)
    finally:
        if not keep:
            _remove_worktree(root, work)
    return _compared(settings, rel, rebuilt, started, signer)


def _compared(settings: Settings, rel: Release, rebuilt: BuildManifest, started: float,
              signer: SignerPair | None) -> Reproduction:
    from trust.status import attest_rebuild

    root, m = settings.root, rel.manifest
    diff = compare_manifests(m, rebuilt)
    identical = rebuilt.digest == rel.release_digest
    if not identical and diff.identical:
        diff.inputs.append("the manifests differ in a field the comparison does not explain (schema?)")
    record = Rebuild(
        release_digest=rel.release_digest,
        release=rel.ref,
        result="identical" if identical else "different",
        rebuilt_digest=rebuilt.digest,
        rebuilt_by=builder_name(root),
        rebuilt_at=utc_now(),
        machine=machine_info(),
        first_differing_stage=diff.first_differing_stage,
        differences=[line for line in diff.lines() if not line.startswith("environment:")],
        environment_differences=diff.environment,
        wall_seconds=round(time.perf_counter() - started, 1),
    )
    statement = None
    if signer is not None:
        statement = attest_rebuild(root, rel, signer[0], signer[1], rebuilt_digest=record.rebuilt_digest,
                                   first_differing_stage=record.first_differing_stage,
                                   environment_differences=record.environment_differences, machine=record.machine)
    return Reproduction(record, diff, rebuilt, statement)


def _refuse_private(root: Path, ref: str | Release) -> None:
    """A private fine-tune (it lives in the user registry, which reproduce does not search) gets the
    reason it cannot be rebuilt here rather than "not found"."""
    from trust.status import locate

    if isinstance(ref, str):
        try:
            ref, _ = locate(root, ref)
        except ForgeError:
            return
    if ref.manifest.provenance == "finetuned":
        raise InputError(
            f"{ref.ref} is a private fine-tune: its data is its owner's, so no one else can rebuild it",
            hint="its owner re-runs `commonforge finetune` with the same base, data and settings (the same adapter "
            "bytes come out); shareable, rebuildable fine-tunes as recipes are not built yet",
        )
