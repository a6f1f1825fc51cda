"""Rendering model cards from typed inputs: Hub metadata, every section, honest unknowns, stable bytes."""

from __future__ import annotations

import re

import pytest

from model_cards import BuildOutputs, DatasetInputs, ModelCardInputs, TrainingLog, hub, loss_curve_png, render_model_card
from model_cards.shape import ModelShape
from registry import Registry
from registry.schema import BuildManifest, ProvenanceRecord, Release
from tests.helpers import REPO
from tests.model_cards.conftest import (
    TINY_CONFIG,
    TINY_PARAMETERS,
    assert_complete,
    assert_hub_card,
    evaluation,
    front_matter,
    stats,
)

REG = Registry(REPO)
TINY = REG.recipe("recipe/forge-tiny@1")
SMALL = REG.recipe("recipe/forge-small@1")
SHA = "c" * 64


def _manifest(recipe, *, variants: bool = True, dataset: str = "tiny-local") -> BuildManifest:
    artifacts = [{"path": p, "sha256": SHA, "size": 1000 + i, "stage": s} for i, (p, s) in enumerate(
        [("tokenizer.json", "tokenizer"), ("tokenizer_config.json", "tokenizer"), ("config.json", "train"),
         ("generation_config.json", "train"), ("model.safetensors", "train")])]
    for q in recipe.quantization if variants else []:
        artifacts += [{"path": f"variants/{q.name}/{f}", "sha256": SHA, "size": 400, "stage": "quantize",
                       "variant": q.name} for f in ("config.json", "model.safetensors")]
    return BuildManifest.model_validate({
        "schema_version": 1, "name": recipe.name, "version": f"{recipe.version}.0.0", "provenance": "built",
        "license": recipe.license, "recipe": {"ref": recipe.ref, "sha256": recipe.digest},
        "source_commit": "1" * 40, "lock_sha256": "b" * 64,
        "environment": {"python": "3.11", "packages": {"torch": "2.13.0+cpu"}, "determinism": {"MKL_CBWR": "AVX2,STRICT"}},
        "datasets": [{"ref": f"dataset/{dataset}@1", "splits": stats(dataset)["splits"]}],
        "artifacts": artifacts,
    })


def _inputs(*, variants: bool = True, evaluated: bool = True, **extra) -> ModelCardInputs:
    recipe = TINY if variants else TINY.model_copy(update={"quantization": []})
    release = Release.from_manifest(_manifest(recipe, variants=variants))
    log = TrainingLog.from_rows([(i, 7 - 0.02 * i) for i in range(1, 121)], [(40, 5.8), (80, 5.2), (120, 5.1)])
    quantize = {"variants": {"full": {"val_loss": 5.1, "perplexity": 164.0219, "bits_per_byte": 1.98},
                             "int4-g32": {"val_loss": 5.2, "perplexity": 181.2722, "bits_per_byte": 2.02},
                             "int8": {"val_loss": 5.104, "perplexity": 164.6889, "bits_per_byte": 1.99}}}
    fields = dict(
        release=release, recipe=recipe,
        datasets=(DatasetInputs("dataset/tiny-local@1", REG.dataset("dataset/tiny-local@1"), stats("tiny-local"),
                                "datasets/tiny-local/1/README.md"),),
        provenance=ProvenanceRecord(schema_version=1, release_digest=release.release_digest, built_by="Forge Test",
                                    created_at="2026-11-24T12:00:00Z", machine={"cpu": "Test CPU", "cores": "2"},
                                    stage_seconds={"tokenizer": 1.5, "train": 31.25, "quantize": 9.0}),
        evaluation=evaluation(release) if evaluated else None,
        build=BuildOutputs(config=TINY_CONFIG, metrics={"parameters": TINY_PARAMETERS, "val_loss": 5.1},
                           run={"train_seconds": 31.5, "tokens_per_second": 3900.7},
                           quantize=quantize if variants else None, log=log),
        loss_image="loss.png",
    )
    fields.update(extra)
    return ModelCardInputs(**fields)


def _section(text: str, title: str) -> str:
    return text.split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]


