"""The card stage, publishing at release, rendering from the registry, and `commonforge card`."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from commonforge.errors import ForgeError
from pipelines import card as card_stage
from pipelines.manifest import build_manifest, evaluation_record, model_outputs
from registry import Registry, Store
from registry.digest import sha256_file
from registry.schema import NO_COMMIT, BuildManifest, ProvenanceRecord, Release
from tests.model_cards.conftest import assert_complete, assert_hub_card, evaluation, front_matter

REF = "recipe/forge-tiny@1"
COMMIT = "5" * 40


def _card_files(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _release(root, reg: Registry) -> tuple[Release, ProvenanceRecord]:
    recipe = reg.recipe(REF)
    rel = Release.from_manifest(build_manifest(root, recipe, COMMIT))
    reg.save_release(rel)
    prov = ProvenanceRecord(release_digest=rel.release_digest, built_by="Forge Test",
                            created_at="2026-11-24T12:00:00Z", machine={"cpu": "Test CPU", "cores": "2"},
                            stage_seconds={"train": 31.5, "card": 1.0})
    reg.save_record(rel, "provenance", prov)
    return rel, prov


def test_the_stage_renders_the_build_card_and_dataset_cards_deterministically(fake_forge):
    readme = card_stage.main(REF, fake_forge)
    folder = readme.parent
    assert folder == model_outputs(fake_forge, "forge-tiny").card
    first = _card_files(folder)
    assert set(first) == {"README.md", "loss.png", "datasets/tiny-local/1/README.md"}
    text = first["README.md"].decode()
    assert_complete(text)
    assert_hub_card(text, None)
    assert "rendered by the build, before the model was released" in text
    assert "not made from a git commit" in text  # the fake forge is no git repository
    assert "Not evaluated yet" in text and "](loss.png)" in text
    assert "(datasets/tiny-local/1/README.md)" in text
    dataset_card = first["datasets/tiny-local/1/README.md"].decode()
    assert_complete(dataset_card)
    assert "`model/forge-tiny@1.0.0 (this build, not released yet)`" in dataset_card
    card_stage.main(REF, fake_forge)
    assert _card_files(folder) == first  # README, PNG and dataset card: the same bytes


def test_the_stage_shows_the_evaluate_stages_results(fake_forge):
    recipe = Registry(fake_forge).recipe(REF)
    prospective = Release.from_manifest(build_manifest(fake_forge, recipe, NO_COMMIT))
    record = evaluation(prospective)
    doc = record.model_dump(mode="json", exclude={"schema_version", "release_digest", "evaluated_at"})
    results = model_outputs(fake_forge, "forge-tiny").results
    results.parent.mkdir(parents=True)
    results.write_text(json.dumps(doc, indent=2, sort_keys=True))
    text = card_stage.main(REF, fake_forge).read_text()
    assert_complete(text)
    assert_hub_card(text, record)
    assert "Not evaluated yet" not in text and "| lambada | 8 | 13-gram | 1 | 12.5% |" in text


def test_publish_writes_the_cards_and_returns_their_record(fake_forge):
    reg = Registry(fake_forge)
    rel, prov = _release(fake_forge, reg)
    record = card_stage.publish_cards(fake_forge, reg.recipe(REF), rel, prov, None)
    published = fake_forge / "model_cards" / "published"
    readme = published / "forge-tiny" / "1.0.0" / "README.md"
    assert record.path == "model_cards/published/forge-tiny/1.0.0/README.md"
    assert record.release_digest == rel.release_digest and record.sha256 == sha256_file(readme)
    reg.save_record(rel, "card", record)  # the record validates and files beside the release
    text = readme.read_text()
    assert_complete(text)
    assert_hub_card(text, None)
    assert f"sha256:{rel.release_digest}" in text and f"git checkout {COMMIT}" in text
    assert "| built by | Forge Test |" in text and (readme.parent / "loss.png").is_file()
    link = "../../datasets/tiny-local/1/README.md"
    assert f"]({link})" in text and (readme.parent / link).resolve().is_file()
    dataset_card = (published / "datasets" / "tiny-local" / "1" / "README.md").read_text()
    assert "`model/forge-tiny@1.0.0 (draft)`" in dataset_card
    # A card rendered at publication (it records the governance) is never rewritten with other bytes.
    readme.write_bytes(readme.read_bytes().replace(b"## License", card_stage.GOVERNANCE_HEADING + b"\n\n## License"))
    before = readme.read_bytes()
    with pytest.raises(ForgeError, match="never rewritten"):
        card_stage.publish_cards(fake_forge, reg.recipe(REF), rel, prov, evaluation(rel))
    assert readme.read_bytes() == before


def test_a_registered_release_renders_from_the_registry_alone(fake_forge, tmp_path):
    reg = Registry(fake_forge)
    rel, _ = _release(fake_forge, reg)
    record = evaluation(rel)
    reg.save_record(rel, "evals", record)
    with_build = card_stage.render_registered_card(fake_forge, "forge-tiny", image_name="loss.png")
    assert set(with_build.images) == {"loss.png"}
    assert_complete(with_build.markdown)
    assert_hub_card(with_build.markdown, record)
    assert "| counted by the training run | 656,000 (0.66 M) | matches |" in with_build.markdown
    # Another build in build/ (different weights): its logs are not this release's, so they are left out;
    # the architecture then comes from the release's config.json in the store.
    weights = model_outputs(fake_forge, "forge-tiny").weights
    weights.write_bytes(b"other weights")
    store = Store(tmp_path / "store")
    store.put_file(model_outputs(fake_forge, "forge-tiny").config)
    without = card_stage.render_registered_card(fake_forge, "model/forge-tiny@1.0.0", store_dir=store.root,
                                                image_name="loss.png")
    assert without.images == {}
    assert_complete(without.markdown)
    assert_hub_card(without.markdown, record)
    assert "No loss curve: the training logs" in without.markdown
    assert "Computed from the release's config.json (from the artifact store)." in without.markdown
    assert "| **total** | **656,000 (0.66 M)** | 100.0% |" in without.markdown


def test_an_imported_release_renders_from_the_registry(fake_forge):
    reg = Registry(fake_forge)
    manifest = BuildManifest.model_validate({
        "schema_version": 1, "name": "imported-thing", "version": "1.0.0", "provenance": "imported",
        "license": "MIT", "artifacts": [{"path": "model.safetensors", "sha256": "e" * 64, "size": 3, "stage": "import"}]})
    rel = Release.from_manifest(manifest)
    reg.save_release(rel)
    card = card_stage.render_registered_card(fake_forge, "imported-thing")
    assert_complete(card.markdown)
    assert_hub_card(card.markdown, None)
    assert "It can't be reproduced" in card.markdown and "missing from the registry" in card.markdown
    assert front_matter(card.markdown)["license"] == "mit"


# `commonforge card` through the real CLI (its error handling and exit codes).
def _card_cli(root, *args, env_extra=None):
    env = dict(os.environ, COMMONFORGE_ROOT=str(root), COMMONFORGE_STORE=str(root.parent / "store"),
               **(env_extra or {}))
    return subprocess.run([sys.executable, "-m", "commonforge", "card", *args], cwd=root, env=env, capture_output=True,
                          text=True, timeout=120)


def test_card_command_prints_or_writes_the_card(fake_forge, tmp_path):
    reg = Registry(fake_forge)
    rel, _ = _release(fake_forge, reg)
    printed = _card_cli(fake_forge, "forge-tiny")
    assert printed.returncode == 0, printed.stderr
    assert printed.stdout.startswith("---\n") and f"sha256:{rel.release_digest}" in printed.stdout
    assert "](loss.png)" not in printed.stdout  # no image on stdout
    out = tmp_path / "out" / "card.md"
    out.parent.mkdir()
    written = _card_cli(fake_forge, "model/forge-tiny@1.0.0", "-o", str(out))
    assert written.returncode == 0, written.stderr
    assert (out.parent / "loss.png").is_file() and "](loss.png)" in out.read_text()
    assert_complete(out.read_text())
    missing = _card_cli(fake_forge, "forge-tinny")
    assert missing.returncode == 2 and "forge-tiny" in missing.stderr


def test_card_publish_renders_a_drafts_card_again_and_updates_its_record(fake_forge):
    reg = Registry(fake_forge)
    rel, prov = _release(fake_forge, reg)
    reg.save_record(rel, "card", card_stage.publish_cards(fake_forge, reg.recipe(REF), rel, prov, None))
    readme = fake_forge / "model_cards" / "published" / "forge-tiny" / "1.0.0" / "README.md"
    assert "Not evaluated yet" in readme.read_text()
    # Evaluations arrive after the card was published: --publish renders it again and files the new digest.
    record = evaluation(rel)
    reg.save_record(rel, "evals", record)
    done = _card_cli(fake_forge, "forge-tiny", "--publish")
    assert done.returncode == 0, done.stderr
    text = readme.read_text()
    assert "Not evaluated yet" not in text
    assert_hub_card(text, record)
    assert Registry(fake_forge).card(rel).sha256 == sha256_file(readme)
    # With --output it is refused; for a published release, the card stays as it was.
    both = _card_cli(fake_forge, "forge-tiny", "--publish", "-o", str(fake_forge / "x.md"))
    assert both.returncode == 2 and not (fake_forge / "x.md").exists()
    readme.write_bytes(readme.read_bytes().replace(b"## License", card_stage.GOVERNANCE_HEADING + b"\n\n## License"))
    (fake_forge / "registry" / "entries" / "models" / "forge-tiny" / "1.0.0.evals.yaml").unlink()
    before = readme.read_bytes()
    refused = _card_cli(fake_forge, "forge-tiny", "--publish")
    assert refused.returncode != 0 and "never rewritten" in refused.stderr
    assert readme.read_bytes() == before


# --- on the real build --------------------------------------------------------------------


@pytest.mark.slow
def test_the_real_build_has_a_card_for_its_release(tiny_forge, tmp_path):
    from tests.helpers import git

    reg = Registry(tiny_forge.root)
    rel = reg.release("model/forge-tiny@1.0.0")
    out = model_outputs(tiny_forge.root, "forge-tiny")
    folder = out.card
    text = (folder / "README.md").read_text()
    assert_complete(text)
    # The card stage ran at the commit the release was made from: the prospective digest is the release's.
    assert f"sha256:{rel.release_digest}" in text and f"git checkout {rel.manifest.source_commit}" in text
    results = out.results
    recipe = reg.recipe("recipe/forge-tiny@1")
    record = evaluation_record(tiny_forge.root, recipe, rel.release_digest)
    assert_hub_card(text, record)
    assert ("Not evaluated yet" in text) == (not results.is_file())
    # Parameter counts from config.json equal what torch counted during training.
    assert "| counted by the training run |" in text and "| matches |" in text
    assert (folder / "loss.png").read_bytes().startswith(b"\x89PNG")
    assert (folder / "datasets" / "tiny-local" / "1" / "README.md").is_file()
    # Publishing on a clone leaves only files the release may change.
    clone = tmp_path / "clone"
    git(tiny_forge.root, "clone", "-q", str(tiny_forge.root), str(clone))
    import shutil

    shutil.copytree(tiny_forge.root / "build", clone / "build", symlinks=True)
    creg = Registry(clone)
    card = card_stage.publish_cards(clone, recipe, rel, creg.provenance(rel), record)
    published = (clone / card.path).read_text()
    assert_complete(published)
    assert_hub_card(published, record)
    from pipelines.workspace import tree_changes

    assert tree_changes(clone) == []


def test_a_recipe_entry_that_no_longer_matches_its_pin_is_not_used(fake_forge):
    reg = Registry(fake_forge)
    _release(fake_forge, reg)
    path = fake_forge / "registry" / "entries" / "recipes" / "forge-tiny" / "1.yaml"
    path.write_text(path.read_text().replace("seed: 1234", "seed: 4321"))
    card = card_stage.render_registered_card(fake_forge, "forge-tiny")
    assert_complete(card.markdown)
    assert "> **Note:** The recipe entry recipe/forge-tiny@1 in this checkout does not match" in card.markdown
    assert "| seed |" not in card.markdown  # the hyperparameters of an edited recipe are not shown as the model's
