"""Reading what the explorer shows: releases and their records, build outputs, MLflow runs.

Every function here is read-only and Streamlit-free. Problems that belong on the page (a
record naming another build, a missing build output, a store without the release's files)
come back as values, never as exceptions from the listing functions; functions that look up
one thing by ref raise :class:`~commonforge.errors.ForgeError` with a hint, and the page
shows it.

    forge = Forge.load(root)                         paths of one checkout
    summaries = release_summaries(forge)            every release, with status, scores, size
    find_release(forge.registry(), "model/x@1")     a Release, or a ForgeError saying why not
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

from commonforge.errors import ForgeError, InputError, NotFoundError
from commonforge.settings import ENTRIES_DIR, Settings
from registry import Registry, Store
from registry.digest import sha256_file
from registry.refs import Ref
from registry.schema import (
    CardRecord,
    Dataset,
    EvaluationRecord,
    ProvenanceRecord,
    RebuildRecord,
    Recipe,
    Release,
)

# Files under build/models/<recipe>/ that the explorer reads (see pipelines.train / quantize).
TRAIN_LOSS = ("train", "loss.csv")
VAL_LOSS = ("train", "val_loss.csv")
TRAIN_METRICS = ("train", "metrics.json")
QUANTIZE_SUMMARY = ("quantize.json",)


# --- the checkout ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Forge:
    """The paths of one checkout the explorer reads (hashable: a cache key)."""

    root: Path
    store_dir: Path
    mlflow_uri: str
    cache_dir: Path  # the explorer's own derived files (search indexes); never the registry

    @classmethod
    def load(cls, root: Path | str | None = None) -> Forge:
        """Resolve a checkout like the CLI does (``COMMONFORGE_ROOT`` or the cwd when ``root`` is None)."""
        if root is not None:
            root = Path(root).resolve()
            if not (root / ENTRIES_DIR).is_dir():
                raise InputError(
                    f"{root} is not a commonforge checkout (it has no {ENTRIES_DIR} directory)",
                    hint="start the explorer with --root pointing at your clone",
                )
        settings = Settings.load(root)
        cache = os.environ.get("COMMONFORGE_EXPLORER_CACHE")
        return cls(
            root=settings.root,
            store_dir=settings.store_dir,
            mlflow_uri=settings.mlflow_uri,
            cache_dir=Path(cache).resolve() if cache else settings.state_dir / "explorer",
        )

    def registry(self) -> Registry:
        return Registry(self.root)

    def store(self) -> Store:
        return Store(self.store_dir)

    @property
    def entries_dir(self) -> Path:
        return self.root / ENTRIES_DIR

    def fingerprint(self) -> str:
        """Changes whenever a file under registry/entries or a rendered card changes: a cache key."""
        h = hashlib.sha256(f"{self.root}\0{self.store_dir}\0{self.mlflow_uri}".encode())
        for base in (self.entries_dir, self.root / "model_cards" / "published"):
            if not base.is_dir():
                continue
            for dirpath, dirnames, filenames in os.walk(base):
                dirnames.sort()
                for name in sorted(filenames):
                    p = os.path.join(dirpath, name)
                    try:
                        st = os.stat(p)
                    except OSError:
                        continue
                    h.update(f"{p}\0{st.st_mtime_ns}\0{st.st_size}\n".encode())
        return h.hexdigest()


# --- looking things up by ref -----------------------------------------------------------------


def find_release(reg: Registry, text: str | None) -> Release:
    """The release a page's ``?ref=`` names (a bare name resolves like the CLI does)."""
    if not text:
        raise InputError("no release chosen", hint="pick one on the Models page, or add ?ref=model/NAME@VERSION")
    ref = Ref.parse(text, default_kind="model")
    if ref.kind != "model":
        raise InputError(f"{text} is a {ref.kind}, not a model release",
                         hint="datasets open on the Dataset page" if ref.kind == "dataset" else
                         "recipes are shown on the page of the releases built from them")
    entry = reg.resolve(ref)
    assert isinstance(entry, Release)
    return entry


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
    return [str(r) for r in sorted(refs, key=lambda r: (r.name, [-int(p) for p in r.version.split(".")]))]


def dataset_refs(reg: Registry) -> list[str]:
    return [str(r) for r in reg.refs("dataset")]


# --- one release, summarized ------------------------------------------------------------------


