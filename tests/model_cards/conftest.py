"""Fixtures for the card tests: a fake build of forge-tiny (no torch), evaluation records, card checks.

``fake_forge`` is a checkout with the real registry entries and a build/ tree shaped exactly
like the pipeline's outputs for forge-tiny (files with made-up bytes; statistics of the real
tiny-local dataset), so the card stage, publishing and the registry rendering run in well
under a second each. The real build is covered by the tests that use ``tiny_forge``.
"""

from __future__ import annotations

import json
import re
import shutil
from importlib import metadata
from pathlib import Path

import pytest
import yaml

from model_cards import hub
from pipelines.manifest import DATA_ENV_STAGES, MANIFEST_STAGES, dataset_outputs, model_outputs
from registry.schema import EvaluationRecord, Release
from tests.helpers import REPO

DATA = Path(__file__).resolve().parent / "data"
TINY_CONFIG = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 1024, "hidden_size": 128,
    "intermediate_size": 384, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
    "head_dim": 32, "max_position_embeddings": 256, "rms_norm_eps": 1e-05, "tie_word_embeddings": False,
    "rope_parameters": {"rope_theta": 10000.0, "rope_type": "default"}, "attention_bias": False,
    "mlp_bias": False, "dtype": "float32",
}
TINY_PARAMETERS = 656_000  # sum(p.numel()) of transformers' LlamaForCausalLM with TINY_CONFIG


def stats(name: str) -> dict:
    """The real stats.json of a prepared dataset (copied from a build of this commit's entries)."""
    return json.loads((DATA / f"{name}.stats.json").read_text(encoding="utf-8"))


def _write(path: Path, data: bytes | str | dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, dict):
        data = json.dumps(data, indent=2, sort_keys=True) + "\n"
    path.write_bytes(data.encode() if isinstance(data, str) else data)


