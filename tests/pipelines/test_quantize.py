"""Stage ``quantize`` on a small forge-tiny: each variant's files in the recipe's scheme, the
perplexity report, seeded calibration, bit-identical reruns and clear refusals."""

from __future__ import annotations

import copy
import json
import math
import shutil

import pytest
import yaml

from commonforge.errors import BuildError, InputError
from pipelines import quantize, train
from pipelines.manifest import VARIANT_FILES, model_outputs
from tests.pipelines.stage_inputs import (
    SMALL_RECIPE,
    check,
    load_recipe,
    run_stage,
    tiny_checkout,
    tokenized,
    torch_threads,
)

# forge-tiny's int4 GPTQ and int8 RTN variants, plus the RTN twin of the int4 one, so that the
# stage also reports the share of RTN's perplexity gap GPTQ recovers.
CALIBRATION = {"calibration_samples": 8, "calibration_seq_len": 32}
VARIANTS = [
    {"name": "int4-g32", "bits": 4, "method": "gptq", "group_size": 32, "symmetric": True, **CALIBRATION},
    {"name": "int4-g32-rtn", "bits": 4, "method": "rtn", "group_size": 32, "symmetric": True, **CALIBRATION},
    {"name": "int8", "bits": 8, "method": "rtn", "symmetric": True, **CALIBRATION},
]


# Batches of 32 windows: the stage scores the whole validation split four times.
RECIPE = {**SMALL_RECIPE, "training": {**SMALL_RECIPE["training"], "batch_size": 32}, "quantization": VARIANTS}


def _write_trained_model(root, steps: int = 4) -> None:
    """A briefly trained model where the train stage puts it (in this process: no pins needed)."""
    recipe, tok, train_w, _ = tokenized(root)
    recipe = recipe.model_copy(update={"training": recipe.training.model_copy(update={"steps": steps})})
    config = train.llama_config(recipe, tok.get_vocab_size())
    with torch_threads(recipe.training.threads):
        model = train.train_model(recipe, config, train_w, train_w[:0]).model
    out = model_outputs(root, recipe)
    train.save_safetensors(train.state_dict_for_save(model), out.weights)
    train.write_json(out.config, config.to_dict())


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The quantize stage's inputs: verified splits, the tokenizer and a trained model."""
    root = tiny_checkout(tmp_path_factory.mktemp("quantize") / "repo", RECIPE)
    check(run_stage(root, "tokenizer"))
    _write_trained_model(root)
    return root


@pytest.fixture(scope="module")
def built(trained):
    """After the stage ran (in its own process, as DVC runs it: slow)."""
    check(run_stage(trained, "quantize"))
    return trained


def _variant_bytes(root) -> dict[str, bytes]:
    out = model_outputs(root, "forge-tiny")
    return {f"{v['name']}/{f}": (out.variant(v["name"]) / f).read_bytes() for v in VARIANTS for f in VARIANT_FILES}


@pytest.mark.slow
def test_each_variant_is_written_in_the_recipes_scheme(built):
    from kernels import scheme_from_quantization_config

    recipe = load_recipe(built)
    out = model_outputs(built, recipe)
    assert sorted(p.name for p in out.variants.iterdir()) == sorted(v.name for v in recipe.quantization)
    for variant in recipe.quantization:
        folder = out.variant(variant.name)
        assert sorted(p.name for p in folder.iterdir()) == sorted(VARIANT_FILES)
        config = json.loads((folder / "config.json").read_text())
        scheme = scheme_from_quantization_config(config["quantization_config"])
        expected = quantize.scheme_for(variant)
        assert (scheme.bits, scheme.group_size, scheme.symmetric) == (expected.bits, expected.group_size,
                                                                      expected.symmetric)
        assert config["vocab_size"] == recipe.tokenizer.vocab_size