@dataclass(frozen=True)
class Rebuild:
    result: str  # identical | different
    by: str
    where: str  # the rebuilding machine's hostname (and CPU where recorded)
    when: str
    first_differing_stage: str | None
    differences: tuple[str, ...]
    environment_differences: tuple[str, ...]


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
    reproducibility: str  # a one-line verdict from the rebuild records
    rebuilds: tuple[Rebuild, ...]
    scores: tuple[Score, ...]  # every evaluation result (empty: not evaluated)
    headline: tuple[tuple[str, float], ...]  # (label, value) of the full model, one per task
    evaluated: bool
    has_card: bool
    created_at: str | None
    built_by: str | None
    problems: tuple[str, ...]  # records that could not be read, and why

    @property
    def reproduced(self) -> bool:
        return bool(self.rebuilds) and all(r.result == "identical" for r in self.rebuilds)

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


def rebuild_rows(records: list[RebuildRecord]) -> tuple[Rebuild, ...]:
    rows = []
    for r in sorted(records, key=lambda r: r.rebuilt_at):
        where = r.machine.get("hostname", "unknown machine")
        if r.machine.get("cpu"):
            where += f" ({r.machine['cpu']})"
        rows.append(Rebuild(r.result, r.rebuilt_by, where, r.rebuilt_at, r.first_differing_stage,
                            tuple(r.differences), tuple(r.environment_differences)))
    return tuple(rows)


def reproducibility_verdict(provenance: str, rebuilds: tuple[Rebuild, ...]) -> str:
    if provenance == "imported":
        return "imported: never reproducible"
    if not rebuilds:
        return "not rebuilt yet"
    differ = [r for r in rebuilds if r.result != "identical"]
    if not differ:
        hosts = sorted({r.where.split(" (")[0] for r in rebuilds})
        return f"rebuilt identical ×{len(rebuilds)} ({', '.join(hosts)})"
    return f"rebuild differed ({len(differ)} of {len(rebuilds)}; first at {differ[0].first_differing_stage or 'inputs'})"


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


def config_from_recipe(recipe: Recipe) -> dict:
    """What config.json would say, from the recipe alone (vocabulary = the tokenizer's target size)."""
    a = recipe.architecture
    return {
        "model_type": a.family, "vocab_size": recipe.tokenizer.vocab_size, "hidden_size": a.hidden_size,
        "intermediate_size": a.intermediate_size, "num_hidden_layers": a.num_hidden_layers,
        "num_attention_heads": a.num_attention_heads, "num_key_value_heads": a.num_key_value_heads,
        "max_position_embeddings": a.max_position_embeddings, "rope_theta": a.rope_theta,
        "rms_norm_eps": a.rms_norm_eps, "tie_word_embeddings": a.tie_word_embeddings,
    }


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
            return config_from_recipe(reg.recipe(release.manifest.recipe.ref)), "the recipe (config.json is not in the local store)"
        except ForgeError:
            pass
    return None, "neither config.json nor a recipe is available"


def summarize(forge: Forge, reg: Registry, release: Release) -> ReleaseSummary:
    from explorer.views import parameter_counts

    m = release.manifest
    problems: list[str] = []
    status = _safe(problems, "status", lambda: reg.status(release)) or "draft"
    prov: ProvenanceRecord | None = _safe(problems, "provenance record", lambda: reg.provenance(release))
    evals: EvaluationRecord | None = _safe(problems, "evaluation record", lambda: reg.evaluation(release))
    card: CardRecord | None = _safe(problems, "card record", lambda: reg.card(release))
    rebuilds = rebuild_rows(_safe(problems, "rebuild records", lambda: reg.rebuilds(release)) or [])
    recipe: Recipe | None = None
    if m.recipe is not None:
        recipe = _safe(problems, m.recipe.ref, lambda: reg.recipe(m.recipe.ref))
    config, _ = release_config(forge, reg, release)
    parameters = parameter_counts(config)["total"] if config else None
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
    )


@dataclass(frozen=True)
class Listing:
    releases: tuple[ReleaseSummary, ...]
    broken: tuple[tuple[str, str], ...]  # (ref, why) of entries that could not be read
    datasets: int
    recipes: int


