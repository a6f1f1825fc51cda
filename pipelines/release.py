"""``commonforge release RECIPE``: turn a finished ``dvc repro`` into a registry release.

Writes ``registry/entries/models/<name>/<version>.yaml`` (the build manifest and its digest)
and the provenance record beside it, puts every artifact into the store, and pushes the
recipe's DVC outputs to the default remote. Release version = ``<recipe version>.0.0``.

Refused when the tree differs from HEAD (other than ``dvc.lock`` and the release's own
records): the source commit must be exactly what was built. Releasing a recipe whose
release already exists is a *rebuild*: the digests are compared and the store filled, and
a different result is never written under the same version (drafts can be replaced on
request, published releases never).
"""

from __future__ import annotations

import getpass
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from commonforge import __version__
from commonforge.errors import ForgeError, InputError
from commonforge.machine import machine_info
from commonforge.settings import Settings
from pipelines.card import publish_cards
from pipelines.compare import compare_manifests
from pipelines.manifest import (
    build_manifest,
    comparable,
    dataset_names,
    evaluation_record,
    model_outputs,
    read_json,
    release_files,
)
from pipelines.stage import load_recipe, read_timings
from pipelines.workspace import Params, ensure_dvc_remote, head_commit, recipe_stages, run_dvc, tree_changes
from registry import Ref, Registry, Store
from registry.schema import BuildManifest, ProvenanceRecord, Recipe, Release, utc_now


def builder_name(root: Path) -> str:
    try:
        from pipelines.workspace import git_repo

        reader = git_repo(root).config_reader()
        name = reader.get_value("user", "name", default="")
        email = reader.get_value("user", "email", default="")
        if name:
            return f"{name} <{email}>" if email else str(name)
    except Exception:  # noqa: BLE001 - no git identity is fine: fall back to the login
        pass
    return getpass.getuser()


@dataclass
class ReleaseResult:
    release: Release
    path: Path | None  # the entry written; None when a rebuild confirmed an existing release
    confirmed: bool  # an identical release already existed (a rebuild)
    note: str
    statement: Path | None = None  # the builder's signed build statement, when a key was given


# (securesystemslib signer, trust.keys.KeyInfo) of whoever signs: loaded by the CLI from --key.
SignerPair = tuple[Any, Any]


def _draft_status(root: Path, release: Release) -> str:
    from trust.status import release_status

    return release_status(root, release).status


def fill_store(settings: Settings, root: Path, recipe: Recipe, manifest: BuildManifest) -> None:
    store = Store(settings.store_dir)
    for rel, src, _, _ in release_files(root, recipe):
        store.put_file(src, expected=manifest.artifact(rel).sha256)


def push_outputs(settings: Settings, root: Path, recipe: Recipe) -> None:
    """Push the recipe's DVC outputs (and its datasets') to the default remote."""
    ensure_dvc_remote(root, settings.dvc_remote)
    run_dvc(root, "push", "--quiet", "--with-deps", *recipe_stages(root, recipe.name), capture=True)


def _clean_head(root: Path, what: str, then: str) -> str:
    """git HEAD, refusing a tree that differs from it: the source commit must be exactly what was built."""
    changes = tree_changes(root)
    if changes:
        shown = "\n  ".join(changes[:20])
        raise InputError(f"the tree differs from HEAD, so no commit describes this {what}:\n  {shown}",
                         hint=f"commit (or stash) these changes, {then}")
    return head_commit(root)


def _existing(root: Path, reg: Registry, manifest: BuildManifest, *, replace_draft: bool, what: str,
              new_version: str) -> Release | None:
    """The release already under the manifest's name and version when this result is identical to it.

    None when there is none, or a draft that ``replace_draft`` may replace; a different result is
    refused (a release is never rewritten, a vouched-for one never replaced).
    """
    ref = Ref("model", manifest.name, manifest.version)
    if not reg.entry_path(ref).is_file():
        return None
    existing = reg.release(str(ref))
    if comparable(existing.manifest) == comparable(manifest):
        return existing
    status = _draft_status(root, existing)
    if not replace_draft or status != "draft":
        diff = compare_manifests(existing.manifest, manifest)
        raise ForgeError(
            f"{existing.ref} ({status}) exists and this {what} differs from it:\n  " + "\n  ".join(diff.lines()[:15]),
            hint=new_version + ("; or pass --replace-draft to replace the draft" if status == "draft" else ""),
        )
    return None