@pytest.mark.parametrize("variants", [True, False])
@pytest.mark.parametrize("evaluated", [True, False])
def test_a_built_release_renders_a_complete_hub_card(variants, evaluated):
    inputs = _inputs(variants=variants, evaluated=evaluated)
    text = render_model_card(inputs)
    assert_complete(text)
    assert_hub_card(text, inputs.evaluation)
    meta = front_matter(text)
    assert meta["license"] == "apache-2.0" and meta["datasets"] == ["tiny-local"] and meta["language"] == ["en"]
    assert "reproducible" in meta["tags"] and "base_model" not in meta
    assert ("int4-g32" in meta["tags"]) == variants and ("quantized" in meta["tags"]) == variants
    for title in ("How to reproduce it", "Training data", "Architecture", "Training procedure", "Quantized variants",
                  "Evaluation", "Limitations, biases and out-of-scope uses", "Compute used", "Provenance", "License"):
        assert f"\n## {title}\n" in text
    rel = inputs.release
    reproduce = _section(text, "How to reproduce it")
    assert f"git checkout {'1' * 40}" in reproduce and "make venv" in reproduce
    assert "commonforge build forge-tiny" in reproduce and f"commonforge reproduce {rel.ref}" in reproduce
    assert f"sha256:{rel.release_digest}" in reproduce
    assert reproduce.count(SHA) == len(rel.manifest.artifacts)
    evaluation_text = _section(text, "Evaluation")
    assert ("Not evaluated yet" in evaluation_text) != evaluated
    variants_text = _section(text, "Quantized variants")
    if variants:
        assert "164.022" in variants_text and "181.272" in variants_text and "GPTQ" in variants_text
    else:
        assert "no quantized variants" in variants_text


def test_every_evaluation_number_is_the_records():
    inputs = _inputs()
    text = render_model_card(inputs)
    table = _section(text, "Evaluation")
    rows = [line for line in table.splitlines() if line.startswith("| ")]
    header = [c.strip() for c in rows[0].strip("|").split("|")]
    for r in inputs.evaluation.results:
        label = "all items" if r.subset == "all" else "clean items only"
        row = next(line for line in rows if line.startswith(f"| {r.task} | {hub.metric_title(r.metric)} | {label} |"))
        cells = [c.strip() for c in row.strip("|").split("|")]
        cell = cells[header.index(hub.variant_title(r.variant))]
        want = f"{r.value:.4f}" + ("" if r.stderr is None else f" ± {r.stderr:.4f}")
        assert cell == want, (r, cell)
        assert cells[header.index("chance")] == ("n/a" if r.chance is None else f"{r.chance:.4f}")
        assert cells[header.index("items")] == str(r.items)
    assert "| lambada | 8 | 13-gram | 1 | 12.5% |" in table
    assert "arc_easy accuracy (full precision)" not in table  # 0.5 ± 0.29 is within 2 stderr of 0.25
    assert "No score is more than two standard errors above the chance level" in table


def test_architecture_counts_come_from_the_config():
    shape = ModelShape.from_config(TINY_CONFIG)
    assert shape.total == TINY_PARAMETERS
    assert (shape.embeddings, shape.lm_head) == (1024 * 128, 1024 * 128)
    assert shape.attention == 2 * (128 * (128 + 2 * 64) + 128 * 128)
    assert shape.mlp == 2 * 3 * 128 * 384 and shape.norms == 5 * 128
    # forge-small ties its embeddings: the lm_head adds nothing (1,836,160 by transformers' own count).
    small = ModelShape.from_recipe(SMALL)
    assert small.lm_head == 0 and small.total == 1_836_160
    text = render_model_card(_inputs())
    arch = _section(text, "Architecture")
    assert "| **total** | **656,000 (0.66 M)** | 100.0% |" in arch
    assert "| counted by the training run | 656,000 (0.66 M) | matches |" in arch
    assert "| key-value heads | 2 (2 query heads share each) |" in arch


