"""The 13-gram contamination check: normalization, planted overlaps, clean sets, speed."""

from __future__ import annotations

import random
import time

import pytest

from evals.contamination import NgramIndex, check, contaminated_items, normalize
from evals.tasks import EvalSet

TRAIN = [
    "It was the best of times, it was the worst of times, it was the age of wisdom, it was the age "
    "of foolishness, it was the epoch of belief, it was the epoch of incredulity.",
    "Call me Ishmael. Some years ago, never mind how long precisely, having little or no money in my "
    "purse, and nothing particular to interest me on shore, I thought I would sail about a little.",
]


def _set(shape: str, items: list[dict]) -> EvalSet:
    return EvalSet("probe", shape, tuple(items), ("acc",))


def test_normalize_lowercases_strips_punctuation_and_collapses_whitespace():
    assert normalize("Don't  STOP —\n believing!! (it_works)") == ["dont", "stop", "believing", "itworks"]
    assert normalize("Ünïcode   Straße, 1790–2021.") == ["ünïcode", "straße", "17902021"]


def test_a_planted_item_is_found_despite_case_and_punctuation():
    # The item's context carries 15 words of the first training document, recased and repunctuated.
    planted = {"id": "probe/0", "query": "Q: IT WAS the best of times; it was the worst of times... it was the age",
               "choices": [" of wisdom", " of nonsense"], "gold": 0}
    clean = {"id": "probe/1", "query": "Question: which ship did the whale sink in the novel by Herman Melville?",
             "choices": [" the Pequod", " the Rachel"], "gold": 0}
    index = NgramIndex.build(TRAIN)
    results, flagged = check(index, [_set("choice", [planted, clean])])
    assert flagged["probe"] == {"probe/0"}
    (r,) = results
    assert (r.task, r.items, r.contaminated, r.ngram) == ("probe", 2, 1, 13)


def test_a_clean_set_reports_zero():
    items = [{"id": f"probe/{i}", "context": f"An unrelated passage number {i} about rivers, trains and the "
              f"price of tea in a town that never existed, told twice over", "continuation": " again"}
             for i in range(5)]
    results, flagged = check(NgramIndex.build(TRAIN), [_set("lastword", items)])
    assert results[0].contaminated == 0 and flagged["probe"] == set()


def test_items_shorter_than_13_words_are_never_flagged_and_ngrams_do_not_span_documents():
    index = NgramIndex.build(TRAIN)
    short = {"id": "s", "text": "it was the best of times, it was the worst"}  # 10 words, all in training
    assert contaminated_items(index, "rolling", [short]) == set()
    # 13 words made of the end of document 1 and the start of document 2: not a training 13-gram.
    spanning = {"id": "x", "text": "the epoch of belief it was the epoch of incredulity call me ishmael"}
    assert contaminated_items(index, "rolling", [spanning]) == set()
    assert contaminated_items(NgramIndex.build([" ".join(TRAIN)]), "rolling", [spanning]) == {"x"}


def test_each_scored_text_counts_winogrande_style_items_too():
    item = {"id": "w", "contexts": ["Somebody wrote that it was the best of times, it was the worst of times, it was",
                                    "Somebody wrote that it was the dullest of days"],
            "continuation": " the age of wisdom", "gold": 0}
    assert contaminated_items(NgramIndex.build(TRAIN), "contexts", [item]) == {"w"}


def test_indexing_a_large_training_split_takes_seconds():
    # About 2 M words over 500 documents (the literary split has 3.3 M): linear, numpy-bound.
    rng = random.Random(0)
    vocab = [f"w{i}" for i in range(30000)]
    docs = [" ".join(rng.choices(vocab, k=4000)) for _ in range(500)]
    started = time.perf_counter()
    index = NgramIndex.build(docs)
    seconds = time.perf_counter() - started
    probe = " ".join(docs[123].split()[100:120])
    assert index.overlaps(probe) and not index.overlaps(" ".join(rng.choices(vocab, k=20)))
    print(f"indexed {len(index):,} 13-grams in {seconds:.2f} s")
    assert len(index) == pytest.approx(500 * (4000 - 12), rel=1e-3)
    assert seconds < 30
