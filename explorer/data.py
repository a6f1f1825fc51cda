"""Reading what the explorer shows: releases, their records and summaries, datasets.

Every function here is read-only and Streamlit-free. Problems that belong on the page (a
record naming another build, a missing build output, a store without the release's files)
come back as values, never as exceptions from the listing functions; functions that look up
one thing by ref raise :class:`~commonforge.errors.ForgeError` with a hint, and the page
shows it.

    forge = Forge.load(root)                         paths of one checkout (explorer.checkout)
    summaries = release_summaries(forge)            every release, with status, scores, size
    find_release(forge.registry(), "model/x@1")     a Release, or a ForgeError saying why not
    locate_release(forge, "model/x@1")              (the layer's Forge, the Release): checkout, then user registry

The explorer sees the registry layers the read-only commands see (``registry.layers``): the
checkout's releases, then the user registry's (pulled releases), each read from its own layer
(records, status, store) and marked with it (``ReleaseSummary.layer``).

Build outputs and MLflow runs are read in :mod:`explorer.outputs`, cards in :mod:`explorer.cards`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from commonforge.errors import ForgeError, InputError
from explorer.checkout import Forge
from explorer.outputs import (
    BuildOutputs,
    DatasetBuildInfo,
    MlflowRun,
    build_outputs,
    dataset_outputs,
    mlflow_run,
)
from model_cards.shape import ModelShape
from registry import Registry
from registry.architecture import transformers_config
from registry.lineage import Graph
from registry.refs import Ref, version_key
from registry.schema import (
    CardRecord,
    Dataset,
    EvaluationRecord,
    ProvenanceRecord,
    Recipe,
    Release,
)
from trust.statements import RebuildPredicate
from trust.status import ReleaseStatus, locate, release_status, resolve

# --- looking things up by ref -----------------------------------------------------------------


def find_release(reg: Registry, text: str | None) -> Release:
    """The release a page's ``?ref=`` names in ``reg`` (a bare name resolves like the CLI does)."""
    release, _ = resolve(reg.root, _release_ref(text))
    return release


def find_dataset(reg: Registry, text: str | None) -> Dataset:
    if not text:
        raise InputError("no dataset chosen", hint="pick one below, or add ?ref=dataset/NAME@VERSION")
    ref = Ref.parse(text, default_kind="dataset")
    if ref.kind != "dataset":
        raise InputError(f"{text} is a {ref.kind}, not a dataset",
                         hint="models open on the Model page" if ref.kind == "model" else None)
    entry = reg.resolve(ref, kind="dataset")
    assert isinstance(entry, Dataset)
    return entry


def release_refs(reg: Registry) -> list[str]:
    """Every release ref on disk, newest version of each name first."""
    refs = reg.refs("model")
    return [str(r) for r in sorted(refs, key=lambda r: (r.name, [-p for p in version_key(r.version or "0")]))]


def _release_ref(text: str | None) -> Ref:
    if not text:
        raise InputError("no release chosen", hint="pick one on the Models page, or add ?ref=model/NAME@VERSION")
    ref = Ref.parse(text, default_kind="model")
    if ref.kind != "model":
        raise InputError(f"{text} is a {ref.kind}, not a model release",
                         hint="datasets open on the Dataset page" if ref.kind == "dataset" else
                         "recipes are shown on the page of the releases built from them")
    return ref


def locate_release(forge: Forge, text: str | None) -> tuple[Forge, Release]:
    """The release a page's ``?ref=`` names and the layer it is in: the checkout first, then the
    user registry (``trust.status.locate``, as ``commonforge show`` finds it)."""
    release, status = locate(forge.root, _release_ref(text))
    return forge.at(status.root if status.root is not None else forge.root), release


def layered_release_refs(forge: Forge) -> list[str]:
    """Every release ref in the checkout, then those only the user registry has (what the pickers offer)."""
    seen: dict[str, None] = {}
    for layer in forge.layers():
        seen.update(dict.fromkeys(release_refs(layer.registry())))
    return list(seen)


def dataset_refs(reg: Registry) -> list[str]:
    return [str(r) for r in reg.refs("dataset")]


# --- one release, summarized ------------------------------------------------------------------


@dataclass(frozen=True)
class Rebuild:
    """One signed rebuild statement, counted or not."""

    result: str  # identical | different
    by: str  # the signer's name and affiliation (a keyid where the key is not in the policy)
    where: str  # the rebuilding machine's hostname (and CPU where recorded)
    when: str
    first_differing_stage: str | None
    differences: tuple[str, ...]
    environment_differences: tuple[str, ...]
    not_counted: str | None = None  # why the policy does not count it (None: counted)


