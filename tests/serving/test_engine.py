"""The engine in-process on forge-tiny: the same numbers as transformers, seeds that repeat,
continuous batching, cancellation, limits."""

from __future__ import annotations

import threading
import time

import pytest
import torch

from commonforge.errors import InputError
from serving.engine import ContextLengthError, Engine, EngineStoppedError, QueueFullError
from serving.sampling import SamplingParams

PROMPT = "It was a dark and stormy night; the rain fell in torrents"


def ids_of(loaded, text=PROMPT):
    return loaded.tokenizer(text)["input_ids"]


def reference_logprobs(model, ids):
    with torch.no_grad():
        return torch.log_softmax(model(torch.tensor([ids])).logits[0].float(), -1)


def wait_until(cond, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.01)
    return cond()


def test_prompt_logprobs_match_transformers(tiny_loaded, tiny_engine):
    ids = ids_of(tiny_loaded)
    done = tiny_engine.generate(ids, SamplingParams(max_tokens=0, echo=True, logprobs=3))
    ref = reference_logprobs(tiny_loaded.model, ids)
    assert done.finish_reason == "length" and done.tokens == []
    assert [t.id for t in done.prompt] == ids and done.prompt[0].logprob is None
    for i, t in enumerate(done.prompt[1:]):
        assert t.logprob == pytest.approx(ref[i, ids[i + 1]].item(), abs=1e-5)
        assert [tid for tid, _ in t.top] == ref[i].topk(3).indices.tolist()


def test_greedy_decoding_matches_a_full_forward_per_token(tiny_loaded, tiny_engine):
    ids = ids_of(tiny_loaded)
    done = tiny_engine.generate(ids, SamplingParams(max_tokens=24, temperature=0, ignore_eos=True, logprobs=0))
    seq = list(ids)
    for _ in range(24):
        with torch.no_grad():
            seq.append(int(tiny_loaded.model(torch.tensor([seq])).logits[0, -1].argmax()))
    assert [t.id for t in done.tokens] == seq[len(ids):]
    ref = reference_logprobs(tiny_loaded.model, seq)
    for i, t in enumerate(done.tokens):
        assert t.logprob == pytest.approx(ref[len(ids) - 1 + i, t.id].item(), abs=1e-4)
    assert done.text == tiny_loaded.tokenizer.decode(seq[len(ids):], skip_special_tokens=True)
    assert (done.prompt_tokens, done.completion_tokens) == (len(ids), 24)


def test_a_seeded_request_alone_repeats_exactly(tiny_loaded, tiny_engine):
    ids = ids_of(tiny_loaded)
    params = SamplingParams(max_tokens=40, temperature=1.0, top_p=0.9, top_k=50, seed=1234, logprobs=2,
                            ignore_eos=True)
    runs = [tiny_engine.generate(ids, params) for _ in range(3)]
    assert len({r.text for r in runs}) == 1
    assert all([(t.id, t.logprob, t.top) for t in r.tokens] == [(t.id, t.logprob, t.top) for t in runs[0].tokens]
               for r in runs)
    other = tiny_engine.generate(ids, SamplingParams(max_tokens=40, temperature=1.0, seed=99, ignore_eos=True))
    assert other.text != runs[0].text


def test_top_k_one_is_greedy_and_top_p_keeps_the_head(tiny_loaded, tiny_engine):
    ids = ids_of(tiny_loaded)
    greedy = tiny_engine.generate(ids, SamplingParams(max_tokens=12, temperature=0, ignore_eos=True))
    top1 = tiny_engine.generate(ids, SamplingParams(max_tokens=12, temperature=1.5, top_k=1, seed=3, ignore_eos=True))
    tiny_p = tiny_engine.generate(ids, SamplingParams(max_tokens=12, temperature=1.0, top_p=1e-6, seed=4,
                                                      ignore_eos=True))
    assert greedy.text == top1.text == tiny_p.text


