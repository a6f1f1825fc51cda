"""The evaluate stage on forge-tiny: results.json is an EvaluationRecord minus three fields, for
every variant; it is deterministic; MLflow has the run; clean-subset scores appear when items
are contaminated."""

from __future__ import annotations

import json
import shutil
import subprocess
import time

import pytest

from evals.record import FIELDS
from pipelines.manifest import model_outputs
from registry.schema import EvaluationRecord
from tests.helpers import VENV_BIN, git


@pytest.fixture(scope="module")
def results(tiny_forge):
    path = model_outputs(tiny_forge.root, "forge-tiny").results
    assert path.is_file(), "the build's evaluate stage wrote no results.json"
    return json.loads(path.read_text(encoding="utf-8"))


def test_results_validate_as_an_evaluation_record(tiny_forge, tiny_release, results):
    from pipelines.manifest import evaluation_record
    from pipelines.stage import load_recipe

    assert sorted(results) == sorted(FIELDS) == ["contamination", "harness", "limits", "results"]
    recipe = load_recipe(tiny_forge.root, "recipe/forge-tiny@1")
    record = evaluation_record(tiny_forge.root, recipe, tiny_release.release_digest)
    assert isinstance(record, EvaluationRecord) and record.release_digest == tiny_release.release_digest
    assert record.harness.startswith("lm-eval 0.4")
    # Every variant on every task: the recipe's benchmarks (with its item limits) and held-out text.
    variants = {"full", *tiny_release.manifest.variants()}
    assert {r.variant for r in record.results} == variants
    heldout = {"heldout_moby-dick", "heldout_sotu"}
    assert record.limits == {**recipe.evaluation.tasks, **{h: recipe.evaluation.heldout_documents for h in heldout}}
    for v in variants:
        rows = {(r.task, r.metric): r for r in record.results if r.variant == v and r.subset == "all"}
        assert set(rows) == {("lambada", "bits_per_byte"), ("lambada", "acc"), ("hellaswag", "acc"),
                             ("hellaswag", "acc_norm"), ("arc_easy", "acc"), ("arc_easy", "acc_norm"),
                             *((h, "bits_per_byte") for h in heldout)}
        assert rows[("lambada", "bits_per_byte")].items == 8 and rows[("hellaswag", "acc")].items == 4
        assert rows[("hellaswag", "acc")].chance == 0.25 and rows[("lambada", "bits_per_byte")].chance is None
        assert 0 < rows[("heldout_sotu", "bits_per_byte")].value < 8  # a trained model beats 8 bits per byte
        assert all(r.stderr is None or r.stderr >= 0 for r in rows.values())
    assert {c.task for c in record.contamination} == set(record.limits)
    clean = [r for r in record.results if r.subset == "clean"]
    dirty = {c.task for c in record.contamination if c.contaminated}
    assert {r.task for r in clean} <= dirty


def test_metrics_and_mlflow_run(tiny_forge, results):
    import mlflow

    metrics = json.loads(model_outputs(tiny_forge.root, "forge-tiny").eval_metrics.read_text())
    print(f"forge-tiny evaluation: {metrics['seconds']}")
    assert metrics["seconds"]["total"] < 60
    assert set(metrics["scores"]) == {"full", "int4-g32", "int8"}
    client = mlflow.MlflowClient(tracking_uri=tiny_forge.env["MLFLOW_TRACKING_URI"])
    run = client.get_run(metrics["mlflow_run_id"])
    assert run.data.tags["recipe"] == "recipe/forge-tiny@1" and run.data.tags["stage"] == "evaluate"
    assert run.data.tags.get("mlflow.parentRunId")  # nested under the training run
    assert "full.lambada.bits_per_byte" in run.data.metrics


def test_rerunning_the_stage_gives_identical_results(tiny_forge, results, tmp_path):
    clone = tmp_path / "clone"
    git(tiny_forge.root, "clone", "-q", str(tiny_forge.root), str(clone))
    shutil.copytree(tiny_forge.root / "build", clone / "build")
    model_outputs(clone, "forge-tiny").results.unlink()
    started = time.perf_counter()
    proc = subprocess.run([str(VENV_BIN / "python"), "-m", "pipelines.evaluate", "recipe/forge-tiny@1"],
                          cwd=clone, env=tiny_forge.env, capture_output=True, text=True, timeout=600)
    seconds = time.perf_counter() - started
    assert proc.returncode == 0, proc.stderr[-3000:]
    print(f"python -m pipelines.evaluate recipe/forge-tiny@1: {seconds:.1f} s")
    again = model_outputs(clone, "forge-tiny").results.read_bytes()
    assert json.loads(again) == results
    original = model_outputs(tiny_forge.root, "forge-tiny").results
    assert again == original.read_bytes()


def test_contaminated_items_get_clean_subset_scores(tiny_full, tiny_test_documents, tmp_path):
    from evals.tasks import heldout_sets
    from pipelines.evaluate import run_evaluation

    sets = heldout_sets(tiny_test_documents, 3)
    planted = sets[0].items[1]["text"][:600]  # part of one held-out document leaks into "training"
    ev = run_evaluation(lambda v: tiny_full, ["full"], sets, ["Unrelated training text.", planted],
                        task_dir=tmp_path / "tasks", batch_size=8, limits={s.name: 3 for s in sets})
    by_task = {c.task: c for c in ev.contamination}
    assert by_task[sets[0].name].contaminated == 1
    assert all(by_task[s.name].contaminated == 0 for s in sets[1:])
    rows = [r for r in ev.results if r.task == sets[0].name]
    assert [(r.subset, r.items) for r in rows] == [("all", 3), ("clean", 2)]
    assert all(r.subset == "all" for r in ev.results if r.task != sets[0].name)
