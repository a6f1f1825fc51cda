"""Stage ``card``: the model card and dataset cards of a recipe's build; and publishing them.

    python -m pipelines.card recipe/forge-small@1

The stage renders, from the build outputs and the *prospective* build manifest (the one
``commonforge release`` would record if it released this build from git HEAD):

    build/models/<recipe>/card/README.md                              the model card
    build/models/<recipe>/card/loss.png                               its loss curve
    build/models/<recipe>/card/datasets/<name>/<version>/README.md    a card per dataset it trains on

It reads ``build/models/<recipe>/eval/results.json`` when the evaluate stage wrote one, and
says "not evaluated yet" when not. The release step calls :func:`publish_cards`, which renders
the card of the actual release into ``model_cards/published/<name>/<version>/`` and its
datasets' cards into ``model_cards/published/datasets/<name>/<version>/`` and returns the
:class:`~registry.schema.CardRecord` to save beside the release; the release step of a
conversion calls :func:`draft_card` instead. :func:`render_registered_card` renders a card for
any release in the registry (imported and converted ones too) from what the checkout has;
``commonforge card`` prints it.

Build outputs are used only when they are this release's: the build's weights must hash to
the release's ``model.safetensors``, a dataset's stats.json must name the release's split
digests, and a conversion's convert.json must name the release's conversion and checkpoint.
Nothing else in a card depends on the machine or the clock.
"""

from __future__ import annotations

import csv
import json
import logging
import shutil
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from commonforge.errors import ForgeError, InputError
from model_cards import (
    BuildOutputs,
    DatasetInputs,
    ModelCardInputs,
    TrainingLog,
    loss_curve_png,
    render_dataset_card,
    render_model_card,
)
from pipelines.manifest import (
    build_manifest,
    dataset_outputs,
    evaluation_record,
    model_outputs,
    read_json,
    source_commit,
)
from pipelines.stage import load_recipe, stage_cli
from registry import Ref, Registry, Store
from registry.digest import sha256_bytes, sha256_file
from registry.fsutil import atomic_write_bytes, fsync_dir
from registry.schema import CardRecord, EvaluationRecord, ProvenanceRecord, Recipe, Release, SplitDigest, SplitName, utc_now

if TYPE_CHECKING:
    from registry.schema import Conversion

log = logging.getLogger(__name__)

PUBLISHED = Path("model_cards") / "published"
README = "README.md"
LOSS_IMAGE = "loss.png"


@dataclass
class RenderedCard:
    """A rendered model card and the files that go beside it."""

    release: Release
    markdown: str
    images: dict[str, bytes] = field(default_factory=dict)  # file name beside the card -> PNG bytes
    datasets: dict[str, str] = field(default_factory=dict)  # "<name>/<version>" -> dataset card markdown

    def files(self) -> dict[str, bytes]:
        """Relative path -> bytes of the model card and its images (images first: never a dangling link)."""
        return {**self.images, README: self.markdown.encode("utf-8")}


# --- reading the build ----------------------------------------------------------------------


def _csv_rows(path: Path) -> list[tuple[str, str]]:
    if not path.is_file():
        return []
    with open(path, encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f))
    return [(r[0], r[1]) for r in rows[1:] if len(r) >= 2]


def read_build_outputs(root: Path, recipe: Recipe) -> BuildOutputs:
    """Config, training metrics, wall time, quantization scores and losses of the recipe's build."""
    out = model_outputs(root, recipe)
    rows, val_rows = _csv_rows(out.loss_csv), _csv_rows(out.val_loss_csv)
    return BuildOutputs(
        config=read_json(out.config),
        metrics=read_json(out.train_metrics),
        run=read_json(out.run_info),
        quantize=read_json(out.quantize_summary),
        log=TrainingLog.from_rows(rows, val_rows) if rows else None,
    )


def build_matches(root: Path, recipe: Recipe, release: Release) -> bool:
    """Whether build/models/<recipe>/ holds this release's weights (so its logs describe it)."""
    weights = model_outputs(root, recipe).weights
    try:
        expected = release.manifest.artifact("model.safetensors").sha256
    except KeyError:
        return False
    return weights.is_file() and sha256_file(weights) == expected