def test_requests_join_and_leave_the_running_batch(tiny_loaded, tiny_engine):
    ids = ids_of(tiny_loaded)
    long_q = []
    first = tiny_engine.submit(ids, SamplingParams(max_tokens=150, temperature=0, ignore_eos=True), long_q.append)
    assert wait_until(lambda: len(long_q) >= 3)  # the long one is decoding
    short = tiny_engine.generate(ids_of(tiny_loaded, "Call me Ishmael."),
                                 SamplingParams(max_tokens=5, temperature=0, ignore_eos=True))
    assert short.completion_tokens == 5
    assert not first.done.is_set(), "the short request joined the batch and left while the long one ran"
    assert wait_until(first.done.is_set, 30)
    assert long_q[-1].finish_reason == "length" and long_q[-1].completion_tokens == 150


def test_concurrent_requests_all_complete_with_their_own_lengths(tiny_loaded, tiny_engine):
    prompts = ["Call me Ishmael.", "Four score and seven years ago", "It is a truth universally", "The"]
    out = [None] * len(prompts)

    def run(i):
        out[i] = tiny_engine.generate(ids_of(tiny_loaded, prompts[i]),
                                      SamplingParams(max_tokens=10 + 7 * i, temperature=0.8, seed=i, ignore_eos=True))

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(prompts))]
    [t.start() for t in threads]
    [t.join(60) for t in threads]
    assert [o.completion_tokens for o in out] == [10, 17, 24, 31]
    assert all(o.finish_reason == "length" for o in out)
    assert wait_until(lambda: tiny_engine.snapshot()["running"] == 0)


def test_cancelling_frees_the_slot_at_once(tiny_loaded, tiny_engine):
    seen = []
    req = tiny_engine.submit(ids_of(tiny_loaded), SamplingParams(max_tokens=200, ignore_eos=True), seen.append)
    assert wait_until(lambda: len(seen) >= 2)
    req.cancel()
    assert wait_until(req.done.is_set, 2)
    assert seen[-1].finish_reason == "cancelled" and seen[-1].completion_tokens < 200
    assert wait_until(lambda: tiny_engine.snapshot()["running"] == 0, 2)
    # the freed slot serves the next request normally
    assert tiny_engine.generate(ids_of(tiny_loaded), SamplingParams(max_tokens=3)).completion_tokens == 3


def test_closing_a_stream_cancels(tiny_loaded, tiny_engine):
    before = tiny_engine.stats["cancelled"]
    stream = tiny_engine.stream(ids_of(tiny_loaded), SamplingParams(max_tokens=200, ignore_eos=True))
    next(stream), next(stream)
    stream.close()
    assert wait_until(lambda: tiny_engine.stats["cancelled"] == before + 1, 2)


def test_stop_strings_and_stop_tokens(tiny_loaded, tiny_engine):
    ids = ids_of(tiny_loaded)
    free = tiny_engine.generate(ids, SamplingParams(max_tokens=30, temperature=0, ignore_eos=True))
    stop = free.text[5:8]
    cut = tiny_engine.generate(ids, SamplingParams(max_tokens=30, temperature=0, ignore_eos=True, stop=(stop,)))
    assert cut.finish_reason == "stop" and cut.text == free.text[: free.text.find(stop)]
    generated = [t.id for t in free.tokens]
    at = generated.index(generated[2])  # the first time that token comes
    by_token = tiny_engine.generate(ids, SamplingParams(max_tokens=30, temperature=0, ignore_eos=True,
                                                        stop_token_ids=(generated[2],)))
    assert by_token.finish_reason == "stop" and by_token.completion_tokens == at + 1
    assert by_token.text == tiny_loaded.tokenizer.decode(generated[:at], skip_special_tokens=True)


def test_limits_are_refused_before_queueing(tiny_loaded, tiny_engine):
    ids = ids_of(tiny_loaded)
    ctx = tiny_engine.context_length
    with pytest.raises(ContextLengthError, match="maximum context length"):
        tiny_engine.submit(ids, SamplingParams(max_tokens=ctx), lambda o: None)
    with pytest.raises(InputError, match="no tokens"):
        tiny_engine.submit([], SamplingParams(), lambda o: None)
    with pytest.raises(InputError, match="token ids"):
        tiny_engine.submit([tiny_engine.vocab_size], SamplingParams(), lambda o: None)
    with pytest.raises(ValueError):
        SamplingParams(max_tokens=-1)
    # exactly the context is fine
    done = tiny_engine.generate(ids, SamplingParams(max_tokens=ctx - len(ids), temperature=0, ignore_eos=True))
    assert done.completion_tokens == ctx - len(ids)