@pytest.mark.slow
def test_the_report_scores_the_full_model_and_every_variant(built):
    recipe = load_recipe(built)
    summary = json.loads(model_outputs(built, recipe).quantize_summary.read_text())
    results = summary["variants"]
    assert sorted(results) == sorted(["full", *(v.name for v in recipe.quantization)])
    for name, r in results.items():
        assert r["perplexity"] == pytest.approx(math.exp(r["val_loss"]), rel=1e-4), name
        assert r["tokens"] == results["full"]["tokens"] > 0 and r["bits_per_byte"] > 0
    for v in recipe.quantization:
        assert (results[v.name]["method"], results[v.name]["bits"], results[v.name]["group_size"]) == (
            v.method, v.bits, v.group_size)
    # int8 per channel stays close to full precision.
    assert abs(results["int8"]["perplexity"] / results["full"]["perplexity"] - 1) < 0.02
    # Only GPTQ with an RTN twin of the same format gets a share of the gap recovered (none where
    # RTN opened no gap, as can happen on a model trained for a few steps).
    full, rtn, gptq = (results[k]["perplexity"] for k in ("full", "int4-g32-rtn", "int4-g32"))
    assert list(summary["gap_recovered"]) == ["int4-g32"]
    share = summary["gap_recovered"]["int4-g32"]
    assert share == (pytest.approx((rtn - gptq) / (rtn - full), abs=1e-3) if rtn > full else None)


def test_calibration_windows_are_seeded_and_sized_by_the_variant(trained):
    recipe, _, train_w, _ = tokenized(trained)
    gptq = recipe.quantization[0]
    batches = quantize.calibration_batches(train_w, gptq, recipe.training.seed)
    assert sum(len(b) for b in batches) == gptq.calibration_samples and all(len(b) <= 8 for b in batches)
    assert all(b.shape[1] == gptq.calibration_seq_len for b in batches)
    again = quantize.calibration_batches(train_w, gptq, recipe.training.seed)
    other = quantize.calibration_batches(train_w, gptq, recipe.training.seed + 1)
    assert all((a == b).all() for a, b in zip(batches, again))
    assert not all((a == b).all() for a, b in zip(batches, other))


def test_weights_that_do_not_match_their_config_are_refused_with_a_hint(trained, tmp_path):
    recipe = load_recipe(trained)
    copy_root = tmp_path / "repo"
    shutil.copytree(trained / "registry", copy_root / "registry")
    (copy_root / "pyproject.toml").write_text("")
    model = model_outputs(copy_root, recipe).model
    shutil.copytree(model_outputs(trained, recipe).model, model)
    config = json.loads((model / "config.json").read_text())
    config["num_hidden_layers"] += 1  # the weights hold one layer fewer
    (model / "config.json").write_text(json.dumps(config))
    with pytest.raises(BuildError) as err:
        quantize.load_trained(copy_root, recipe)
    assert "does not match its config" in str(err.value) and "train stage" in err.value.hint


@pytest.mark.slow
def test_a_rerun_gives_identical_bytes(built, tmp_path):
    first = _variant_bytes(built)
    report = model_outputs(built, "forge-tiny").quantize_summary.read_bytes()
    again = tmp_path / "repo"
    shutil.copytree(built, again, ignore=shutil.ignore_patterns("variants", "quantize.json"))
    check(run_stage(again, "quantize"))
    assert _variant_bytes(again) == first
    assert model_outputs(again, "forge-tiny").quantize_summary.read_bytes() == report


@pytest.mark.slow
def test_a_group_size_the_layers_cannot_take_stops_the_stage_cleanly(trained, tmp_path):
    broken = tmp_path / "repo"
    shutil.copytree(trained, broken, ignore=shutil.ignore_patterns("variants", "quantize.json"))
    path = broken / "registry" / "entries" / "recipes" / "forge-tiny" / "1.yaml"
    entry = yaml.safe_load(path.read_text())
    wide = copy.deepcopy(VARIANTS[1]) | {"name": "int4-g128", "group_size": 128}  # hidden size is 64
    entry["quantization"] = [wide]
    path.write_text(yaml.safe_dump(entry))
    result = run_stage(broken, "quantize")
    assert result.returncode == InputError.exit_code, result.stderr[-2000:]  # bad input, not a crash
    assert "group_size 128" in result.stderr and "Traceback" not in result.stderr, result.stderr[-2000:]