@dataclass(frozen=True)
class Score:
    variant: str
    task: str
    metric: str
    value: float
    stderr: float | None
    items: int
    chance: float | None
    subset: str

    @property
    def label(self) -> str:
        return f"{self.task} {self.metric}" + ("" if self.subset == "all" else " (clean)")


@dataclass(frozen=True)
class ReleaseSummary:
    ref: str
    name: str
    version: str
    digest: str
    status: str  # draft | published | revoked
    provenance: str  # built | imported
    license: str
    title: str  # the recipe's title ("" for imports)
    description: str
    recipe: str | None
    datasets: tuple[str, ...]
    base_model: str | None
    variants: tuple[str, ...]
    weights_bytes: int  # full-precision files (weights, config, tokenizer)
    total_bytes: int  # every artifact, variants included
    parameters: int | None
    reproducibility: str  # a one-line verdict from the signed rebuild statements
    rebuilds: tuple[Rebuild, ...]
    scores: tuple[Score, ...]  # every evaluation result (empty: not evaluated)
    headline: tuple[tuple[str, float], ...]  # (label, value) of the full model, one per task
    evaluated: bool
    has_card: bool
    created_at: str | None
    built_by: str | None
    problems: tuple[str, ...]  # records that could not be read, and why
    # Governance computed when viewed (trust.status.ReleaseStatus.governance(): who approved,
    # rebuilt, published or revoked, the policy version, what a draft still needs).
    governance: dict = field(default_factory=dict)
    layer: str = "checkout"  # the registry layer it is in: "checkout" | "user registry" (registry.layers)

    @property
    def reproduced(self) -> bool:
        """At least one counted rebuild, and every counted one identical."""
        counted = [r for r in self.rebuilds if r.not_counted is None]
        return bool(counted) and all(r.result == "identical" for r in counted)

    def text(self) -> str:
        """What the Models page's search looks in."""
        return " ".join([self.ref, self.title, self.description, self.license, self.recipe or "",
                         *self.datasets, self.status, self.provenance]).lower()


def _safe(problems: list[str], what: str, fn):
    try:
        return fn()
    except ForgeError as err:
        problems.append(f"{what}: {err.message}")
    except Exception as err:  # a malformed record must not take the page down
        problems.append(f"{what}: {type(err).__name__}: {err}")
    return None


def rebuild_rows(status: ReleaseStatus | None) -> tuple[Rebuild, ...]:
    """The release's signed rebuild statements, oldest first, with why any does not count."""
    rows = []
    for who, statement, why in sorted(status.rebuild_log if status else [], key=lambda e: e[1].predicate.signed_at):
        pred = statement.predicate
        assert isinstance(pred, RebuildPredicate)
        where = pred.machine.get("hostname", "unknown machine")
        if pred.machine.get("cpu"):
            where += f" ({pred.machine['cpu']})"
        rows.append(Rebuild(pred.result, who, where, pred.signed_at, pred.first_differing_stage, (),
                            tuple(pred.environment_differences), why))
    return tuple(rows)


def reproducibility_verdict(provenance: str, rebuilds: tuple[Rebuild, ...]) -> str:
    """One line from the signed rebuild statements that count (the others are listed, not believed)."""
    if provenance == "imported":
        return "imported: never reproducible"
    if provenance == "finetuned":
        return "private fine-tune: only its owner, who has the data, can rebuild it"
    counted = [r for r in rebuilds if r.not_counted is None]
    if not counted:
        return "not rebuilt yet" if not rebuilds else f"no counted rebuild ({len(rebuilds)} not counted)"
    differ = [r for r in counted if r.result != "identical"]
    if not differ:
        hosts = sorted({r.where.split(" (")[0] for r in counted})
        return f"rebuilt identical ×{len(counted)} ({', '.join(hosts)})"
    return f"rebuild differed ({len(differ)} of {len(counted)}; first at {differ[0].first_differing_stage or 'inputs'})"


def scores_of(record: EvaluationRecord | None) -> tuple[Score, ...]:
    if record is None:
        return ()
    return tuple(Score(r.variant, r.task, r.metric, r.value, r.stderr, r.items, r.chance, r.subset)
                 for r in record.results)