def read_stats(root: Path, dataset_name: str, splits: Mapping[SplitName, SplitDigest] | None = None) -> dict | None:
    """build/datasets/<name>/stats.json, only if its split digests are ``splits``' (when given)."""
    stats = read_json(dataset_outputs(root, dataset_name).stats)
    if stats is None or splits is None:
        return stats
    recorded = {k: v.get("sha256") for k, v in (stats.get("splits") or {}).items()}
    wanted = {k: getattr(v, "sha256", None) for k, v in splits.items()}
    return stats if recorded == wanted else None


def _conversion_dir(root: Path, name: str) -> Path:
    """build/conversions/<name>/ (pipelines.convert.conversion_outputs, imported only when a card needs it)."""
    from pipelines.convert import conversion_outputs

    return conversion_outputs(root, name).dir


def read_checkpoint_record(root: Path, release: Release) -> Mapping[str, Any] | None:
    """The "checkpoint" part of build/conversions/<name>/convert.json (tensor types, GGUF metadata), only
    if that record names the conversion and checkpoint the release pins; None otherwise."""
    pin = release.manifest.conversion
    if pin is None:
        return None
    record = read_json(_conversion_dir(root, pin.name) / "convert.json")
    if not isinstance(record, dict) or record.get("conversion_sha256") != pin.sha256:
        return None
    checkpoint = record.get("checkpoint")
    if not isinstance(checkpoint, dict) or checkpoint.get("sha256") != pin.checkpoint_sha256:
        return None
    return checkpoint


def _conversion_config(root: Path, release: Release) -> dict | None:
    """The conversion's model/config.json, if it is the release's (same sha256 as its config.json)."""
    pin = release.manifest.conversion
    if pin is None:
        return None
    path = _conversion_dir(root, pin.name) / "model" / "config.json"
    try:
        expected = release.manifest.artifact("config.json").sha256
    except KeyError:
        return None
    if not path.is_file() or sha256_file(path) != expected:
        return None
    return read_json(path)


def _pinned_conversion(reg: Registry, release: Release, notes: list[str]) -> Conversion | None:
    """The conversion entry a converted release pins, if this checkout has it with the pinned digest."""
    pin = release.manifest.conversion
    if pin is None:
        return None
    try:
        conversion = reg.conversion(pin.ref)
    except ForgeError:
        notes.append(f"The conversion {pin.ref} is not in this checkout's registry.")
        return None
    if conversion.digest != pin.sha256:
        notes.append(f"The conversion entry {pin.ref} in this checkout does not match the digest the release pins "
                     f"({pin.sha256}); the card does not use it.")
        return None
    return conversion


# --- gathering the inputs -------------------------------------------------------------------


def _models_on(reg: Registry, dataset_ref: str, extra: Mapping[str, str]) -> list[str]:
    """Releases trained on a dataset (with their status), plus ``extra`` ref -> label."""
    from registry.lineage import derived_releases

    out: dict[str, str] = {}
    for ref in derived_releases(reg, dataset_ref):
        try:
            out[ref] = f"{ref} ({_status(reg.root, reg.release(ref)).status})"
        except ForgeError:
            out[ref] = f"{ref} (status unknown: its records do not load)"
    for ref, label in extra.items():
        out[ref] = label
    return [out[k] for k in sorted(out)]


def _status(root: Path, release: Release):
    """The release's verified status (trust.status), as every card shows it."""
    from trust.status import release_status

    return release_status(root, release)


def _gather(root: Path, reg: Registry, release: Release, recipe: Recipe | None, *, build: BuildOutputs,
            status: str, provenance: ProvenanceRecord | None, evaluation: EvaluationRecord | None,
            dataset_link: Callable[[str, str], str | None], image_name: str | None,
            self_label: str, notes: tuple[str, ...] = (), governance: Mapping | None = None,
            conversion: Conversion | None = None, checkpoint: Mapping[str, Any] | None = None) -> RenderedCard:
    datasets, dataset_cards = [], {}
    for d in release.manifest.datasets:
        ref = Ref.parse(d.ref)
        name, version = ref.name, str(ref.version)
        try:
            entry = reg.dataset(d.ref)
        except ForgeError:
            entry = None
        stats = read_stats(root, name, d.splits)
        datasets.append(DatasetInputs(ref=d.ref, dataset=entry, stats=stats,
                                      card_link=dataset_link(name, version) if entry else None))
        if entry is not None:
            dataset_cards[f"{name}/{version}"] = render_dataset_card(
                entry, stats, models=_models_on(reg, d.ref, {release.ref: self_label}), splits=d)
    images = {}
    if image_name and build.log is not None:
        images[image_name] = loss_curve_png(build.log, f"{release.manifest.name} {release.manifest.version}: loss")
    inputs = ModelCardInputs(release=release, recipe=recipe, datasets=tuple(datasets), provenance=provenance,
                             evaluation=evaluation, build=build, status=status,
                             loss_image=image_name if images else None, notes=notes,
                             governance=governance, governance_as_of=utc_now() if governance else None,
                             conversion=conversion, checkpoint=checkpoint)
    return RenderedCard(release, render_model_card(inputs), images, dataset_cards)


