"""The OpenAI wire format: request bodies in (validated into engine jobs), response bodies out.

Kept apart from the routes (:mod:`serving.api`) so the shapes can be read and tested alone.
Every problem with a request is an :class:`ApiError` carrying the HTTP status and the
OpenAI error object ``{"error": {"message", "type", "param", "code"}}``.

Accepted and not (all else about a field is as in the OpenAI API):

* ``/v1/completions``: ``prompt`` as a string, a list of strings, a list of token ids or a list
  of token-id lists (one choice per prompt); ``max_tokens`` (default 16; 0 with ``echo`` scores
  the prompt only), ``temperature``, ``top_p``, ``top_k`` (extension; 0 or -1 = off), ``seed``,
  ``stop`` (string or list), ``logprobs`` (top N, 0..20), ``echo``, ``stream``, ``ignore_eos``
  (extension: generate exactly max_tokens, for benchmarks and tests),
  ``stream_options.include_usage``; ``n`` and ``best_of`` only 1; non-zero penalties,
  ``logit_bias`` and ``suffix`` are refused (400) rather than silently ignored.
* ``/v1/chat/completions``: ``messages`` (roles system/user/assistant, content a string or text
  parts) rendered with the chat template stored with the release's tokenizer;
  ``max_tokens`` / ``max_completion_tokens`` (default: the rest of the context), ``logprobs`` +
  ``top_logprobs``, and the sampling fields above.
* Unknown fields are ignored (clients send vendor extras), known ones are checked strictly.
"""

from __future__ import annotations

import math
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from serving.sampling import MAX_TOP_LOGPROBS, SamplingParams, TokenLogprob

MAX_STOP_STRINGS = 16


class ApiError(Exception):
    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def bad(message: str, param: str | None = None, code: str | None = None) -> ApiError:
    return ApiError(400, message, param=param, code=code)


# --- field checks ---------------------------------------------------------------------------


def _opt(body: dict, key: str, kind, default, *, param: str | None = None):
    value = body.get(key)
    if value is None:
        return default
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
                return int(value)
            raise bad(f"'{key}' must be an integer", param or key)
        return value
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise bad(f"'{key}' must be a finite number", param or key)
        return float(value)
    if kind is bool:
        if not isinstance(value, bool):
            raise bad(f"'{key}' must be true or false", param or key)
        return value
    if kind is str:
        if not isinstance(value, str):
            raise bad(f"'{key}' must be a string", param or key)
        return value
    raise AssertionError(kind)


