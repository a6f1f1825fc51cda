"""The inference engine: continuous batching over a slot KV cache, streaming, cancellation.

    engine = Engine(load_release("forge-tiny"), max_batch=8, max_queue=32).start()
    ids = engine.encode("Call me Ishmael.")      # text -> ids: BOS first, the same rule everywhere
    done = engine.generate(ids, SamplingParams(max_tokens=32, temperature=0.8, seed=7))
    for out in engine.stream(ids, SamplingParams(max_tokens=32)): print(out.text, end="")
    handle = engine.submit(ids, params, sink=callback)   # the server's way; handle.cancel()
    engine.stop()
    with Engine(loaded, max_batch=1, max_queue=1) as engine: ...   # started, and stopped at the end

One scheduler thread owns the model. Each loop it (1) drops requests that were cancelled or
ran past their deadline, freeing their slots at once; (2) admits waiting requests into free
slots, each with one prefill of its prompt (up to ``prefill_tokens`` prompt tokens per loop,
so a burst of long prompts cannot stall the running streams for long), which also yields its
first token; (3) runs one decode step for every running request together. Requests join and
leave the batch between steps: continuous batching at the decode step.

Batching choice: per-request caches *stacked* in one static tensor per layer (a slot per
running request, compacted so the running requests are always slots ``0..B-1``), each request
at its own position with its own attention mask; no left padding and no re-padding when a
request joins (see :mod:`serving.runner`). The queue in front of the slots is bounded:
:meth:`Engine.submit` raises :class:`QueueFullError` when ``max_queue`` requests wait.

Sampling: temperature, top-k, top-p, each request with its own ``torch.Generator`` seeded from
``seed``; stop strings (held back while they might still match, cut from the output); stop
tokens (EOS, and per request e.g. the chat turn end); ``max_tokens``; log-probabilities of the
generated tokens and, with ``echo``, of the prompt's (see :mod:`serving.sampling`).

What concurrency may change, and what it may not:

* A seeded request run alone gives identical tokens, text and logprobs every time (the same
  shapes run the same kernels with the same reduction order; the generator is its own).
* Batched with others, the *same* request may come out differently: its logits are computed in
  a matmul with other rows and over an attention length set by the longest running sequence,
  and batched float reductions can round differently from a lone request's in the last bits.
  Greedy decoding then flips where two tokens are nearly tied, and a seeded sample can cross
  a threshold; from there on the texts diverge. The scores of a prompt (echo logprobs) come
  from its own prefill and never depend on other requests.
* Nothing else crosses between requests: no shared generator, no shared cache positions.
"""

from __future__ import annotations

import itertools
import json
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch

from commonforge.errors import ForgeError, InputError
from serving.runner import SlotRunner
from serving.sampling import SamplingParams, TokenLogprob, choose_tokens, make_generator, token_logprobs
from serving.text import IncrementalDetokenizer, StopStrings

log = logging.getLogger(__name__)

FINISH_REASONS = ("stop", "length", "cancelled", "timeout", "error")


class QueueFullError(ForgeError):
    """Every slot is busy and the waiting queue is full: try again later (HTTP 429)."""


class ContextLengthError(InputError):
    """Prompt plus max_tokens exceed the model's context."""


class EngineStoppedError(ForgeError):
    """The engine is not running (stopped, or its scheduler failed)."""


@dataclass
class Output:
    """One event of a request, delivered to its sink in order; the last one has a finish_reason."""

    request_id: str
    text: str = ""  # new generated text: whole characters, stop strings never included
    tokens: list[TokenLogprob] = field(default_factory=list)  # generated tokens since the last event
    prompt: list[TokenLogprob] | None = None  # first event only, when echo: the prompt's tokens
    finish_reason: str | None = None  # one of FINISH_REASONS on the last event
    error: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None


@dataclass
class Completion:
    """All events of a request put together (what :meth:`Engine.generate` returns)."""

    text: str
    tokens: list[TokenLogprob]
    prompt: list[TokenLogprob] | None
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    error: str | None = None

    @classmethod
    def collect(cls, outputs) -> Completion:
        text: list[str] = []
        tokens: list = []
        prompt, last = None, None
        for out in outputs:
            text.append(out.text)
            tokens += out.tokens
            prompt = out.prompt if out.prompt is not None else prompt
            last = out
        if last is None:
            raise ValueError("a completion has at least one output (its final one)")
        return cls("".join(text), tokens, prompt, last.finish_reason, last.prompt_tokens,
                   last.completion_tokens, last.error)


Sink = Callable[[Output], None]


