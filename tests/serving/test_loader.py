"""The release loader: verified files, safetensors only, no custom code, every variant."""

from __future__ import annotations

import dataclasses
import json
import shutil

import pytest
import torch

from commonforge.errors import InputError, IntegrityError
from registry import Registry, Store
from registry.schema import BuildManifest, Release
from serving.loader import load_from_files, load_release, variant_artifacts
from tests.serving.conftest import REF


def _release(tiny_forge) -> Release:
    return Registry(tiny_forge.root).release(REF)


def test_full_and_quantized_variants_load_and_agree(tiny_settings, tiny_loaded):
    ids = tiny_loaded.tokenizer("Call me Ishmael. Some years ago", return_tensors="pt").input_ids
    with torch.no_grad():
        full = tiny_loaded.model(ids).logits.float()
    for variant in tiny_loaded.release.manifest.variants():
        loaded = load_release(REF, variant=variant, device="cpu", settings=tiny_settings)
        assert loaded.variant == variant
        assert any(type(m).__name__ == "QuantLinear" for m in loaded.model.modules())
        with torch.no_grad():
            quant = loaded.model(ids).logits.float()
        # Quantized logits stay close to the full model's, and pick mostly the same next tokens.
        assert (quant.argmax(-1) == full.argmax(-1)).float().mean() > 0.8
        assert torch.nn.functional.cosine_similarity(quant.flatten(), full.flatten(), dim=0) > 0.98


def test_unknown_variant_lists_the_available_ones(tiny_forge):
    with pytest.raises(InputError) as info:
        variant_artifacts(_release(tiny_forge), "int3")
    assert "available: full, " in str(info.value) and "int8" in str(info.value)


def test_a_corrupt_store_object_is_refused_before_loading(tiny_forge, tiny_settings, tmp_path):
    store_copy = tmp_path / "store"
    shutil.copytree(tiny_settings.store_dir, store_copy)
    rel = _release(tiny_forge)
    path = Store(store_copy).object_path(rel.manifest.artifact("config.json").sha256)
    path.chmod(0o644)
    path.write_text(json.dumps({"model_type": "llama", "hidden_size": 1}))
    with pytest.raises(IntegrityError) as info:
        load_release(REF, device="cpu", settings=dataclasses.replace(tiny_settings, store_dir=store_copy))
    assert "config.json" in str(info.value)


def _build_files(tiny_forge) -> dict:
    out = tiny_forge.root / "build" / "models" / "forge-tiny"
    files = {"tokenizer.json": out / "tokenizer" / "tokenizer.json",
             "tokenizer_config.json": out / "tokenizer" / "tokenizer_config.json",
             "config.json": out / "model" / "config.json",
             "generation_config.json": out / "model" / "generation_config.json",
             "model.safetensors": out / "model" / "model.safetensors"}
    for v in _release(tiny_forge).manifest.variants():
        for name in ("config.json", "model.safetensors"):
            files[f"variants/{v}/{name}"] = out / "variants" / v / name
    return files


def test_load_from_build_files_verifies_each_file(tiny_forge, tmp_path):
    files = _build_files(tiny_forge)
    loaded = load_from_files(_release(tiny_forge), files, device="cpu")
    assert loaded.model.config.model_type == "llama"
    edited = tmp_path / "config.json"
    edited.write_text(files["config.json"].read_text().replace('"rms_norm_eps"', '"rms_norm_eps" ', 1))
    with pytest.raises(IntegrityError):
        load_from_files(_release(tiny_forge), files | {"config.json": edited}, device="cpu")


def _claim(tiny_forge, tmp_path, **changes) -> tuple[Release, dict]:
    """A release whose manifest lists files written here (for refusal tests)."""
    from registry.digest import sha256_file

    files = _build_files(tiny_forge)
    rel = _release(tiny_forge)
    data = rel.manifest.model_dump(mode="json", exclude_none=True)
    for path, content in changes.items():
        target = tmp_path / path.replace("/", "_")
        target.write_bytes(content)
        files[path] = target
        entry = {"path": path, "sha256": sha256_file(target), "size": target.stat().st_size, "stage": "train"}
        data["artifacts"] = [a for a in data["artifacts"] if a["path"] != path] + [entry]
    return Release.from_manifest(BuildManifest.model_validate(data)), files


def test_custom_code_is_never_run(tiny_forge, tmp_path):
    config = json.loads(_build_files(tiny_forge)["config.json"].read_text())
    config["auto_map"] = {"AutoModelForCausalLM": "modeling_evil.EvilModel"}
    rel, files = _claim(tiny_forge, tmp_path, **{"config.json": json.dumps(config).encode()})
    with pytest.raises(InputError) as info:
        load_from_files(rel, files, device="cpu")
    assert "custom model code" in str(info.value)


def test_pickle_weights_are_never_loaded(tiny_forge, tmp_path):
    rel, files = _claim(tiny_forge, tmp_path, **{"pytorch_model.bin": b"not really a pickle"})
    with pytest.raises(InputError) as info:
        load_from_files(rel, files, device="cpu")
    assert "pickle weights are never loaded" in str(info.value)