def headline_scores(scores: tuple[Score, ...]) -> tuple[tuple[str, float], ...]:
    """The full model's first metric of each task on all items: what the Models table shows."""
    seen: dict[str, tuple[str, float]] = {}
    for s in scores:
        if s.variant == "full" and s.subset == "all" and s.task not in seen:
            seen[s.task] = (f"{s.task} {s.metric}", s.value)
    return tuple(seen.values())


def model_config(forge: Forge, release: Release) -> dict | None:
    """The release's config.json, read from the store after checking its digest; None when absent."""
    try:
        a = release.manifest.artifact("config.json")
    except KeyError:
        return None
    store = forge.store()
    if not store.has(a.sha256):
        return None
    path = store.path(a.sha256, what=f"{release.ref}:config.json")
    return json.loads(path.read_text(encoding="utf-8"))


def release_config(forge: Forge, reg: Registry, release: Release) -> tuple[dict | None, str]:
    """(config, where it came from): the stored config.json, else the recipe's architecture."""
    try:
        config = model_config(forge, release)
    except ForgeError:
        config = None
    if config is not None:
        return config, "config.json (verified against the manifest)"
    if release.manifest.recipe is not None:
        try:
            return (transformers_config(reg.recipe(release.manifest.recipe.ref)),
                    "the recipe (config.json is not in the local store)")
        except ForgeError:
            pass
    return None, "neither config.json nor a recipe is available"


def summarize(forge: Forge, reg: Registry, release: Release) -> ReleaseSummary:
    m = release.manifest
    problems: list[str] = []
    verified: ReleaseStatus | None = _safe(problems, "status", lambda: release_status(reg.root, release))
    status = verified.status if verified else "draft"
    prov: ProvenanceRecord | None = _safe(problems, "provenance record", lambda: reg.provenance(release))
    evals: EvaluationRecord | None = _safe(problems, "evaluation record", lambda: reg.evaluation(release))
    card: CardRecord | None = _safe(problems, "card record", lambda: reg.card(release))
    rebuilds = rebuild_rows(verified)
    recipe: Recipe | None = None
    if m.recipe is not None:
        recipe = _safe(problems, m.recipe.ref, lambda: reg.recipe(m.recipe.ref))
    config, _ = release_config(forge, reg, release)
    parameters = ModelShape.from_config(config).total if config else None
    scores = scores_of(evals)
    return ReleaseSummary(
        ref=release.ref, name=release.name, version=release.version, digest=release.release_digest,
        status=status, provenance=m.provenance, license=m.license,
        title=recipe.title if recipe else "", description=recipe.description if recipe else "",
        recipe=m.recipe.ref if m.recipe else None, datasets=tuple(d.ref for d in m.datasets),
        base_model=m.base_model, variants=tuple(m.variants()),
        weights_bytes=sum(a.size for a in m.artifacts if a.variant is None),
        total_bytes=sum(a.size for a in m.artifacts), parameters=parameters,
        reproducibility=reproducibility_verdict(m.provenance, rebuilds), rebuilds=rebuilds,
        scores=scores, headline=headline_scores(scores), evaluated=evals is not None,
        has_card=card is not None, created_at=prov.created_at if prov else None,
        built_by=prov.built_by if prov else None, problems=tuple(problems),
        governance=verified.governance() if verified else {}, layer=forge.layer,
    )


@dataclass(frozen=True)
class Listing:
    releases: tuple[ReleaseSummary, ...]
    broken: tuple[tuple[str, str], ...]  # (ref, why) of entries that could not be read
    datasets: int
    recipes: int


def release_summaries(forge: Forge) -> Listing:
    """Every release in the checkout, then in the user registry, each read from its own layer (a
    broken entry is listed with its error, not raised). A ref both layers hold is listed once, from
    the checkout: the one its page opens (``locate_release``)."""
    out, broken, seen = [], [], set()
    datasets: set[str] = set()
    recipes: set[str] = set()
    for layer in forge.layers():
        reg = layer.registry()
        datasets.update(map(str, reg.refs("dataset")))
        recipes.update(map(str, reg.refs("recipe")))
        for ref in release_refs(reg):
            if ref in seen:
                continue
            seen.add(ref)
            try:
                out.append(summarize(layer, reg, reg.release(ref)))
            except ForgeError as err:
                broken.append((ref, str(err)))
            except Exception as err:  # malformed YAML, schema errors
                broken.append((ref, f"{type(err).__name__}: {err}"))
    return Listing(tuple(out), tuple(broken), len(datasets), len(recipes))