def fake_build(root: Path, recipe: str = "forge-tiny", dataset: str = "tiny-local") -> Path:
    """build/ for ``recipe`` as the pipeline leaves it (weights and tokenizer are stand-in bytes)."""
    m, d = model_outputs(root, recipe), dataset_outputs(root, dataset)
    s = stats(dataset)
    _write(d.stats, s)
    _write(m.data / f"{dataset}.json", {"dataset": s["dataset"], "splits": s["splits"]})
    _write(m.tokenizer / "tokenizer.json", '{"fake": "tokenizer"}\n')
    _write(m.tokenizer / "tokenizer_config.json", '{"fake": "tokenizer config"}\n')
    _write(m.config, TINY_CONFIG)
    _write(m.model / "generation_config.json", {"bos_token_id": 0, "eos_token_id": 1})
    _write(m.weights, b"fake weights " * 1000)
    for v in ("int4-g32", "int8"):
        _write(m.variant(v) / "config.json", {"quantization_config": {"format": "pack-quantized"}})
        _write(m.variant(v) / "model.safetensors", f"fake {v} weights ".encode() * 300)
    _write(m.environment, {"python": "3.11", "determinism": {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AVX2,STRICT"}})
    # What the stage processes imported: real distributions of this environment (the manifest
    # takes their sha256 from requirements.lock, and refuses a version the lock does not pin).
    imported = {dist: metadata.version(dist) for dist in ("pyyaml", "pydantic")}
    for stage in DATA_ENV_STAGES:
        _write(d.stage_env(stage), {"stage": stage, "packages": imported})
    for stage in MANIFEST_STAGES:
        _write(m.stage_env(stage), {"stage": stage, "packages": imported})
    _write(m.loss_csv, "step,train_loss\n" + "".join(f"{i},{7 - 0.025 * i:.6f}\n" for i in range(1, 121)))
    _write(m.val_loss_csv, "step,val_loss\n40,5.812000\n80,5.244000\n120,5.103000\n")
    _write(m.train_metrics, {"parameters": TINY_PARAMETERS, "steps": 120, "tokens_trained": 122880,
                                    "epochs": 3.7647, "final_train_loss": 4.0, "val_loss": 5.103,
                                    "val_bits_per_byte": 1.9876, "val_tokens": 9000})
    _write(m.run_info, {"mlflow_run_id": "0123abcd", "train_seconds": 31.5, "tokens_per_second": 3900.7,
                                "cpu_capability": "avx2"})
    _write(m.quantize_summary, {"variants": {
        "full": {"val_loss": 5.103, "perplexity": 164.5243, "bits_per_byte": 1.9876, "tokens": 9000},
        "int4-g32": {"val_loss": 5.2, "perplexity": 181.2722, "bits_per_byte": 2.0254, "tokens": 9000,
                     "method": "gptq", "bits": 4, "group_size": 32},
        "int8": {"val_loss": 5.104, "perplexity": 164.6889, "bits_per_byte": 1.988, "tokens": 9000,
                 "method": "rtn", "bits": 8, "group_size": None}}})
    return m.dir


@pytest.fixture
def fake_forge(tmp_path) -> Path:
    root = tmp_path / "forge"
    for sub in ("datasets", "recipes"):
        shutil.copytree(REPO / "registry" / "entries" / sub, root / "registry" / "entries" / sub)
    (root / "registry" / "entries" / "models").mkdir()
    shutil.copytree(REPO / "registry" / "governance", root / "registry" / "governance")
    for name in ("pyproject.toml", "requirements.lock", "params.yaml", "dvc.yaml"):
        shutil.copy2(REPO / name, root / name)
    fake_build(root)
    return root


def evaluation(release: Release, variants: list[str] | None = None, *, clean: bool = True) -> EvaluationRecord:
    """A plausible evaluation of forge-tiny: benchmarks with stderr and chance, held-out bits per byte,
    a clean subset where an item overlaps the training data, and the contamination table."""
    variants = variants if variants is not None else ["full", *release.manifest.variants()]
    results = []
    for i, v in enumerate(variants):
        results += [
            {"variant": v, "task": "lambada", "metric": "acc", "value": 0.125 - 0.0625 * (i % 2), "stderr": 0.125,
             "items": 8},
            {"variant": v, "task": "lambada", "metric": "perplexity", "value": 4321.987654 + i, "items": 8},
            {"variant": v, "task": "hellaswag", "metric": "acc_norm", "value": 0.25, "stderr": 0.25, "items": 4,
             "chance": 0.25},
            {"variant": v, "task": "arc_easy", "metric": "acc", "value": 0.5 + 0.01 * i, "stderr": 0.2886751345948129,
             "items": 4, "chance": 0.25},
            {"variant": v, "task": "heldout_moby-dick", "metric": "bits_per_byte", "value": 2.0123456789 + 0.01 * i,
             "items": 4},
        ]
        if clean:
            results.append({"variant": v, "task": "lambada", "metric": "acc", "value": 0.1428571428571428,
                            "stderr": 0.1428571428571428, "items": 7, "subset": "clean"})
    return EvaluationRecord.model_validate({
        "schema_version": 1, "release_digest": release.release_digest, "evaluated_at": "2026-11-24T12:00:00Z",
        "harness": "lm-eval 0.4.9", "results": results,
        "contamination": [{"task": "lambada", "items": 8, "contaminated": 1},
                          {"task": "hellaswag", "items": 4, "contaminated": 0},
                          {"task": "arc_easy", "items": 4, "contaminated": 0}],
        "limits": {"arc_easy": 4, "hellaswag": 4, "lambada": 8},
    })


# --- checks every card must pass ----------------------------------------------------------

PLACEHOLDERS = ("None", "{{", "}}", "{%", "TODO", "More Information Needed", "nan")


def front_matter(text: str) -> dict:
    match = re.match(r"^---\n(.*?)\n---\n", text, re.S)
    assert match, "the card does not start with YAML front matter"
    return yaml.safe_load(match.group(1))


def assert_complete(text: str) -> None:
    """No placeholder, no empty or short table row, exactly one trailing newline."""
    for word in PLACEHOLDERS:
        assert re.search(rf"(?<![A-Za-z]){re.escape(word)}(?![A-Za-z])", text) is None, f"card contains {word!r}"
    assert text.endswith("\n") and not text.endswith("\n\n")
    width = None
    for n, line in enumerate(text.splitlines(), 1):
        if not line.startswith("|"):
            width = None
            continue
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]
        assert all(cells), f"line {n} has an empty table cell: {line}"
        if width is None:
            width = len(cells)
        assert len(cells) == width, f"line {n} has {len(cells)} cells, its table {width}: {line}"


def assert_hub_card(text: str, record: EvaluationRecord | None) -> None:
    """The card loads as a Hugging Face ModelCard and its model-index equals the record, number for number."""
    from huggingface_hub import ModelCard
    from huggingface_hub.repocard_data import model_index_to_eval_results

    card = ModelCard(text)
    meta = front_matter(text)
    assert card.data.license == meta["license"] and meta["license"] == meta["license"].lower()
    assert card.data.library_name == "transformers" and card.data.pipeline_tag == "text-generation"
    assert "commonforge" in card.data.tags
    if record is None:
        assert "model-index" not in meta and not card.data.eval_results
        return
    _, results = model_index_to_eval_results(meta["model-index"])
    assert len(card.data.eval_results) == len(results) == len(record.results)
    got = sorted((e.metric_type, e.metric_name, e.metric_value, e.dataset_type) for e in results)
    want = sorted((r.metric, hub.result_label(r), r.value, hub.task_info(r.task).dataset_type) for r in record.results)
    assert got == want  # exact floats: the index is the record
    assert all(e.task_type == "text-generation" and e.dataset_name for e in results)