def release_summaries(forge: Forge) -> Listing:
    """Every release in the registry (a broken entry is listed with its error, not raised)."""
    reg = forge.registry()
    out, broken = [], []
    for ref in release_refs(reg):
        try:
            out.append(summarize(forge, reg, reg.release(ref)))
        except ForgeError as err:
            broken.append((ref, str(err)))
        except Exception as err:  # malformed YAML, schema errors
            broken.append((ref, f"{type(err).__name__}: {err}"))
    return Listing(tuple(out), tuple(broken), len(reg.refs("dataset")), len(reg.refs("recipe")))


# --- the model card -------------------------------------------------------------------------


@dataclass(frozen=True)
class Card:
    status: str  # ok | none | missing | changed | build (rendered by the build, not recorded)
    markdown: str = ""
    front_matter: str = ""
    path: str = ""
    message: str = ""
    blocks: tuple[tuple[str, str, str], ...] = ()  # ("markdown", text, "") | ("image", file, alt text)


_FRONT_MATTER = re.compile(r"\A---\s*\n(.*?)\n---\s*\n", re.S)
_HTML_COMMENT = re.compile(r"<!--.*?-->", re.S)
_IMAGE = re.compile(r"!\[([^\]]*)\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_LINK = re.compile(r"(?<!!)\[([^\]]+)\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_DATASET_CARD = re.compile(r"(?:\.\./)*datasets/([a-z0-9][a-z0-9._-]*)/([0-9.]+)/README\.md$")
_EXTERNAL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")


def split_card(text: str) -> tuple[str, str]:
    """(front matter YAML, markdown body without HTML comments) of a rendered card."""
    m = _FRONT_MATTER.match(text)
    front, body = (m.group(1), text[m.end():]) if m else ("", text)
    return front, _HTML_COMMENT.sub("", body).strip()


def _rewrite_link(m: re.Match) -> str:
    text, target = m.group(1), m.group(2)
    if _EXTERNAL.match(target) or target.startswith("#"):
        return m.group(0)
    ds = _DATASET_CARD.search(target)
    if ds:  # a dataset card next to the model card: its page in the explorer
        return f"[{text}](/dataset?ref=dataset/{ds.group(1)}@{ds.group(2)})"
    return f"{text} (`{target}`)"  # another file of the repository: named, not linked


def card_blocks(markdown: str, base: Path) -> tuple[tuple[str, str, str], ...]:
    """A card's body as blocks the page can show without fetching anything.

    Local images (inside the card's folder) become image blocks; remote images are never
    loaded (the explorer stays offline) and are named instead; relative links to dataset
    cards point at the Dataset page, other relative links are named, not linked.
    """
    base = base.resolve()
    blocks: list[tuple[str, str, str]] = []
    pos = 0

    def text_block(chunk: str) -> None:
        chunk = _LINK.sub(_rewrite_link, chunk)
        if chunk.strip():
            blocks.append(("markdown", chunk, ""))

    for m in _IMAGE.finditer(markdown):
        text_block(markdown[pos:m.start()])
        alt, src = m.group(1), m.group(2)
        target = (base / src).resolve()
        if _EXTERNAL.match(src):
            blocks.append(("markdown", f"*(image not loaded, the explorer stays offline: {alt or src} — `{src}`)*", ""))
        elif target.is_relative_to(base) and target.is_file():
            blocks.append(("image", str(target), alt))
        else:
            blocks.append(("markdown", f"*(image missing: `{src}`)*", ""))
        pos = m.end()
    text_block(markdown[pos:])
    return tuple(blocks)


def _card_from_file(path: Path, status: str, rel: str, message: str = "") -> Card:
    front, body = split_card(path.read_text(encoding="utf-8", errors="replace"))
    return Card(status, body, front, rel, message, card_blocks(body, path.parent))


def model_card(forge: Forge, reg: Registry, release: Release) -> Card:
    record = reg.card(release)
    if record is None:
        message = (f"No model card has been rendered for {release.ref} yet: the card stage writes "
                   f"model_cards/published/{release.name}/{release.version}/README.md and a card record beside "
                   "the release.")
        folder = build_dir(forge, release)
        built = folder / "card" / "README.md" if folder else None
        outputs = build_outputs(forge, release) if built is not None and built.is_file() else None
        if outputs is not None and outputs.matches_release:
            rel = str(built.relative_to(forge.root))
            return _card_from_file(built, "build", rel, message + f" The build of this release rendered one in "
                                   f"{rel}; it is shown below, but it is not part of the release's record.")
        return Card("none", message=message)
    path = forge.root / record.path
    if not path.is_file():
        return Card("missing", path=record.path,
                    message=f"The card record names {record.path}, but that file is not in this checkout.")
    actual = sha256_file(path)
    if actual != record.sha256:
        return _card_from_file(path, "changed", record.path,
                               f"{record.path} changed since it was rendered (sha256 {actual[:12]}…, the record "
                               f"says {record.sha256[:12]}…): what follows is not the card that was recorded.")
    return _card_from_file(path, "ok", record.path)


# --- build outputs --------------------------------------------------------------------------


def build_dir(forge: Forge, release: Release) -> Path | None:
    """``build/models/<recipe name>/`` for a built release, else None."""
    if release.manifest.recipe is None:
        return None
    return forge.root / "build" / "models" / Ref.parse(release.manifest.recipe.ref).name


@dataclass(frozen=True)
class BuildOutputs:
    folder: str
    matches_release: bool | None  # None: cannot tell (no weights in build/)
    note: str
    train_loss: tuple[tuple[int, float], ...] = ()
    val_loss: tuple[tuple[int, float], ...] = ()
    metrics: dict = field(default_factory=dict)
    quantize: dict = field(default_factory=dict)


def _read_curve(path: Path) -> tuple[tuple[int, float], ...]:
    if not path.is_file():
        return ()
    rows = []
    with open(path, encoding="utf-8", newline="") as f:
        for row in csv.DictReader(f):
            try:
                values = list(row.values())
                rows.append((int(values[0]), float(values[1])))
            except (ValueError, IndexError, TypeError):
                continue
    return tuple(rows)


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    except (OSError, ValueError):
        return {}


def build_outputs(forge: Forge, release: Release) -> BuildOutputs | None:
    """Training curves, metrics and the quantize summary from ``build/``, if this release's build is there."""
    folder = build_dir(forge, release)
    if folder is None:
        return None
    rel = str(folder.relative_to(forge.root))
    if not folder.is_dir():
        return BuildOutputs(rel, None, f"{rel}/ is not in this checkout: run `commonforge build "
                            f"{folder.name}` (or `dvc pull`) to get the training curves.")
    weights = folder / "model" / "model.safetensors"
    try:
        expected = release.manifest.artifact("model.safetensors").sha256
    except KeyError:
        expected = None
    if weights.is_file() and expected:
        same = sha256_file(weights) == expected
        note = (f"from {rel}/, the build of this release (its weights match the manifest)" if same else
                f"{rel}/ holds another build of {folder.name} (its weights differ from this release's): "
                "the curves below are that build's, not this release's")
    else:
        same, note = None, f"from {rel}/ (no weights there to check they belong to this release)"
    return BuildOutputs(
        rel, same, note,
        train_loss=_read_curve(folder.joinpath(*TRAIN_LOSS)),
        val_loss=_read_curve(folder.joinpath(*VAL_LOSS)),
        metrics=_read_json(folder.joinpath(*TRAIN_METRICS)),
        quantize=_read_json(folder.joinpath(*QUANTIZE_SUMMARY)),
    )


# --- MLflow -------------------------------------------------------------------------------


@dataclass(frozen=True)
class MlflowRun:
    run_id: str
    found: bool
    message: str
    name: str = ""
    status: str = ""
    metrics: dict[str, tuple[tuple[int, float], ...]] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)