def check_text(value: str, param: str) -> str:
    """Refuse strings that are not valid Unicode scalar values (lone surrogates from JSON escapes)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise bad(f"'{param}' is not valid UTF-8 text (it contains a lone surrogate)", param) from None
    return value


def _stop(body: dict) -> tuple[str, ...]:
    stop = body.get("stop")
    if stop is None:
        return ()
    if isinstance(stop, str):
        stop = [stop]
    if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
        raise bad("'stop' must be a string or a list of strings", "stop")
    if len(stop) > MAX_STOP_STRINGS:
        raise bad(f"at most {MAX_STOP_STRINGS} stop strings", "stop")
    return tuple(check_text(s, "stop") for s in stop if s)


def _unsupported(body: dict) -> None:
    n = _opt(body, "n", int, 1)
    if n != 1:
        raise bad("only n=1 is supported (send several requests instead)", "n")
    best_of = _opt(body, "best_of", int, 1)
    if best_of != 1:
        raise bad("best_of is not supported", "best_of")
    for key in ("presence_penalty", "frequency_penalty"):
        if _opt(body, key, float, 0.0) != 0.0:
            raise bad(f"'{key}' is not supported", key)
    if body.get("logit_bias"):
        raise bad("'logit_bias' is not supported", "logit_bias")
    if body.get("suffix"):
        raise bad("'suffix' is not supported", "suffix")


def sampling_params(body: dict, *, max_tokens: int, logprobs: int | None, echo: bool,
                    stop_token_ids: tuple[int, ...] = ()) -> SamplingParams:
    temperature = _opt(body, "temperature", float, 1.0)
    if not 0 <= temperature <= 2:
        raise bad("'temperature' must be between 0 and 2", "temperature")
    top_p = _opt(body, "top_p", float, 1.0)
    if not 0 < top_p <= 1:
        raise bad("'top_p' must be greater than 0 and at most 1", "top_p")
    top_k = _opt(body, "top_k", int, 0)
    if top_k < -1:
        raise bad("'top_k' must be -1 or 0 (off) or a positive number of tokens", "top_k")
    seed = _opt(body, "seed", int, None)
    if seed is not None and not -(2**63) <= seed < 2**64:
        raise bad("'seed' must fit in 64 bits", "seed")
    return SamplingParams(
        max_tokens=max_tokens, temperature=temperature, top_p=top_p, top_k=max(top_k, 0),
        seed=None if seed is None else seed % 2**63, stop=_stop(body), stop_token_ids=stop_token_ids,
        logprobs=logprobs, echo=echo, ignore_eos=_opt(body, "ignore_eos", bool, False),
    )


def _max_tokens(body: dict, keys: tuple[str, ...]) -> int | None:
    """The first of ``keys`` the body sets (>= 0), else None."""
    for key in keys:
        if body.get(key) is not None:
            value = _opt(body, key, int, None)
            if value < 0:
                raise bad(f"'{key}' must be >= 0", key)
            return value
    return None


def stream_flags(body: dict) -> tuple[bool, bool]:
    stream = _opt(body, "stream", bool, False)
    options = body.get("stream_options") or {}
    if not isinstance(options, dict):
        raise bad("'stream_options' must be an object", "stream_options")
    include_usage = bool(options.get("include_usage", False))
    return stream, include_usage


# --- jobs -----------------------------------------------------------------------------------


@dataclass
class Prompt:
    ids: list[int] | None  # given as token ids
    text: str | None  # given as text (tokenized by the route)


@dataclass
class CompletionJob:
    model: str
    prompts: list[Prompt]
    max_tokens: int
    logprobs: int | None
    echo: bool
    stream: bool
    include_usage: bool
    body: dict = field(repr=False, default_factory=dict)


def require_object(body: Any) -> dict:
    if not isinstance(body, dict):
        raise bad("the request body must be a JSON object")
    return body


def require_model(body: dict) -> str:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise bad("'model' is required (see GET /v1/models)", "model")
    return model


def _is_ids(x) -> bool:
    return isinstance(x, list) and len(x) > 0 and all(isinstance(t, int) and not isinstance(t, bool) for t in x)


def completion_job(body: Any, *, max_prompts: int) -> CompletionJob:
    body = require_object(body)
    model = require_model(body)
    _unsupported(body)
    raw = body.get("prompt")
    if isinstance(raw, str):
        prompts = [Prompt(None, check_text(raw, "prompt"))]
    elif _is_ids(raw):
        prompts = [Prompt(list(raw), None)]
    elif isinstance(raw, list) and raw and all(isinstance(p, str) for p in raw):
        prompts = [Prompt(None, check_text(p, "prompt")) for p in raw]
    elif isinstance(raw, list) and raw and all(_is_ids(p) for p in raw):
        prompts = [Prompt(list(p), None) for p in raw]
    else:
        raise bad("'prompt' must be a string, a list of strings, a list of token ids or a list of "
                  "non-empty token-id lists", "prompt")
    if len(prompts) > max_prompts:
        raise bad(f"at most {max_prompts} prompts per request", "prompt")
    logprobs = _opt(body, "logprobs", int, None)
    if logprobs is not None and not 0 <= logprobs <= MAX_TOP_LOGPROBS:
        raise bad(f"'logprobs' must be between 0 and {MAX_TOP_LOGPROBS}", "logprobs")
    echo = _opt(body, "echo", bool, False)
    max_tokens = _max_tokens(body, ("max_tokens",))
    max_tokens = 16 if max_tokens is None else max_tokens  # the completions API's default
    stream, include_usage = stream_flags(body)
    return CompletionJob(model, prompts, max_tokens, logprobs, echo, stream, include_usage, body)


@dataclass
class ChatJob:
    model: str
    messages: list[dict]
    max_tokens: int | None  # None: the rest of the context
    logprobs: int | None
    stream: bool
    include_usage: bool
    body: dict = field(repr=False, default_factory=dict)


def chat_job(body: Any) -> ChatJob:
    body = require_object(body)
    model = require_model(body)
    _unsupported(body)
    raw = body.get("messages")
    if not isinstance(raw, list) or not raw:
        raise bad("'messages' must be a non-empty list", "messages")
    messages = []
    for i, m in enumerate(raw):
        where = f"messages[{i}]"
        if not isinstance(m, dict):
            raise bad(f"{where} must be an object", where)
        role, content = m.get("role"), m.get("content")
        if role not in ("system", "user", "assistant", "developer"):
            raise bad(f"{where}.role must be system, user or assistant", f"{where}.role")
        if isinstance(content, list):
            parts = []
            for part in content:
                if not (isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str)):
                    raise bad(f"{where}.content: only text parts are supported", f"{where}.content")
                parts.append(part["text"])
            content = "".join(parts)
        if not isinstance(content, str):
            raise bad(f"{where}.content must be a string or a list of text parts", f"{where}.content")
        messages.append({"role": "system" if role == "developer" else role,
                         "content": check_text(content, f"{where}.content")})
    want = _opt(body, "logprobs", bool, False)
    top = _opt(body, "top_logprobs", int, None)
    if top is not None and not 0 <= top <= MAX_TOP_LOGPROBS:
        raise bad(f"'top_logprobs' must be between 0 and {MAX_TOP_LOGPROBS}", "top_logprobs")
    if top is not None and not want:
        raise bad("'top_logprobs' needs 'logprobs': true", "top_logprobs")
    stream, include_usage = stream_flags(body)
    return ChatJob(model, messages, _max_tokens(body, ("max_completion_tokens", "max_tokens")),
                   (top or 0) if want else None, stream, include_usage, body)


# --- responses ------------------------------------------------------------------------------


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


class TokenText:
    """Token id -> its text (for logprobs), cached: decode of one token, special tokens shown."""

    def __init__(self, tokenizer) -> None:
        self.tokenizer = tokenizer
        self._cache: dict[int, str] = {}

    def __call__(self, token_id: int) -> str:
        s = self._cache.get(token_id)
        if s is None:
            s = self.tokenizer.decode([token_id], skip_special_tokens=False, clean_up_tokenization_spaces=False)
            self._cache[token_id] = s
        return s


def completion_logprobs(tokens: list[TokenLogprob], token_text: TokenText, offset: int, *, unprinted: int = 0) -> dict:
    """The legacy completions ``logprobs`` object for a run of tokens starting at text ``offset``.

    The first ``unprinted`` tokens (a BOS the server put before a text prompt) take no characters
    of the returned text: they are listed at ``offset`` and do not move it.
    """
    out: dict[str, list] = {"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []}
    for k, t in enumerate(tokens):
        s = token_text(t.id)
        out["tokens"].append(s)
        out["token_logprobs"].append(t.logprob)
        if t.logprob is None:
            out["top_logprobs"].append(None)
        else:
            top = {token_text(i): lp for i, lp in reversed(t.top)}  # best wins a key clash
            top.setdefault(s, t.logprob)
            out["top_logprobs"].append(dict(sorted(top.items(), key=lambda kv: -kv[1])))
        out["text_offset"].append(offset)
        if k >= unprinted:
            offset += len(s)
    return out


def chat_logprobs(tokens: list[TokenLogprob], token_text: TokenText) -> dict:
    def entry(token_id: int, lp: float | None) -> dict:
        s = token_text(token_id)
        return {"token": s, "logprob": lp, "bytes": list(s.encode("utf-8"))}

    return {"content": [{**entry(t.id, t.logprob), "top_logprobs": [entry(i, lp) for i, lp in t.top]}
                        for t in tokens]}


def usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def envelope(kind: str, rid: str, model: str, choices: list, **extra) -> dict:
    return {"id": rid, "object": kind, "created": int(time.time()), "model": model, "choices": choices, **extra}