def render_build_card(root: Path, recipe: Recipe, commit: str) -> RenderedCard:
    """The card of the build in ``root/build`` as the release it would become at ``commit``."""
    release = Release.from_manifest(build_manifest(root, recipe, commit))
    return _gather(root, Registry(root), release, recipe, build=read_build_outputs(root, recipe),
                   status="prospective", provenance=None,
                   evaluation=evaluation_record(root, recipe, release.release_digest),
                   dataset_link=lambda n, v: f"datasets/{n}/{v}/{README}", image_name=LOSS_IMAGE,
                   self_label=f"{release.ref} (this build, not released yet)")


def _model_release(reg: Registry, ref: str) -> Release:
    """The release a ref names (a bare name resolves by verified status, like everywhere else)."""
    from trust.status import resolve

    parsed = Ref.parse(ref, default_kind="model")
    if parsed.kind != "model":
        raise InputError(f"{ref} is not a model release", hint="give a model ref, e.g. model/forge-small@1.0.0")
    release, _ = resolve(reg.root, parsed)
    return release


def render_registered_card(root: Path, ref: str, *, store_dir: Path | None = None,
                           image_name: str | None = None, governance: Mapping | None = None,
                           beside_card: bool = False) -> RenderedCard:
    """The card of a registered release, from the registry and whatever of its build this checkout has.

    Build outputs are used only if they are this release's; otherwise the architecture comes
    from the release's config.json in the store (``store_dir``, verified), else from the recipe.
    A converted release's card takes the conversion entry it pins (when its digest matches) and
    what its conversion recorded (build/conversions/<name>/, when it is this release's).
    Imported releases and releases without build outputs render too, saying what is unknown.
    With ``image_name``, the loss curve (when the build's logs are here) is drawn under that name.
    ``governance``: recorded in the card (a card rendered at publication); ``beside_card``: dataset
    links relative to model_cards/published/<name>/<version>/ (else to the repository root).
    """
    reg = Registry(root)
    return _registered_card(root, reg, _model_release(reg, ref), store_dir=store_dir, image_name=image_name,
                            governance=governance, beside_card=beside_card)


def _registered_card(root: Path, reg: Registry, release: Release, *, store_dir: Path | None,
                     image_name: str | None, governance: Mapping | None, beside_card: bool,
                     status: str | None = None) -> RenderedCard:
    m = release.manifest
    notes: list[str] = []
    recipe = None
    if m.recipe is not None:
        try:
            recipe = reg.recipe(m.recipe.ref)
        except ForgeError:
            notes.append(f"The recipe {m.recipe.ref} is not in this checkout's registry.")
        if recipe is not None and recipe.digest != m.recipe.sha256:
            notes.append(f"The recipe entry {m.recipe.ref} in this checkout does not match the digest the release pins "
                         f"({m.recipe.sha256}); the card does not use it.")
            recipe = None
    conversion = _pinned_conversion(reg, release, notes)
    build = BuildOutputs()
    converted_config = _conversion_config(root, release) if m.conversion is not None else None
    if recipe is not None and build_matches(root, recipe, release):
        build = read_build_outputs(root, recipe)
    elif converted_config is not None:
        build = BuildOutputs(config=converted_config,
                             config_source="the conversion's model/config.json (the release's, by its sha256)")
    else:
        config = _config_from_store(m, store_dir)
        if config is not None:
            build = BuildOutputs(config=config, config_source="the release's config.json (from the artifact store)")

    def link(name: str, version: str) -> str | None:
        path = PUBLISHED / "datasets" / name / version / README
        if not (root / path).is_file():
            return None
        return f"../../datasets/{name}/{version}/{README}" if beside_card else path.as_posix()

    status = status or _status(root, release).status
    return _gather(root, reg, release, recipe, build=build, status=status,
                   provenance=reg.provenance(release), evaluation=reg.evaluation(release), dataset_link=link,
                   image_name=image_name, self_label=f"{release.ref} ({status})", notes=tuple(notes),
                   governance=governance, conversion=conversion,
                   checkpoint=read_checkpoint_record(root, release) if conversion is not None else None)