def _sqlite_path(uri: str) -> Path | None:
    if not uri.startswith("sqlite:///"):
        return None
    return Path(uri[len("sqlite:///"):])


def mlflow_run(mlflow_uri: str, run_id: str | None) -> MlflowRun | None:
    """The run's metric histories, read-only.

    A local sqlite tracking store is opened read-only with sqlite3 (no MLflow import, no
    schema migration, nothing written); any other tracking URI goes through MLflow's client.
    """
    if not run_id:
        return None
    db = _sqlite_path(mlflow_uri)
    if db is not None:
        if not db.is_file():
            return MlflowRun(run_id, False, f"the MLflow database {db} is not on this machine")
        try:
            con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
            try:
                run = con.execute("SELECT name, status FROM runs WHERE run_uuid = ?", (run_id,)).fetchone()
                if run is None:
                    return MlflowRun(run_id, False, f"run {run_id} is not in {db} (it was tracked on another machine)")
                metrics: dict[str, list] = {}
                for key, step, value in con.execute(
                        "SELECT key, step, value FROM metrics WHERE run_uuid = ? AND is_nan = 0 "
                        "ORDER BY key, step, timestamp", (run_id,)):
                    metrics.setdefault(key, []).append((int(step), float(value)))
                params = dict(con.execute("SELECT key, value FROM params WHERE run_uuid = ?", (run_id,)).fetchall())
            finally:
                con.close()
        except sqlite3.Error as err:
            return MlflowRun(run_id, False, f"could not read {db}: {err}")
        return MlflowRun(run_id, True, f"MLflow run {run_id} in {db}", run[0] or "", run[1] or "",
                         {k: tuple(v) for k, v in metrics.items()}, params)
    try:
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=mlflow_uri)
        run = client.get_run(run_id)
        metrics = {k: tuple((m.step, m.value) for m in client.get_metric_history(run_id, k))
                   for k in run.data.metrics}
        return MlflowRun(run_id, True, f"MLflow run {run_id} at {mlflow_uri}", run.info.run_name or "",
                         run.info.status, metrics, dict(run.data.params))
    except Exception as err:  # an unreachable server is a message on the page, not a traceback
        return MlflowRun(run_id, False, f"could not read run {run_id} from {mlflow_uri}: {err}")


