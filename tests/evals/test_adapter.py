"""ForgeLM agrees with lm-eval's own ``hf`` model (HFLM) on the same forge-tiny checkpoint.

Both run the same lm-eval tasks on the release: ForgeLM over the model our loader verified from
the store, HFLM (``lm_eval.models.huggingface.HFLM``) over the release materialized as a plain
Hugging Face directory, offline. Tolerances, and why:

* per request, |log-likelihood difference| <= 1e-4 nats + 1e-5 x |ll|. Both are float32 on the
  CPU with the same tokenization and truncation; only the batching differs (ForgeLM shares one
  forward pass between requests with identical inputs and pads other batches), which changes
  matmul blocking and summation order: differences of ~1e-6 relative are expected, a real
  discrepancy (an off-by-one position, a lost BOS, a truncation bug) is >= 0.1 nats;
* ``is_greedy`` and multiple-choice accuracies: identical (no near-ties at that precision);
* bits per byte: relative difference <= 1e-5 (a sum of the log-likelihoods above);
* greedy generations: identical strings.
"""

from __future__ import annotations

import pytest

from evals.tasks import EvalSet, heldout_sets, load_tasks, write_tasks

LL_ABS, LL_REL = 1e-4, 1e-5
BPB_REL = 1e-5

# lm-eval's hf model imports accelerate (lm-eval's "hf" extra); without it there is nothing to compare with.
pytest.importorskip("accelerate", reason="lm_eval.models.huggingface needs accelerate (pip install 'lm-eval[hf]')")


@pytest.fixture(scope="module")
def hflm(tiny_forge, tiny_release, tiny_settings, tmp_path_factory):
    from lm_eval.models.huggingface import HFLM

    from registry import Store

    folder = Store(tiny_settings.store_dir).materialize(tiny_release.manifest, tmp_path_factory.mktemp("hf-dir"))
    lm = HFLM(pretrained=str(folder), device="cpu", batch_size=4, dtype="float32")
    # The release's generation_config.json sets max_new_tokens=256 (a chat default), which transformers
    # lets win over the max_length HFLM derives from lm-eval's max_gen_toks; without this, HF generated
    # 256 tokens where lm-eval asks for 24 whenever no stop sequence came first (a CI run's model did).
    lm.model.generation_config.max_new_tokens = None
    return lm


@pytest.fixture(scope="module")
def forge_lm(tiny_full):
    from evals.adapter import ForgeLM

    return ForgeLM(tiny_full, batch_size=4)


def _choice_set(documents: list[dict]) -> EvalSet:
    """A multiple-choice set cut from held-out text: some contexts longer than the 256-token context."""
    items = []
    for n, doc in enumerate(documents[:6]):
        text = " ".join(doc["text"].split())
        start = 50 * n
        length = 300 if n % 2 else 1600  # 1,600 characters is ~400 tokens: left truncation happens
        query = text[start : start + length]
        right = text[start + length : start + length + 40]
        wrong = [" " + text[start + 2000 + 60 * k : start + 2040 + 60 * k].strip() for k in range(3)]
        items.append({"id": f"local/{n}", "query": query, "choices": [right, *wrong], "gold": 0})
    return EvalSet("local_choice", "choice", tuple(items), ("acc", "acc_norm"))


def _run(lm, sets, folder):
    from lm_eval.evaluator import evaluate

    write_tasks(sets, folder)
    return evaluate(lm=lm, task_dict=load_tasks(folder, [s.name for s in sets]), bootstrap_iters=0,
                    log_samples=True, verbosity="WARNING")


def _compare(ours, theirs, sets):
    worst = 0.0
    for s in sets:
        a = {smp["doc"]["id"]: smp for smp in ours["samples"][s.name]}
        b = {smp["doc"]["id"]: smp for smp in theirs["samples"][s.name]}
        assert sorted(a) == sorted(b) == sorted(s.ids)
        for item_id in a:
            for ra, rb in zip(a[item_id]["resps"], b[item_id]["resps"], strict=True):
                (x,), (y,) = ra, rb
                ll_a, ll_b = (x[0], y[0]) if isinstance(x, tuple) else (x, y)
                assert abs(ll_a - ll_b) <= LL_ABS + LL_REL * abs(ll_b), (s.name, item_id, ll_a, ll_b)
                worst = max(worst, abs(ll_a - ll_b))
                if isinstance(x, tuple):
                    assert x[1] == y[1], (s.name, item_id, "is_greedy differs")
        for metric in s.metrics:
            va, vb = ours["results"][s.name][f"{metric},none"], theirs["results"][s.name][f"{metric},none"]
            if metric == "bits_per_byte":
                assert va == pytest.approx(vb, rel=BPB_REL), (s.name, metric)
            else:
                assert va == vb, (s.name, metric)
    return worst


def test_loglikelihood_and_rolling_agree_with_hflm(forge_lm, hflm, tiny_test_documents, tmp_path):
    sets = [_choice_set(tiny_test_documents), *heldout_sets(tiny_test_documents, 2)]
    ours, theirs = _run(forge_lm, sets, tmp_path / "ours"), _run(hflm, sets, tmp_path / "theirs")
    worst = _compare(ours, theirs, sets)
    print(f"largest per-request |ll difference| vs HFLM: {worst:.2e} nats")
    for s in sets:
        print(s.name, {m: (ours["results"][s.name][f"{m},none"], theirs["results"][s.name][f"{m},none"])
                       for m in s.metrics})
    # The held-out documents span several 256-token windows and the long queries were truncated.
    assert forge_lm.tokens_scored > 0 and all(len(it["text"]) > 2000 for s in sets[1:] for it in s.items)


@pytest.mark.pins
def test_benchmark_tasks_agree_with_hflm(forge_lm, hflm, benchmark_wheel, tmp_path):
    from evals.benchmarks import BenchmarkArchive
    from evals.tasks import benchmark_set

    archive = BenchmarkArchive(benchmark_wheel)
    sets = [benchmark_set(archive, name, 4) for name in ("lambada", "hellaswag", "winogrande", "boolq")]
    ours, theirs = _run(forge_lm, sets, tmp_path / "ours"), _run(hflm, sets, tmp_path / "theirs")
    worst = _compare(ours, theirs, sets)
    print(f"largest per-request |ll difference| vs HFLM on benchmarks: {worst:.2e} nats")


def test_greedy_generation_agrees_with_hflm(forge_lm, hflm):
    from lm_eval.api.instance import Instance

    kwargs = {"until": ["\n\n", "."], "max_gen_toks": 24, "do_sample": False}
    contexts = ["Call me Ishmael. Some years ago", "The President said that the Congress", "Whale"]
    requests = [Instance("generate_until", {}, (c, dict(kwargs)), idx=0) for c in contexts]
    ours = forge_lm.generate_until(requests)
    theirs = hflm.generate_until([Instance("generate_until", {}, (c, dict(kwargs)), idx=0) for c in contexts],
                                 disable_tqdm=True)
    assert ours == theirs
    assert all("." not in text and "\n\n" not in text for text in ours)