def _config_from_store(manifest, store_dir: Path | None) -> dict | None:
    if store_dir is None:
        return None
    try:
        sha = manifest.artifact("config.json").sha256
    except KeyError:
        return None
    store = Store(store_dir)
    if not store.has(sha):
        return None
    return json.loads(store.path(sha, what="config.json").read_text(encoding="utf-8"))


# --- writing --------------------------------------------------------------------------------


def write_card_dir(dest: Path, card: RenderedCard) -> None:
    """Replace ``dest`` with the card, its images and its datasets' cards, as a whole."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{dest.name}-", dir=dest.parent))
    try:
        new = tmp / "new"
        for rel, data in card.files().items():
            atomic_write_bytes(new / rel, data)
        for key, text in card.datasets.items():
            atomic_write_bytes(new / "datasets" / key / README, text.encode("utf-8"))
        if dest.exists():
            dest.rename(tmp / "old")
        new.rename(dest)
        fsync_dir(dest.parent)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# The heading a card rendered at publication has (model_card.md.j2): such a card is never rewritten.
GOVERNANCE_HEADING = b"## Governance (as of publication)"


def publication_card(root: Path, release: Release, *, store_dir: Path | None = None) -> CardRecord:
    """Render a just-published release's card again, now recording its governance, and its record.

    From the build outputs where this checkout has the release's build (the card then matches
    the draft's but for the governance section and status), else from the registry and the
    store (``render_registered_card``: without training logs, which the card then says).
    """
    reg = Registry(root)
    m = release.manifest
    recipe = None
    if m.recipe is not None:
        try:
            recipe = reg.recipe(m.recipe.ref)
        except ForgeError:
            recipe = None
    if recipe is not None and build_matches(root, recipe, release):
        return publish_cards(root, recipe, release, reg.provenance(release), reg.evaluation(release))
    verified = _status(root, release)
    if verified.status != "published":
        raise ForgeError(f"{release.ref} is {verified.status}, not published: its card records no governance")
    card = render_registered_card(root, release.ref, store_dir=store_dir, image_name=LOSS_IMAGE,
                                  governance=verified.governance(), beside_card=True)
    dest = root / PUBLISHED / m.name / m.version
    readme = card.markdown.encode("utf-8")
    if (dest / README).is_file() and GOVERNANCE_HEADING in (dest / README).read_bytes():
        raise ForgeError(f"{release.ref}'s card was already rendered at publication; it is never rewritten")
    write_card_dir(dest, card)
    return CardRecord(release_digest=release.release_digest, path=(PUBLISHED / m.name / m.version / README).as_posix(),
                      sha256=sha256_bytes(readme), rendered_at=utc_now())


def draft_card(root: Path, release: Release, *, store_dir: Path | None = None) -> CardRecord:
    """Render a registered draft's card (no governance) into model_cards/published/<name>/<version>/.

    For releases the card stage did not render from a recipe's build: the release step of a
    conversion calls it once the release, its provenance and its evaluation are saved. The card
    comes from the registry (``render_registered_card``), the conversion's outputs and the store
    (``store_dir``); the folder is replaced as a whole. Returns the CardRecord to save beside the
    release. A card rendered at publication is never replaced.
    """
    root = Path(root)
    m = release.manifest
    if m.name == "datasets":
        raise InputError("a model named 'datasets' would collide with model_cards/published/datasets/",
                         hint="rename the conversion")
    reg = Registry(root)
    if not reg.entry_path(Ref("model", m.name, m.version)).is_file():
        raise InputError(f"{release.ref} is not in the registry, so it has no draft card yet",
                         hint="save the release first (the release step does)")
    status = _status(root, release).status
    if status != "draft":
        raise ForgeError(f"{release.ref} is {status}: a draft card would not say so",
                         hint=f"render it with `commonforge card {release.ref}`; a published card is "
                              "rendered at publication")
    dest = root / PUBLISHED / m.name / m.version
    if (dest / README).is_file() and GOVERNANCE_HEADING in (dest / README).read_bytes():
        raise ForgeError(f"{release.ref}'s card was rendered at publication; it is never rewritten",
                         hint="cards of published releases are fixed; a new card needs a new release")
    card = _registered_card(root, reg, release, store_dir=store_dir, image_name=LOSS_IMAGE, governance=None,
                            beside_card=True, status="draft")
    write_card_dir(dest, card)
    return CardRecord(release_digest=release.release_digest, path=(PUBLISHED / m.name / m.version / README).as_posix(),
                      sha256=sha256_bytes(card.markdown.encode("utf-8")), rendered_at=utc_now())


def publish_cards(root: Path, recipe: Recipe, release: Release, provenance: ProvenanceRecord | None,
                  evaluation: EvaluationRecord | None) -> CardRecord:
    """Render the release's card into model_cards/published/<name>/<version>/ and its datasets' cards.

    Called by the release step once the release (and its provenance) exist. Every file is
    written atomically; a published release's card is never rewritten with different bytes.
    Returns the CardRecord to save beside the release (``reg.save_record(release, "card", record)``).
    """
    root = Path(root)
    m = release.manifest
    if m.name == "datasets":
        raise InputError("a model named 'datasets' would collide with model_cards/published/datasets/",
                         hint="rename the recipe")
    reg = Registry(root)
    if build_matches(root, recipe, release):
        build = read_build_outputs(root, recipe)
    else:
        log.warning("build/models/%s does not hold %s's weights: its card leaves out the training logs",
                    recipe.name, release.ref)
        build = BuildOutputs()
    registered = reg.entry_path(Ref("model", m.name, m.version)).is_file()
    verified = _status(root, release) if registered else None
    status = verified.status if verified else "draft"
    governance = verified.governance() if verified is not None and status == "published" else None
    card = _gather(root, reg, release, recipe, build=build, status=status, provenance=provenance,
                   evaluation=evaluation, dataset_link=lambda n, v: f"../../datasets/{n}/{v}/{README}",
                   image_name=LOSS_IMAGE, self_label=f"{release.ref} ({status})", governance=governance)
    dest = root / PUBLISHED / m.name / m.version
    readme = card.markdown.encode("utf-8")
    if (dest / README).is_file() and GOVERNANCE_HEADING in (dest / README).read_bytes() \
            and (dest / README).read_bytes() != readme:
        raise ForgeError(f"{release.ref}'s card was rendered at publication; a published card is never rewritten",
                         hint="cards of published releases are fixed; a new card needs a new release")
    for rel, data in card.files().items():
        atomic_write_bytes(dest / rel, data)
    for key, text in card.datasets.items():
        atomic_write_bytes(root / PUBLISHED / "datasets" / key / README, text.encode("utf-8"))
    return CardRecord(release_digest=release.release_digest,
                      path=(PUBLISHED / m.name / m.version / README).as_posix(),
                      sha256=sha256_bytes(readme), rendered_at=utc_now())


def republish_card(root: Path, ref: str, *, store_dir: Path | None = None) -> tuple[Release, CardRecord]:
    """Render a registered release's published card again (after a template fix) and save its card record.

    Only drafts: :func:`publish_cards` refuses to rewrite a published release's card with
    different bytes. Needs the recipe the release pins; the build's logs are used when this
    checkout holds the release's own build outputs. A converted draft's card is rendered by
    :func:`draft_card` (from the registry, its conversion's outputs and ``store_dir``).
    """
    reg = Registry(root)
    release = _model_release(reg, ref)
    m = release.manifest
    if m.conversion is not None:
        record = draft_card(root, release, store_dir=store_dir)
        reg.save_record(release, "card", record)
        return release, record
    if m.recipe is None:
        raise InputError(f"{release.ref} was not built by the forge, so it has no published card",
                         hint=f"print its card with: commonforge card {release.ref}")
    recipe = reg.recipe(m.recipe.ref)
    if recipe.digest != m.recipe.sha256:
        raise InputError(f"the recipe entry {m.recipe.ref} does not match the digest {release.ref} pins",
                         hint="check out the commit the release was built from")
    record = publish_cards(root, recipe, release, reg.provenance(release), reg.evaluation(release))
    reg.save_record(release, "card", record)
    return release, record


# --- the stage ------------------------------------------------------------------------------


def main(ref: str, root: Path) -> Path:
    recipe = load_recipe(root, ref)
    card = render_build_card(root, recipe, source_commit(root))
    dest = model_outputs(root, recipe).card
    write_card_dir(dest, card)
    return dest / README


def cli(argv: list[str] | None = None) -> None:
    stage_cli("card", __doc__, main, argv)


if __name__ == "__main__":
    cli()