class Request:
    """A submitted request: its prompt, parameters and (on the scheduler thread) its state."""

    def __init__(self, rid: str, prompt: list[int], params: SamplingParams, sink: Sink,
                 deadline: float | None, engine: Engine) -> None:
        self.id = rid
        self.prompt = prompt
        self.params = params
        self.sink = sink
        self.deadline = deadline
        self.submitted = time.monotonic()
        self.first_token_at: float | None = None
        self._engine = engine
        self._cancelled = threading.Event()
        self.done = threading.Event()
        # scheduler state
        self.slot = -1
        self.cached = 0  # positions of this request in its slot's cache
        self.generated: list[int] = []
        self.generator = None
        self.detok = IncrementalDetokenizer(engine.tokenizer)
        self.stops = StopStrings(params.stop)
        self.stop_ids = (set() if params.ignore_eos else set(engine.eos_ids)) | set(params.stop_token_ids)

    def cancel(self) -> None:
        """Stop generating (the client went away): the slot is freed before the next step."""
        if not self.done.is_set():
            self._cancelled.set()
            self._engine._wake_up()

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    def emit(self, out: Output) -> None:
        if out.finished:
            if self.done.is_set():
                return
            self.done.set()
        try:
            self.sink(out)
        except Exception:  # noqa: BLE001 - a broken sink must never take the scheduler down
            log.exception("request %s: its sink failed; cancelling it", self.id)
            self._cancelled.set()