def release(settings: Settings, recipe_name: str, *, replace_draft: bool = False, push: bool = True,
            signer: SignerPair | None = None) -> ReleaseResult:
    """Write the release of a built recipe: entry, store, records, card; with ``signer``, a build statement.

    The build statement ties the release to its builder's key, so that a rebuild can be shown
    to come from another party (``docs/trust.md``). Without one the release is still written
    (a draft no policy can publish until someone signs ``commonforge attest build``).
    """
    root = settings.root
    params = Params.load(root)
    recipe = load_recipe(root, recipe_name if "/" in recipe_name else params.recipe_ref(recipe_name))
    commit = _clean_head(root, "build", "rebuild, then release; only dvc.lock and the release's own records may differ")
    manifest = build_manifest(root, recipe, commit)
    reg = Registry(root)
    existing = _existing(root, reg, manifest, replace_draft=replace_draft, what="build",
                         new_version="make a new recipe version for a new model")
    if existing is not None:
        fill_store(settings, root, recipe, existing.manifest)
        if push:
            push_outputs(settings, root, recipe)
        released_from = existing.manifest.source_commit
        # it matches a manifest built from a recipe, so it is a built release: those name their commit
        assert released_from is not None, "a built release names its source commit"
        same = "" if released_from == commit else f" (built at {commit[:12]}, released from {released_from[:12]})"
        return ReleaseResult(existing, None, True,
                             f"rebuild of {existing.ref} is identical{same}; the store now holds its artifacts")
    new = Release.from_manifest(manifest)
    fill_store(settings, root, recipe, manifest)
    if push:
        push_outputs(settings, root, recipe)
    path = reg.save_release(new, replace_draft=replace_draft)
    run_info = read_json(model_outputs(root, recipe).run_info) or {}
    timings = read_timings(root, recipe.name)
    for dname in dataset_names(manifest):
        for stage, seconds in read_timings(root, dname).items():
            timings[f"{stage}@{dname}"] = seconds
    prov = ProvenanceRecord(
        release_digest=new.release_digest,
        built_by=builder_name(root),
        created_at=utc_now(),
        machine=machine_info() | {"cpu_capability": run_info.get("cpu_capability", "unknown")},
        stage_seconds=timings,
        mlflow_run_id=run_info.get("mlflow_run_id"),
        forge_version=__version__,
    )
    reg.save_record(new, "provenance", prov)
    # The evaluation results and the card are records beside the release (never in the manifest).
    evaluation = evaluation_record(root, recipe, new.release_digest)  # None when the recipe was not evaluated
    if evaluation is not None:
        reg.save_record(new, "evals", evaluation)
    reg.save_record(new, "card", publish_cards(root, recipe, new, prov, evaluation))
    statement = None
    if signer is not None:
        from trust.status import attest_build

        statement = attest_build(root, new, signer[0], signer[1], machine=prov.machine)
    return ReleaseResult(new, path, False, f"released {new.ref} (draft) sha256:{new.release_digest}", statement)


def check_conversion_tree(root: Path) -> None:
    """Refuse a dirty tree before converting (minutes for a real model), as release_conversion would after."""
    _clean_head(root, "conversion", "convert again, then release")


def release_conversion(settings: Settings, ref: str, *, replace_draft: bool = False,
                       signer: SignerPair | None = None) -> ReleaseResult:
    """Write the release of a finished conversion (``pipelines.convert``): entry, store, records, card.

    The same rules as :func:`release`: a clean tree (the source commit is what converted it), an
    identical re-conversion only confirms the existing release, a different one never replaces a
    release anybody vouched for. Nothing is pushed to DVC: a conversion's input is a pinned
    artifact anyone can fetch, and its outputs are in the store.
    """
    from pipelines.convert import checkpoint_label, conversion_manifest, conversion_outputs, load_conversion
    from pipelines.convert import release_files as conversion_files

    root = settings.root
    conversion = load_conversion(root, ref)
    commit = _clean_head(root, "conversion", "convert again, then release")
    manifest = conversion_manifest(root, conversion, commit)
    store = Store(settings.store_dir)

    def fill(m: BuildManifest) -> None:
        for rel, src, _ in conversion_files(root, conversion):
            store.put_file(src, expected=m.artifact(rel).sha256)

    reg = Registry(root)
    existing = _existing(root, reg, manifest, replace_draft=replace_draft, what="conversion",
                         new_version="make a new conversion version")
    if existing is not None:
        fill(existing.manifest)
        return ReleaseResult(existing, None, True,
                             f"re-conversion of {existing.ref} is identical; the store now holds its artifacts")
    new = Release.from_manifest(manifest)
    fill(manifest)
    path = reg.save_release(new, replace_draft=replace_draft)
    timings = read_timings(root, conversion.name)
    prov = ProvenanceRecord(
        release_digest=new.release_digest,
        built_by=builder_name(root),
        created_at=utc_now(),
        machine=machine_info(),
        stage_seconds=timings,
        forge_version=__version__,
        imported_from=checkpoint_label(conversion),
    )
    reg.save_record(new, "provenance", prov)
    out = conversion_outputs(root, conversion.name)
    evaluation = _conversion_evaluation(out.dir / "eval" / "results.json", new.release_digest)
    if evaluation is not None:
        reg.save_record(new, "evals", evaluation)
    from pipelines.card import draft_card

    reg.save_record(new, "card", draft_card(root, new, store_dir=settings.store_dir))
    statement = None
    if signer is not None:
        from trust.status import attest_build

        statement = attest_build(root, new, signer[0], signer[1], machine=prov.machine)
    return ReleaseResult(new, path, False, f"released {new.ref} (draft, converted) sha256:{new.release_digest}",
                         statement)


def _conversion_evaluation(path: Path, release_digest: str):
    if not path.is_file():
        return None
    from evals.record import load_results, to_record

    return to_record(load_results(path), release_digest, utc_now())