# --- datasets -----------------------------------------------------------------------------


@dataclass(frozen=True)
class DatasetBuildInfo:
    folder: str
    stats: dict  # stats.json, or {} when the dataset is not prepared here
    note: str
    split_files: dict[str, str] = field(default_factory=dict)  # split -> path relative to the root


def dataset_outputs(forge: Forge, dataset: Dataset) -> DatasetBuildInfo:
    folder = forge.root / "build" / "datasets" / dataset.name
    rel = str(folder.relative_to(forge.root))
    stats = _read_json(folder / "stats.json")
    if not stats:
        return DatasetBuildInfo(rel, {}, f"{dataset.ref} is not prepared in this checkout ({rel}/stats.json is "
                                f"missing): run `dvc repro prepare@{dataset.name}` to browse its documents.")
    if stats.get("dataset") != dataset.ref:
        return DatasetBuildInfo(rel, {}, f"{rel}/ holds {stats.get('dataset')}, not {dataset.ref}: "
                                "prepare this version to browse it.")
    files = {s: str((folder / "splits" / f"{s}.jsonl").relative_to(forge.root))
             for s in ("train", "validation", "test") if (folder / "splits" / f"{s}.jsonl").is_file()}
    return DatasetBuildInfo(rel, stats, f"statistics from {rel}/stats.json", files)


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
                out[ref] = {s: v.sha256 for s, v in d.splits.items()}
    return out


def reverify(forge: Forge, artifacts) -> list[tuple[str, str]]:
    """(path, "ok" | "missing" | "corrupt") for each artifact, re-hashed in the store (read-only)."""
    return [(c.artifact.path, c.status) for c in forge.store().check_artifacts(artifacts)]


def not_found_suggestions(err: ForgeError) -> list[str]:
    return list(getattr(err, "suggestions", []) or []) if isinstance(err, NotFoundError) else []


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
    lineage: object  # registry.lineage.Graph around this release
    in_store: dict[str, bool]  # artifact sha256 -> object present (not re-hashed)
    stages: tuple[str, ...]  # the recipe's DVC stages, for the reproduce commands
    derived: tuple[str, ...]  # releases built on this one (base_model)


def _recipe_stages(root: Path, recipe_name: str) -> tuple[str, ...]:
    try:
        from pipelines.workspace import recipe_stages

        return tuple(recipe_stages(root, recipe_name))
    except Exception:  # no dvc.yaml in this checkout: the commands still work without the list
        return ()


def release_detail(forge: Forge, ref: str) -> ReleaseDetail:
    """Everything about one release; raises ForgeError when the ref names none."""
    from registry.lineage import lineage_graph

    reg = forge.registry()
    release = find_release(reg, ref)
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
        derived=derived,
    )


@dataclass(frozen=True)
class DatasetDetail:
    dataset: Dataset
    build: DatasetBuildInfo
    trained_on: tuple[str, ...]
    split_users: dict[str, dict[str, str]]
    lineage: object


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
