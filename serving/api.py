"""The OpenAI-compatible HTTP server (FastAPI + uvicorn) over one loaded release.

    GET  /health                 engine state (200 ok, 503 when the scheduler is down)
    GET  /v1/models              the one model served, under its id (and its aliases)
    POST /v1/completions         prompt(s) as text or token ids; logprobs + echo for scoring
    POST /v1/chat/completions    messages through the release's chat template
    (both stream with server-sent events: ``data: {...}`` chunks, then ``data: [DONE]``)

    app = create_app(engine)                       # tests, embedding
    serve(engine, host="127.0.0.1", port=8000)     # blocking; what `commonforge serve` runs

Safety rails: it binds 127.0.0.1 unless told otherwise, and then only with an API key
(``Authorization: Bearer <key>``, compared in constant time); request bodies are capped
(413); a full queue answers 429 at once; each request has a time limit (408); prompt plus
max_tokens must fit the context (400, code ``context_length_exceeded``). A client that goes
away, streaming or not, cancels its request, which frees its slot before the next decode step.
Errors are OpenAI-shaped: ``{"error": {"message", "type", "param", "code"}}``. Nothing a
client sends can stop the server: every failure is one request's error, never the process's.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from commonforge.errors import ForgeError, InputError
from commonforge.settings import is_loopback
from serving.engine import (
    Completion,
    ContextLengthError,
    Engine,
    EngineStoppedError,
    Output,
    QueueFullError,
)
from serving.protocol import (
    ApiError,
    TokenText,
    bad,
    chat_job,
    chat_logprobs,
    completion_job,
    completion_logprobs,
    envelope,
    new_id,
    sampling_params,
    usage,
)
from serving.text import chat_prompt_ids, chat_stop_ids, has_chat_template

log = logging.getLogger(__name__)

DEFAULT_MAX_BODY = 4 << 20  # bytes
# Seconds a request may take, queueing included: the request_timeout `commonforge serve` gives
# its Engine (which enforces it) unless --timeout says otherwise.
DEFAULT_TIMEOUT = 300.0
POLL_S = 0.1  # how often a waiting non-streaming request checks that its client is still there


# --- what is served -----------------------------------------------------------------------


@dataclass
class Served:
    engine: Engine
    id: str  # "forge-tiny@1.0.0" (":int8" for a quantized variant)
    aliases: set[str]
    created: int = field(default_factory=lambda: int(time.time()))

    @classmethod
    def of(cls, engine: Engine) -> Served:
        loaded = engine.loaded
        rel = loaded.release
        if rel is None:
            raise ForgeError("only a registered release can be served", hint="load one with serving.loader.load_release")
        suffix = "" if loaded.variant == "full" else f":{loaded.variant}"
        ident = f"{rel.name}@{rel.version}{suffix}"
        aliases = {ident, f"{rel.ref}{suffix}", f"{rel.name}{suffix}"}
        if suffix:
            aliases |= {f"{rel.name}@{rel.version}", rel.ref, rel.name}  # only one model is served
        return cls(engine, ident, aliases)

    def check_model(self, name: str) -> None:
        if name not in self.aliases:
            raise ApiError(404, f"the model '{name}' does not exist here; this server serves '{self.id}'",
                           param="model", code="model_not_found")

    def card(self) -> dict:
        loaded = self.engine.loaded
        assert loaded.release is not None  # Served.of refuses a model without a release
        return {"id": self.id, "object": "model", "created": self.created, "owned_by": "commonforge",
                "root": loaded.release.ref, "variant": loaded.variant,
                "release_digest": loaded.release.release_digest,
                "context_length": self.engine.context_length}


# --- the app ------------------------------------------------------------------------------


def create_app(engine: Engine, *, api_key: str | None = None, max_body_bytes: int = DEFAULT_MAX_BODY) -> FastAPI:
    served = Served.of(engine)
    tokenizer = engine.tokenizer
    token_text = TokenText(tokenizer)
    chat_stops = chat_stop_ids(tokenizer)
    app = FastAPI(title="commonforge", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.served = served

    # --- errors, always OpenAI-shaped

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, err: ApiError):
        return JSONResponse(err.body(), status_code=err.status)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, err: StarletteHTTPException):
        kind = "not_found_error" if err.status_code == 404 else "invalid_request_error"
        return JSONResponse(ApiError(err.status_code, str(err.detail), type=kind).body(), status_code=err.status_code)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, err: RequestValidationError):
        return JSONResponse(bad(f"invalid request: {err.errors()[:3]}").body(), status_code=400)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, err: Exception):
        log.exception("unexpected error in %s", request.url.path)
        return JSONResponse(ApiError(500, "internal server error", type="server_error").body(), status_code=500)

    def authorize(request: Request) -> None:
        if api_key is None:
            return
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), api_key.encode()):
            raise ApiError(401, "a valid API key is required (Authorization: Bearer <key>)",
                           type="authentication_error", code="invalid_api_key")

    async def read_json(request: Request):
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > max_body_bytes):
            raise ApiError(413, f"the request body is larger than {max_body_bytes} bytes", code="body_too_large")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > max_body_bytes:
                raise ApiError(413, f"the request body is larger than {max_body_bytes} bytes", code="body_too_large")
            chunks.append(chunk)
        data = b"".join(chunks)
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as err:
            raise bad(f"the request body is not valid UTF-8 (byte {err.start})") from None
        try:
            return json.loads(text)
        except ValueError as err:
            raise bad(f"the request body is not valid JSON: {err}") from None

    # --- routes

    @app.get("/health")
    async def health():
        snap = engine.snapshot()
        ok = snap["healthy"]
        return JSONResponse({"status": "ok" if ok else "unhealthy", "model": served.id, **snap},
                            status_code=200 if ok else 503)

    @app.get("/v1/models")
    async def models(request: Request):
        authorize(request)
        return {"object": "list", "data": [served.card()]}

    @app.get("/v1/models/{model_id:path}")
    async def model(model_id: str, request: Request):
        authorize(request)
        served.check_model(model_id)
        return served.card()

    @app.post("/v1/completions")
    async def completions(request: Request):
        authorize(request)
        job = completion_job(await read_json(request), max_prompts=max(1, engine.max_queue))
        served.check_model(job.model)
        params = sampling_params(job.body, max_tokens=job.max_tokens, logprobs=job.logprobs, echo=job.echo)
        for p in job.prompts:
            if p.ids is not None and not all(0 <= t < engine.vocab_size for t in p.ids):
                raise bad(f"token ids must be in [0, {engine.vocab_size})", "prompt")

        def tokenize():
            out = []
            for p in job.prompts:
                if p.ids is not None:
                    out.append((p.ids, tokenizer.decode(p.ids, skip_special_tokens=False,
                                                        clean_up_tokenization_spaces=False), 0))
                else:
                    # BOS first (the rule of Engine.encode, which the CLI and the explorer follow too); the
                    # echo gives the prompt back as sent, its tokens what the model saw (as vLLM does):
                    # a BOS the server put first has no characters in that text (text_offset 0).
                    ids = engine.encode(p.text)
                    out.append((ids, p.text, len(ids) - len(tokenizer(p.text)["input_ids"])))
            return out

        prompts = await run_in_threadpool(tokenize)
        return await run(request, "text_completion", [(ids, params) for ids, _, _ in prompts], job.stream,
                         job.include_usage, prompt_texts=[t for _, t, _ in prompts], echo=job.echo,
                         unprinted=[n for _, _, n in prompts])

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        authorize(request)
        job = chat_job(await read_json(request))
        served.check_model(job.model)
        if not has_chat_template(tokenizer):
            raise bad("this model has no chat template; use /v1/completions", "messages")
        try:
            ids = await run_in_threadpool(chat_prompt_ids, tokenizer, job.messages)
        except Exception as err:  # noqa: BLE001 - the template refused these messages
            raise bad(f"the chat template refused these messages: {err}", "messages") from None
        max_tokens = job.max_tokens if job.max_tokens is not None else max(0, engine.context_length - len(ids))
        if max_tokens == 0 and job.max_tokens is None:
            raise bad(f"the conversation ({len(ids)} tokens) fills the model's context "
                      f"({engine.context_length} tokens)", "messages", "context_length_exceeded")
        params = sampling_params(job.body, max_tokens=max_tokens, logprobs=job.logprobs, echo=False,
                                 stop_token_ids=chat_stops)
        return await run(request, "chat.completion", [(ids, params)], job.stream, job.include_usage)

    # --- running requests

    async def run(request: Request, kind: str, items, stream: bool, include_usage: bool, *,
                  prompt_texts: list[str] | None = None, echo: bool = False, unprinted: list[int] | None = None):
        loop = asyncio.get_running_loop()
        q: asyncio.Queue[Output] = asyncio.Queue()

        def sink(out: Output) -> None:  # called on the scheduler thread
            try:
                loop.call_soon_threadsafe(q.put_nowait, out)
            except RuntimeError:
                pass  # the event loop is gone: the server is shutting down

        try:
            reqs = engine.submit_many(items, sink)
        except ContextLengthError as err:
            raise bad(err.message, "messages" if kind == "chat.completion" else "prompt",
                      "context_length_exceeded") from None
        except QueueFullError as err:
            raise ApiError(429, f"{err.message}; retry after a short wait", type="rate_limit_error",
                           code="queue_full") from None
        except EngineStoppedError as err:
            raise ApiError(503, err.message, type="server_error", code="engine_unavailable") from None
        except InputError as err:
            raise bad(err.message, "prompt") from None
        index = {r.id: i for i, r in enumerate(reqs)}
        rid = new_id("cmpl" if kind == "text_completion" else "chatcmpl")
        model_id = served.id
        shape = _Shaper(kind, rid, model_id, token_text, items, prompt_texts, echo, unprinted)

        def cancel_all() -> None:
            for r in reqs:
                r.cancel()

        if stream:
            async def events() -> AsyncIterator[str]:
                try:
                    remaining = len(reqs)
                    if kind == "chat.completion":
                        yield _sse(shape.chat_chunk(0, {"role": "assistant", "content": ""}, None, None))
                    while remaining:
                        out = await q.get()
                        i = index[out.request_id]
                        for chunk in shape.stream_chunks(i, out):
                            yield _sse(chunk)
                        if out.finished:
                            remaining -= 1
                    if include_usage:
                        yield _sse(envelope(kind + ".chunk" if kind == "chat.completion" else kind, rid, model_id,
                                            [], usage=shape.usage()))
                    yield "data: [DONE]\n\n"
                finally:
                    cancel_all()  # no-op for finished requests; frees the slots of a vanished client

            return StreamingResponse(events(), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

        per: list[list[Output]] = [[] for _ in reqs]
        remaining = len(reqs)
        checked = time.monotonic()
        try:
            while remaining:
                # outputs arrive per token: look for a vanished client by the clock, not on idle only
                if time.monotonic() - checked >= POLL_S:
                    if await request.is_disconnected():
                        return Response(status_code=499)
                    checked = time.monotonic()
                try:
                    out = await asyncio.wait_for(q.get(), POLL_S)
                except TimeoutError:
                    continue
                per[index[out.request_id]].append(out)
                if out.finished:
                    remaining -= 1
        finally:
            cancel_all()
        results = [Completion.collect(p) for p in per]
        for c in results:
            if c.finish_reason == "timeout":
                raise ApiError(408, "the request ran past the server's time limit", type="timeout_error",
                               code="request_timeout")
            if c.finish_reason == "error":
                raise ApiError(500, f"generation failed: {c.error}", type="server_error")
            if c.finish_reason == "cancelled":
                raise ApiError(503, c.error or "the request was cancelled", type="server_error")
        return shape.full(results)

    return app


def _sse(obj: dict) -> str:
    return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"


class _Shaper:
    """Builds the response bodies of one HTTP request (several prompts for completions)."""

    def __init__(self, kind, rid, model, token_text, items, prompt_texts, echo, unprinted=None) -> None:
        self.kind, self.rid, self.model, self.token_text = kind, rid, model, token_text
        self.items = items
        self.prompt_texts = prompt_texts or [""] * len(items)
        self.echo = echo
        self.offsets = [len(t) if not echo else 0 for t in self.prompt_texts]
        # echoed leading tokens the server added (BOS), which take no characters of the text
        self.unprinted = list(unprinted) if echo and unprinted else [0] * len(items)
        self.started = [False] * len(items)
        self.counts = [(len(ids), 0) for ids, _ in items]

    def usage(self) -> dict:
        return usage(sum(p for p, _ in self.counts), sum(c for _, c in self.counts))

    def _logprobs(self, i: int, tokens) -> dict | None:
        params = self.items[i][1]
        if params.logprobs is None:
            return None
        if self.kind == "chat.completion":
            return chat_logprobs(tokens, self.token_text)
        lp = completion_logprobs(tokens, self.token_text, self.offsets[i], unprinted=self.unprinted[i])
        self.offsets[i] += sum(len(s) for s in lp["tokens"][self.unprinted[i]:])
        self.unprinted[i] = 0
        return lp

    def full(self, results: list[Completion]) -> dict:
        choices = []
        for i, c in enumerate(results):
            self.counts[i] = (c.prompt_tokens or len(self.items[i][0]), c.completion_tokens)
            if self.kind == "chat.completion":
                choices.append({"index": i, "message": {"role": "assistant", "content": c.text},
                                "logprobs": self._logprobs(i, c.tokens), "finish_reason": c.finish_reason})
            else:
                tokens = (c.prompt or []) + c.tokens if self.echo else c.tokens
                text = (self.prompt_texts[i] if self.echo else "") + c.text
                choices.append({"index": i, "text": text, "logprobs": self._logprobs(i, tokens),
                                "finish_reason": c.finish_reason})
        return envelope(self.kind, self.rid, self.model, choices, usage=self.usage())

    def chat_chunk(self, i: int, delta: dict, logprobs, finish) -> dict:
        return envelope("chat.completion.chunk", self.rid, self.model,
                        [{"index": i, "delta": delta, "logprobs": logprobs, "finish_reason": finish}])

    def stream_chunks(self, i: int, out: Output) -> list[dict]:
        if out.prompt_tokens:
            self.counts[i] = (out.prompt_tokens, out.completion_tokens)
        if out.finish_reason in ("timeout", "error", "cancelled"):
            status, kind = {"timeout": (408, "timeout_error")}.get(out.finish_reason, (500, "server_error"))
            message = out.error or f"the request was {out.finish_reason}"
            return [ApiError(status, message, type=kind, code=out.finish_reason).body()]
        chunks = []
        if self.kind == "chat.completion":
            if out.text or (out.tokens and self.items[i][1].logprobs is not None):
                chunks.append(self.chat_chunk(i, {"content": out.text}, self._logprobs(i, out.tokens), None))
            if out.finished:
                chunks.append(self.chat_chunk(i, {}, None, out.finish_reason))
            return chunks
        text, tokens = out.text, out.tokens
        if self.echo and not self.started[i]:
            text = self.prompt_texts[i] + text
            tokens = (out.prompt or []) + tokens
        self.started[i] = True
        if text or (tokens and self.items[i][1].logprobs is not None):
            chunks.append(envelope(self.kind, self.rid, self.model, [
                {"index": i, "text": text, "logprobs": self._logprobs(i, tokens), "finish_reason": None}]))
        if out.finished:
            chunks.append(envelope(self.kind, self.rid, self.model, [
                {"index": i, "text": "", "logprobs": None, "finish_reason": out.finish_reason}]))
        return chunks


# --- running the server ---------------------------------------------------------------------


def check_binding(host: str, api_key: str | None) -> None:
    if not is_loopback(host) and not api_key:
        raise InputError(
            f"binding to {host} would expose the model beyond this machine without an API key",
            hint="give --api-key KEY (clients send 'Authorization: Bearer KEY'), or bind 127.0.0.1",
        )


def serve(engine: Engine, *, host: str = "127.0.0.1", port: int = 8000, api_key: str | None = None,
          max_body_bytes: int = DEFAULT_MAX_BODY, on_started: Callable[[str, int], None] | None = None,
          log_level: str = "warning") -> None:
    """Run the server until interrupted (blocking). ``port=0`` picks a free port (see ``on_started``)."""
    import uvicorn

    check_binding(host, api_key)
    app = create_app(engine, api_key=api_key, max_body_bytes=max_body_bytes)
    config = uvicorn.Config(
        app, host=host, port=port, log_level=log_level, access_log=False, lifespan="off",
        # connections beyond this get 503 from uvicorn; well above what the queue admits (429)
        limit_concurrency=4 * (engine.max_batch + engine.max_queue) + 64,
        timeout_graceful_shutdown=5, server_header=False,
    )

    class _Server(uvicorn.Server):
        async def startup(self, sockets=None) -> None:
            await super().startup(sockets)
            if self.started and on_started is not None:
                bound_host, bound_port = self.servers[0].sockets[0].getsockname()[:2]
                on_started(bound_host, bound_port)

    engine.start()
    try:
        _Server(config).run()
    finally:
        engine.stop()