def test_training_section_shows_hyperparameters_hardware_and_the_loss_curve():
    text = render_model_card(_inputs())
    training = _section(text, "Training procedure")
    assert "![Training and validation loss of forge-tiny 1.0.0" in training and "](loss.png)" in training
    assert "| hardware | Test CPU, 2 cores; CPU only |" in training
    assert "| wall time of the training loop | 31.5 s |" in training
    assert "| seed | 1234 |" in training and "| 120 | 5.1000 |" in training
    compute = _section(text, "Compute used")
    assert "| **all stages** | **41.8 s** |" in compute and "2 cores" in compute
    data = _section(text, "Training data")
    assert "(datasets/tiny-local/1/README.md)" in data and "| moby-dick | train | 27 | 32,904 | 188.20 kB |" in data
    assert "Moby-Dick" in _section(text, "Limitations, biases and out-of-scope uses")


def test_without_build_outputs_the_card_says_what_is_unknown():
    inputs = _inputs(build=BuildOutputs(), loss_image=None, provenance=None, evaluation=None,
                     datasets=(DatasetInputs("dataset/tiny-local@1", REG.dataset("dataset/tiny-local@1")),))
    text = render_model_card(inputs)
    assert_complete(text)
    assert_hub_card(text, None)
    assert "No loss curve: the training logs" in text
    assert "Computed from the recipe" in text  # the architecture, vocabulary at the tokenizer's target
    assert "validation perplexities of the variants are unknown here" in text
    assert "missing from the registry" in _section(text, "Provenance")
    assert "build/datasets/tiny-local/stats.json" in _section(text, "Training data")


def test_an_imported_release_says_it_cannot_be_reproduced():
    manifest = BuildManifest.model_validate({
        "schema_version": 1, "name": "outside", "version": "1.0.0", "provenance": "imported",
        "license": "CC-BY-4.0 AND MIT", "base_model": "model/forge-small@1.0.0",
        "artifacts": [{"path": "model.safetensors", "sha256": SHA, "size": 10, "stage": "import"},
                      {"path": "config.json", "sha256": "d" * 64, "size": 5, "stage": "import"}]})
    release = Release.from_manifest(manifest)
    prov = ProvenanceRecord(schema_version=1, release_digest=release.release_digest, built_by="An Importer",
                            created_at="2026-11-24T12:00:00Z", imported_from="a folder its authors shared")
    record = evaluation(release, ["full"], clean=False)
    for ev in (None, record):
        text = render_model_card(ModelCardInputs(release=release, provenance=prov, evaluation=ev, status="published"))
        assert_complete(text)
        assert_hub_card(text, ev)
        meta = front_matter(text)
        assert meta["license"] == "other" and meta["license_name"] == "cc-by-4.0-and-mit"
        assert meta["base_model"] == "model/forge-small@1.0.0" and "imported" in meta["tags"]
        assert "reproducible" not in meta["tags"]
        assert "It can't be reproduced" in text and "not built by the forge" in text
        assert "commonforge reproduce" not in text and f"commonforge verify {release.ref}" in text
        assert "a folder its authors shared" in _section(text, "Provenance")
        assert "architecture is unknown" in _section(text, "Architecture")


def test_rendering_twice_gives_identical_bytes():
    inputs = _inputs()
    assert render_model_card(inputs).encode() == render_model_card(_inputs()).encode()
    png = loss_curve_png(inputs.build.log, "forge-tiny 1.0.0: loss")
    assert png == loss_curve_png(TrainingLog.from_rows(inputs.build.log.train, inputs.build.log.validation),
                                 "forge-tiny 1.0.0: loss")
    assert png.startswith(b"\x89PNG") and not re.search(rb"tEXt|iTXt|zTXt|tIME", png)


def test_hub_license_ids():
    assert hub.license_fields("Apache-2.0") == {"license": "apache-2.0"}
    assert hub.license_fields("CC0-1.0") == {"license": "cc0-1.0"}
    assert hub.license_fields("GPL-3.0-only") == {"license": "gpl-3.0"}
    assert hub.license_fields("LicenseRef-Custom") == {"license": "other", "license_name": "licenseref-custom"}
    assert hub.dataset_licenses("CC0-1.0 AND CC-BY-2.5 AND MIT") == ["cc-by-2.5", "cc0-1.0", "mit"]
