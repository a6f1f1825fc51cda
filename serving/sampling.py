"""Sampling parameters, token choice and log-probabilities for one decode step.

Each request samples with its *own* ``torch.Generator`` (seeded from ``seed``, or from the
OS when there is none), row by row, so what one request draws never depends on which other
requests share its batch: only the logits do (see :mod:`serving.engine` on batched floats).

Log-probabilities are those of the model's own distribution (``log_softmax`` of the raw
logits), before temperature, top-k and top-p: what a scorer (lm-eval) needs, and what the
OpenAI API reports.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

MAX_TOP_LOGPROBS = 20


@dataclass(frozen=True)
class SamplingParams:
    max_tokens: int = 16  # tokens to generate; 0 = none (scoring the prompt with echo)
    temperature: float = 1.0  # 0 = greedy
    top_p: float = 1.0  # nucleus: keep the smallest set of tokens whose probability reaches top_p
    top_k: int = 0  # keep the k most likely tokens; 0 = all
    seed: int | None = None  # a seeded request run alone gives the same tokens every time
    stop: tuple[str, ...] = ()  # stop strings (not included in the output)
    stop_token_ids: tuple[int, ...] = ()  # extra tokens that end generation (besides EOS)
    logprobs: int | None = None  # None: none; N: the chosen token's logprob and the top N
    echo: bool = False  # also report the prompt's tokens (with logprobs if asked)
    ignore_eos: bool = False

    def __post_init__(self) -> None:
        if self.max_tokens < 0:
            raise ValueError("max_tokens must be >= 0")
        if not (0 <= self.temperature <= 2) or math.isnan(self.temperature):
            raise ValueError("temperature must be between 0 and 2")
        if not (0 < self.top_p <= 1):
            raise ValueError("top_p must be in (0, 1]")
        if self.top_k < 0:
            raise ValueError("top_k must be >= 0 (0 = off)")
        if self.logprobs is not None and not (0 <= self.logprobs <= MAX_TOP_LOGPROBS):
            raise ValueError(f"logprobs must be between 0 and {MAX_TOP_LOGPROBS}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0 or self.top_k == 1


@dataclass
class TokenLogprob:
    """A token and, when asked for, its log-probability and the most likely alternatives."""

    id: int
    logprob: float | None = None  # None for the first prompt token (nothing predicts it)
    top: list[tuple[int, float]] = field(default_factory=list)  # (token id, logprob), best first


def make_generator(seed: int | None, device: torch.device) -> torch.Generator:
    g = torch.Generator(device=device)
    if seed is None:
        g.seed()
    else:
        g.manual_seed(seed)
    return g


def filter_logits(logits: torch.Tensor, params: SamplingParams) -> torch.Tensor:
    """Temperature, then top-k, then top-p on one row of logits [V] (float32); -inf for dropped tokens."""
    x = logits / params.temperature
    if params.top_k and params.top_k < x.shape[-1]:
        kth = torch.topk(x, params.top_k).values[-1]
        x = x.masked_fill(x < kth, float("-inf"))
    if params.top_p < 1.0:
        sorted_x, order = torch.sort(x, descending=True)
        probs = torch.softmax(sorted_x, dim=-1)
        # drop a token when the tokens before it already reach top_p (the first always stays)
        drop = (torch.cumsum(probs, dim=-1) - probs) >= params.top_p
        x = x.masked_fill(torch.zeros_like(drop).scatter(0, order, drop), float("-inf"))
    return x


def choose_tokens(logits: torch.Tensor, params: list[SamplingParams], generators: list[torch.Generator]) -> list[int]:
    """One token per row of ``logits`` [B, V] (float32)."""
    greedy = logits.argmax(dim=-1).tolist()  # one sync for every greedy row
    out = []
    for b, p in enumerate(params):
        if p.greedy:
            out.append(greedy[b])
            continue
        probs = torch.softmax(filter_logits(logits[b], p), dim=-1)
        out.append(int(torch.multinomial(probs, 1, generator=generators[b]).item()))
    return out


def token_logprobs(logits: torch.Tensor, chosen: list[int], n_top: list[int]) -> list[TokenLogprob]:
    """Logprobs of ``chosen[b]`` under row ``b`` of ``logits`` [B, V], with the top ``n_top[b]`` tokens."""
    logp = torch.log_softmax(logits, dim=-1)
    idx = torch.tensor(chosen, device=logits.device)
    picked = logp.gather(1, idx[:, None])[:, 0].tolist()
    k = max(n_top) if n_top else 0
    tops_v: list[list[float]] = []
    tops_i: list[list[int]] = []
    if k:
        values, indices = logp.topk(k, dim=-1)
        tops_v, tops_i = values.tolist(), indices.tolist()
    out = []
    for b, tok in enumerate(chosen):
        top = list(zip(tops_i[b][: n_top[b]], tops_v[b][: n_top[b]])) if k else []
        out.append(TokenLogprob(tok, picked[b], top))
    return out