class Engine:
    def __init__(self, loaded, *, max_batch: int = 8, max_queue: int = 64, max_len: int | None = None,
                 prefill_tokens: int = 1024, request_timeout: float | None = None,
                 cuda_graphs: bool = True) -> None:
        self.loaded = loaded
        self.model = loaded.model
        self.tokenizer = loaded.tokenizer
        self.device = loaded.device
        self.context_length = min(loaded.context_length, max_len or loaded.context_length)
        self.max_batch = max_batch
        self.max_queue = max_queue
        self.prefill_tokens = prefill_tokens
        self.request_timeout = request_timeout
        self.vocab_size = int(self.model.config.vocab_size)
        self.eos_ids = _eos_ids(loaded)
        self.runner = SlotRunner(self.model, slots=max_batch, max_len=self.context_length, cuda_graphs=cuda_graphs)
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._waiting: deque[Request] = deque()
        self._running: list[Request] = []  # scheduler thread only; index == slot
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._failed: str | None = None
        self._ids = itertools.count(1)
        self.stats = {"completed": 0, "cancelled": 0, "timeouts": 0, "errors": 0, "rejected": 0,
                      "generated_tokens": 0, "prompt_tokens": 0, "steps": 0}

    # --- lifecycle ----------------------------------------------------------------------

    def start(self) -> Engine:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="commonforge-engine", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
        for r in [*self._waiting, *self._running]:
            r.emit(self._final(r, "cancelled", error="the server is shutting down"))
        self._waiting.clear()
        self._running.clear()

    @property
    def healthy(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and self._failed is None

    def snapshot(self) -> dict:
        with self._lock:
            waiting = len(self._waiting)
        return {"running": len(self._running), "waiting": waiting, "slots": self.max_batch,
                "max_queue": self.max_queue, "healthy": self.healthy, **self.stats}

    def __enter__(self) -> Engine:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _wake_up(self) -> None:
        with self._cond:
            self._cond.notify_all()

    # --- submitting ---------------------------------------------------------------------

    def encode(self, text: str) -> list[int]:
        """A text prompt as the model's input: the one rule for BOS, whoever asks (server, CLI, explorer).

        A prompt starts a document, and the forge trained on every document as ``BOS text EOS``
        (pipelines.train), as the chat template starts with BOS; but our tokenizers add no special
        token by themselves. So BOS goes first unless the tokenizer put it there already (Llama's
        does) or has none. Prompts given as token ids are never changed: whoever sends ids says
        exactly what the model sees (lm-eval's scoring does).
        """
        ids = list(self.tokenizer(text)["input_ids"])
        bos = self.tokenizer.bos_token_id
        if bos is not None and ids[:1] != [bos]:
            ids.insert(0, bos)
        return ids

    def check(self, prompt: list[int], params: SamplingParams) -> None:
        """Raise InputError for a request that can never run (empty, unknown ids, over the context)."""
        if not prompt:
            raise InputError("the prompt has no tokens")
        bad = [t for t in prompt if not (isinstance(t, int) and 0 <= t < self.vocab_size)]
        if bad:
            raise InputError(f"token ids must be integers in [0, {self.vocab_size}); got {bad[:5]}")
        total = len(prompt) + params.max_tokens
        if total > self.context_length:
            raise ContextLengthError(
                f"this model's maximum context length is {self.context_length} tokens; the request asks for "
                f"{total} ({len(prompt)} in the prompt, {params.max_tokens} to generate)",
                hint="shorten the prompt or lower max_tokens",
            )

    def submit_many(self, items: list[tuple[list[int], SamplingParams]], sink: Sink,
                    timeout: float | None = None) -> list[Request]:
        """Queue several requests at once (all or none); ``sink`` receives every request's outputs."""
        for prompt, params in items:
            self.check(prompt, params)
        timeout = timeout if timeout is not None else self.request_timeout
        deadline = time.monotonic() + timeout if timeout else None
        with self._cond:
            if not self.healthy:
                raise EngineStoppedError(f"the engine is not running{': ' + self._failed if self._failed else ''}",
                                         hint="restart the server")
            if len(self._waiting) + len(items) > self.max_queue:
                self.stats["rejected"] += len(items)
                raise QueueFullError(
                    f"the server is at capacity ({self.max_batch} running, {len(self._waiting)} waiting, "
                    f"queue of {self.max_queue})", hint="retry after a short wait")
            reqs = [Request(f"req-{next(self._ids)}", list(p), sp, sink, deadline, self) for p, sp in items]
            self._waiting.extend(reqs)
            self._cond.notify_all()
        return reqs

    def submit(self, prompt: list[int], params: SamplingParams, sink: Sink, timeout: float | None = None) -> Request:
        return self.submit_many([(prompt, params)], sink, timeout)[0]

    def stream(self, prompt: list[int], params: SamplingParams, timeout: float | None = None) -> Iterator[Output]:
        """Outputs as they come; closing the iterator early cancels the request."""
        q: queue.Queue[Output] = queue.Queue()
        req = self.submit(prompt, params, q.put, timeout)
        try:
            while True:
                out = q.get()
                yield out
                if out.finished:
                    return
        finally:
            req.cancel()

    def generate(self, prompt: list[int], params: SamplingParams, timeout: float | None = None) -> Completion:
        return Completion.collect(self.stream(prompt, params, timeout))

    # --- the scheduler ------------------------------------------------------------------

    def _loop(self) -> None:
        try:
            with torch.inference_mode():
                while True:
                    with self._cond:
                        while not self._stopping and not self._waiting and not self._running:
                            self._cond.wait()
                        if self._stopping:
                            return
                        dropped, admitted = self._take_waiting()
                    for r, reason in dropped:
                        self._finish(r, reason)
                    self._drop_running()
                    for r in admitted:
                        self._prefill(r)
                    if self._running:
                        self._step()
        except BaseException as err:  # noqa: BLE001 - record why, so /health and submit say so
            self._failed = f"{type(err).__name__}: {err}"
            log.exception("the engine's scheduler stopped")
            for r in [*self._running, *self._waiting]:
                r.emit(self._final(r, "error", error=self._failed))

    def _take_waiting(self) -> tuple[list[tuple[Request, str]], list[Request]]:
        # under the lock: drop cancelled/expired waiting requests, admit into free slots
        now = time.monotonic()
        dropped: list[tuple[Request, str]] = []
        keep: deque[Request] = deque()
        for r in self._waiting:
            if r.cancelled:
                dropped.append((r, "cancelled"))
            elif r.deadline is not None and now > r.deadline:
                dropped.append((r, "timeout"))
            else:
                keep.append(r)
        self._waiting = keep
        admitted: list[Request] = []
        budget = self.prefill_tokens
        while self._waiting and len(self._running) + len(admitted) < self.max_batch and (not admitted or budget > 0):
            r = self._waiting.popleft()
            budget -= len(r.prompt)
            admitted.append(r)
        return dropped, admitted

    def _drop_running(self) -> None:
        now = time.monotonic()
        gone = []
        for r in self._running:
            if r.cancelled:
                gone.append((r, "cancelled"))
            elif r.deadline is not None and now > r.deadline:
                gone.append((r, "timeout"))
        for r, reason in gone:
            self._finish(r, reason)
        if gone:
            self._compact()

    def _compact(self) -> None:
        """Keep running requests in slots 0..B-1 (relative order kept: each moves down, never onto a live slot)."""
        self._running = [r for r in self._running if not r.done.is_set()]
        for i, r in enumerate(self._running):
            if r.slot != i:
                self.runner.move(r.slot, i, r.cached)
                r.slot = i

    def _prefill(self, r: Request) -> None:
        p = r.params
        slot = len(self._running)
        want_prompt_logprobs = p.echo and p.logprobs is not None and len(r.prompt) > 1
        try:
            logits = self.runner.prefill(slot, r.prompt, all_positions=want_prompt_logprobs)
        except Exception as err:  # noqa: BLE001 - one bad request fails alone
            log.exception("prefill of %s failed", r.id)
            self._finish(r, "error", error=f"{type(err).__name__}: {err}")
            return
        self.stats["prompt_tokens"] += len(r.prompt)
        r.slot, r.cached = slot, len(r.prompt)
        prompt_info = None
        if p.echo:
            prompt_info = [TokenLogprob(r.prompt[0])]
            if want_prompt_logprobs and p.logprobs is not None:
                prompt_info += token_logprobs(logits[:-1], r.prompt[1:], [p.logprobs] * (len(r.prompt) - 1))
            else:
                prompt_info += [TokenLogprob(t) for t in r.prompt[1:]]
        if p.max_tokens == 0:
            r.emit(Output(r.id, prompt=prompt_info))
            self._finish(r, "length")
            return
        r.generator = None if p.greedy else make_generator(p.seed, self.device)
        token = choose_tokens(logits[-1:], [p], [r.generator])[0]
        info = token_logprobs(logits[-1:], [token], [p.logprobs])[0] if p.logprobs is not None else TokenLogprob(token)
        self._running.append(r)
        self._accept(r, token, info, prompt_info)
        if r.done.is_set():
            self._compact()

    def _step(self) -> None:
        running = self._running
        try:
            logits = self.runner.decode([r.generated[-1] for r in running], [r.cached for r in running])
            params = [r.params for r in running]
            chosen = choose_tokens(logits, params, [r.generator for r in running])
            infos = [TokenLogprob(t) for t in chosen]
            n_top = {i: p.logprobs for i, p in enumerate(params) if p.logprobs is not None}
            asked = list(n_top)
            if asked:
                lp = token_logprobs(logits[asked], [chosen[i] for i in asked], list(n_top.values()))
                for i, info in zip(asked, lp):
                    infos[i] = info
        except Exception as err:  # noqa: BLE001 - fail this batch, keep serving
            log.exception("decode step failed")
            for r in running:
                self._finish(r, "error", error=f"{type(err).__name__}: {err}")
            self._running = []
            return
        self.stats["steps"] += 1
        for r, token, info in zip(running, chosen, infos):
            r.cached += 1
            self._accept(r, token, info, None)
        if any(r.done.is_set() for r in running):
            self._compact()

    def _accept(self, r: Request, token: int, info: TokenLogprob, prompt_info) -> None:
        """Record a generated token; emit the text it completes; finish on stop/length."""
        if r.first_token_at is None:
            r.first_token_at = time.monotonic()
        r.generated.append(token)
        self.stats["generated_tokens"] += 1
        reason = None
        if token in r.stop_ids:
            reason = "stop"
            text = r.stops.add(r.detok.flush()) + r.stops.finish()
        else:
            text = r.stops.add(r.detok.push(token))
            if r.stops.stopped:
                reason = "stop"
            elif len(r.generated) >= r.params.max_tokens:
                reason = "length"
                text += r.stops.add(r.detok.flush())
                if r.stops.stopped:
                    reason = "stop"
                else:
                    text += r.stops.finish()
        r.emit(Output(r.id, text=text, tokens=[info], prompt=prompt_info, prompt_tokens=len(r.prompt),
                      completion_tokens=len(r.generated)))
        if reason:
            self._finish(r, reason)

    def _final(self, r: Request, reason: str, error: str | None = None) -> Output:
        return Output(r.id, finish_reason=reason, error=error, prompt_tokens=len(r.prompt),
                      completion_tokens=len(r.generated))

    def _finish(self, r: Request, reason: str, error: str | None = None) -> None:
        key = {"stop": "completed", "length": "completed", "cancelled": "cancelled",
               "timeout": "timeouts", "error": "errors"}[reason]
        if not r.done.is_set():
            self.stats[key] += 1
        if reason == "timeout" and error is None:
            error = "the request ran past its time limit"
        r.emit(self._final(r, reason, error))


def _eos_ids(loaded) -> tuple[int, ...]:
    """EOS ids from the tokenizer, config.json and generation_config.json (any of which may list several)."""
    ids: set[int] = set()

    def add(v) -> None:
        if isinstance(v, int):
            ids.add(v)
        elif isinstance(v, (list, tuple)):
            ids.update(x for x in v if isinstance(x, int))

    add(loaded.tokenizer.eos_token_id)
    add(getattr(loaded.model.config, "eos_token_id", None))
    gen = getattr(loaded, "files", {}).get("generation_config.json")
    if gen is not None:
        try:
            add(json.loads(gen.read_text(encoding="utf-8")).get("eos_token_id"))
        except (OSError, ValueError):
            pass
    return tuple(sorted(ids))