# --- datasets -----------------------------------------------------------------------------


def trained_on(reg: Registry, dataset_ref: str) -> list[str]:
    """Releases whose lineage includes the dataset."""
    from registry.lineage import derived_releases

    try:
        return derived_releases(reg, dataset_ref)
    except ForgeError:
        return []


def split_users(reg: Registry, dataset_ref: str) -> dict[str, dict[str, str]]:
    """release ref -> {split: sha256} the release's manifest recorded for this dataset."""
    out = {}
    for ref in release_refs(reg):
        try:
            rel = reg.release(ref)
        except Exception:
            continue
        for d in rel.manifest.datasets:
            if d.ref == dataset_ref:
                out[ref] = {str(s): v.sha256 for s, v in d.splits.items()}
    return out


def reverify(forge: Forge, artifacts) -> list[tuple[str, str]]:
    """(path, "ok" | "missing" | "corrupt") for each artifact, re-hashed in the store (read-only)."""
    return [(c.artifact.path, c.status) for c in forge.store().check_artifacts(artifacts)]


# --- one release, everything the Model page shows ------------------------------------------------


@dataclass(frozen=True)
class ReleaseDetail:
    release: Release
    summary: ReleaseSummary
    recipe: Recipe | None
    provenance: ProvenanceRecord | None
    evaluation: EvaluationRecord | None
    config: dict | None
    config_source: str
    build: BuildOutputs | None
    mlflow: MlflowRun | None
    lineage: Graph | None  # the lineage around this release (None: it could not be built)
    in_store: dict[str, bool]  # artifact sha256 -> object present (not re-hashed)
    stages: tuple[str, ...]  # the recipe's DVC stages, for the reproduce commands
    derived: tuple[str, ...]  # releases built on this one (base_model)
    forge: Forge  # the layer it was read from (the checkout, or the user registry and its store)


def _recipe_stages(root: Path, recipe_name: str) -> tuple[str, ...]:
    try:
        from pipelines.workspace import recipe_stages

        return tuple(recipe_stages(root, recipe_name))
    except Exception:  # no dvc.yaml in this checkout: the commands still work without the list
        return ()


def release_detail(forge: Forge, ref: str) -> ReleaseDetail:
    """Everything about one release, read from the layer it is in (its records, status and store);
    raises ForgeError when the ref names none in either layer."""
    from registry.lineage import lineage_graph

    forge, release = locate_release(forge, ref)
    reg = forge.registry()
    summary = summarize(forge, reg, release)
    problems: list[str] = []
    m = release.manifest
    recipe = _safe(problems, "recipe", lambda: reg.recipe(m.recipe.ref)) if m.recipe else None
    provenance = _safe(problems, "provenance", lambda: reg.provenance(release))
    evaluation = _safe(problems, "evaluation", lambda: reg.evaluation(release))
    config, config_source = release_config(forge, reg, release)
    graph = _safe(problems, "lineage", lambda: lineage_graph(reg, around=release.ref))
    store = forge.store()
    in_store = {a.sha256: store.has(a.sha256) for a in m.artifacts}
    recipe_name = Ref.parse(m.recipe.ref).name if m.recipe else None
    derived = tuple(sorted(n for n in (graph.downstream(release.ref) if graph else ())
                           if graph.nodes[n].kind == "model"))
    return ReleaseDetail(
        release=release, summary=summary, recipe=recipe, provenance=provenance, evaluation=evaluation,
        config=config, config_source=config_source, build=build_outputs(forge, release),
        mlflow=mlflow_run(forge.mlflow_uri, provenance.mlflow_run_id if provenance else None),
        lineage=graph, in_store=in_store, stages=_recipe_stages(forge.root, recipe_name) if recipe_name else (),
        derived=derived, forge=forge,
    )


@dataclass(frozen=True)
class DatasetDetail:
    dataset: Dataset
    build: DatasetBuildInfo
    trained_on: tuple[str, ...]
    split_users: dict[str, dict[str, str]]
    lineage: Graph | None


def dataset_detail(forge: Forge, ref: str) -> DatasetDetail:
    from registry.lineage import lineage_graph

    reg = forge.registry()
    dataset = find_dataset(reg, ref)
    try:
        graph = lineage_graph(reg, around=dataset.ref)
    except Exception:
        graph = None
    return DatasetDetail(dataset, dataset_outputs(forge, dataset), tuple(trained_on(reg, dataset.ref)),
                         split_users(reg, dataset.ref), graph)