def test_a_full_queue_refuses_and_the_engine_keeps_serving(tiny_loaded):
    with Engine(tiny_loaded, max_batch=1, max_queue=2) as engine:
        ids = ids_of(tiny_loaded)
        long = SamplingParams(max_tokens=100, ignore_eos=True)
        reqs = [engine.submit(ids, long, lambda o: None)]
        assert wait_until(lambda: engine.snapshot()["running"] == 1)
        reqs += [engine.submit(ids, long, lambda o: None) for _ in range(2)]  # the queue is full now
        with pytest.raises(QueueFullError, match="capacity"):
            engine.submit(ids, long, lambda o: None)
        for r in reqs:
            r.cancel()
        assert wait_until(lambda: engine.snapshot()["running"] + engine.snapshot()["waiting"] == 0)
        assert engine.generate(ids, SamplingParams(max_tokens=4)).completion_tokens == 4


def test_an_engine_in_a_with_block_runs_until_the_block_ends(tiny_loaded):
    with Engine(tiny_loaded, max_batch=1, max_queue=1) as engine:
        assert engine.healthy
        done = engine.generate(engine.encode("The"), SamplingParams(max_tokens=2, ignore_eos=True))
        assert done.completion_tokens == 2
    assert not engine.healthy
    with pytest.raises(EngineStoppedError):
        engine.submit([0], SamplingParams(max_tokens=1), lambda out: None)


def test_a_request_past_its_deadline_times_out(tiny_loaded):
    with Engine(tiny_loaded, max_batch=2, max_queue=2, request_timeout=0.05) as engine:
        done = engine.generate(ids_of(tiny_loaded), SamplingParams(max_tokens=250 - 20, ignore_eos=True))
        assert done.finish_reason == "timeout" and "time limit" in done.error
        assert engine.snapshot()["running"] == 0 and engine.healthy


@pytest.mark.parametrize("variant", ["int8", "int4-g32"])
def test_quantized_variants_serve(tiny_settings, variant):
    from serving.loader import load_release

    loaded = load_release("model/forge-tiny@1.0.0", variant=variant, device="cpu", settings=tiny_settings)
    with Engine(loaded, max_batch=2, max_queue=2) as engine:
        ids = ids_of(loaded)
        done = engine.generate(ids, SamplingParams(max_tokens=0, echo=True, logprobs=1))
        ref = reference_logprobs(loaded.model, ids)
        assert done.prompt[-1].logprob == pytest.approx(ref[len(ids) - 2, ids[-1]].item(), abs=1e-4)
        assert engine.generate(ids, SamplingParams(max_tokens=8, seed=1)).completion_tokens <= 8


@pytest.mark.parametrize("variant", ["int4-g32", "int8"])
def test_fused_cpu_projections_give_the_unfused_logits_bit_for_bit(tiny_settings, variant):
    """The bf16 CPU path runs q/k/v and gate/up as one int4 call each (serving.runner): the logits of a
    prefill and of decode steps at several batch sizes equal those of the layer-by-layer path exactly;
    int8 weights (one scale per row, another op) are left unfused."""
    import torch

    from serving.loader import load_release
    from serving.runner import NO_PROJECTIONS, SlotRunner

    loaded = load_release("model/forge-tiny@1.0.0", variant=variant, device="cpu", dtype="bfloat16",
                          settings=tiny_settings)
    fused = SlotRunner(loaded.model, slots=3, max_len=64)
    plain = SlotRunner(loaded.model, slots=3, max_len=64)
    plain._fused = [NO_PROJECTIONS] * len(plain.layers)
    n_fused = sum(None not in (p.qkv, p.o, p.gate_up, p.down) for p in fused.fused_projections())
    assert n_fused == (len(fused.layers) if variant == "int4-g32" else 0)
    ids = ids_of(loaded)
    for slot in range(3):
        assert torch.equal(fused.prefill(slot, ids[: 5 + slot]), plain.prefill(slot, ids[: 5 + slot]))
    for step in range(3):
        tokens, positions = [3 + step, 9, 11][: step + 1], [5 + step, 6 + step, 7 + step][: step + 1]
        a, b = fused.decode(tokens, positions), plain.decode(tokens, positions)
        assert a.dtype == torch.float32 and torch.isfinite(a).all()
        assert torch.equal(a, b), f"decode step {step}"
