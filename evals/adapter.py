"""An lm-eval ``LM`` over a loaded release (full precision or any quantized variant).

    lm = ForgeLM(serving.loader.load_release("model/forge-small@1.0.0", variant="int8"), batch_size=16)
    lm_eval.evaluator.evaluate(lm=lm, task_dict=...)

It answers the three request types the way lm-eval's own ``hf`` model (``HFLM``) does, so that
scores on the same checkpoint agree (tests/evals/test_adapter.py):

* tokenization: ``tokenizer.encode`` with the tokenizer's defaults (our tokenizers add no BOS);
  a context's trailing spaces move to the continuation, and the continuation's tokens are what
  encoding context + continuation adds after the context's tokens (``TemplateLM._encode_pair``);
  an empty context is the prefix token (BOS, else EOS);
* scoring: input = (context + continuation)[-(max_length + 1):][:-1] (left truncation), right
  padding, log-softmax in float32, the continuation's log-probabilities summed; ``is_greedy``
  when every continuation token is the argmax;
* rolling: lm-eval's disjoint windows of ``max_length`` tokens, the first conditioned on the
  prefix token, every token predicted exactly once.

What differs is the arithmetic's schedule, which only changes float rounding: requests whose
model inputs are identical (the choices of a multiple-choice item that differ only in their last
token, e.g. BoolQ's " yes"/" no") share one forward pass, unique inputs are sorted longest first
so a batch pads little, and only the positions that score a continuation go through the output
layer and the softmax. Generation is greedy (or sampled, if a task asks) with left padding and
stop sequences, through ``model.generate``.
"""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Any

import torch
import torch.nn.functional as F
from lm_eval.api.model import TemplateLM
from lm_eval.utils import get_rolling_token_windows, make_disjoint_window

from serving.loader import LoadedModel

DEFAULT_MAX_GEN_TOKS = 256


class ForgeLM(TemplateLM):
    backend = "causal"

    def __init__(self, loaded: LoadedModel, *, batch_size: int = 16, max_length: int | None = None) -> None:
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.loaded = loaded
        self.model = loaded.model
        self.tokenizer = loaded.tokenizer
        self._device = loaded.device
        self._batch_size = batch_size
        self._max_length = max_length or loaded.context_length
        self._keep_positions = True  # project only the scored positions (see _log_probs)
        self.forward_passes = 0  # batches run (for metrics.json)
        self.tokens_scored = 0  # input tokens fed to the model, padding excluded

    # --- what lm-eval asks of a model ---------------------------------------------------

    @property
    def eot_token_id(self) -> int:
        return self.tokenizer.eos_token_id

    @property
    def prefix_token_id(self) -> int:
        bos = self.tokenizer.bos_token_id
        return bos if bos is not None else self.tokenizer.eos_token_id

    @property
    def max_length(self) -> int:
        return self._max_length

    @property
    def max_gen_toks(self) -> int:
        return DEFAULT_MAX_GEN_TOKS

    @property
    def batch_size(self) -> int:
        return self._batch_size

    @property
    def device(self):
        return self._device

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs) -> list[int]:
        kw: dict[str, Any] = {} if add_special_tokens is None else {"add_special_tokens": add_special_tokens}
        bos = self.tokenizer.bos_token
        if add_special_tokens is None and bos and string.startswith(bos):
            kw["add_special_tokens"] = False  # the text already starts with BOS: never add a second
        # verbose=False: texts longer than the context are expected here (they are windowed or
        # left-truncated), so transformers' "longer than the maximum" warning would only mislead.
        return self.tokenizer.encode(string, verbose=False, **kw)

    def tok_decode(self, tokens, skip_special_tokens: bool = True) -> str:
        return self.tokenizer.decode(tokens, skip_special_tokens=skip_special_tokens)

    # --- scoring --------------------------------------------------------------------------

    def loglikelihood(self, requests, disable_tqdm: bool = True) -> list[tuple[float, bool]]:
        # lm-eval's tokenizing progress bar is noise in a stage log: off unless asked for.
        return super().loglikelihood(requests, disable_tqdm=disable_tqdm)

    @torch.no_grad()
    def _log_probs(self, inputs: list[list[int]], spans: list[tuple[int, int]]) -> list[torch.Tensor]:
        """Log-softmax (float32) of the next-token logits at positions ``spans[row] = (start, end)``
        of each right-padded input row: one ``(end - start, V)`` tensor per row.

        Only those positions go through the output layer and the softmax (transformers'
        ``logits_to_keep`` with a boolean mask): a multiple-choice item scores a few tokens after
        a long context, and the (vocabulary x positions) projection would otherwise cost as much
        as the rest of a small model.
        """
        width = max(len(x) for x in inputs)
        batch = torch.zeros((len(inputs), width), dtype=torch.long)
        keep = torch.zeros((len(inputs), width), dtype=torch.bool)
        for row, (x, (start, end)) in enumerate(zip(inputs, spans, strict=True)):
            batch[row, : len(x)] = torch.tensor(x, dtype=torch.long)
            keep[row, start:end] = True
        batch = batch.to(self._device)
        self.forward_passes += 1
        self.tokens_scored += sum(len(x) for x in inputs)
        logits = None
        if self._keep_positions:
            try:
                logits = self.model(input_ids=batch, logits_to_keep=keep.to(self._device)).logits
            except TypeError:  # a model class without logits_to_keep: project every position
                self._keep_positions = False
            if logits is not None and tuple(logits.shape[:-1]) != (int(keep.sum()),):
                self._keep_positions, logits = False, None
        if logits is None:
            logits = self.model(input_ids=batch).logits[keep.to(self._device)]  # (sum of spans, V)
        logp = F.log_softmax(logits.float(), dim=-1)
        return list(logp.split([end - start for start, end in spans]))

    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, **kwargs) -> list[tuple[float, bool]]:
        """``[(sum of log p(continuation), is_greedy)]`` for ``[(key, context_enc, continuation_enc)]``."""
        # Each request's model input (left-truncated to the context) and how many of its last
        # positions score the continuation; requests with the same input share a forward pass.
        groups: dict[tuple[int, ...], list[tuple[int, list[int]]]] = defaultdict(list)
        for i, (_, context_enc, continuation_enc) in enumerate(requests):
            if not continuation_enc:
                raise ValueError("an empty continuation cannot be scored")
            if len(continuation_enc) > self._max_length:
                raise ValueError(f"a continuation of {len(continuation_enc)} tokens exceeds the context "
                                 f"of {self._max_length}")
            full = list(context_enc) + list(continuation_enc)
            groups[tuple(full[-(self._max_length + 1):][:-1])].append((i, list(continuation_enc)))
        # Longest first: batches pad little, and a too-long batch fails at once, not at the end.
        order = sorted(groups, key=lambda inp: (-len(inp), inp))
        out: list[tuple[float, bool] | None] = [None] * len(requests)
        for start in range(0, len(order), self._batch_size):
            chunk = order[start : start + self._batch_size]
            # Row r scores positions [len - longest continuation of its group, len).
            spans = [(len(inp) - max(len(c) for _, c in groups[inp]), len(inp)) for inp in chunk]
            for inp, logp in zip(chunk, self._log_probs([list(x) for x in chunk], spans), strict=True):
                for i, cont in groups[inp]:
                    positions = logp[len(logp) - len(cont):]  # (len(cont), V): predictions of the continuation
                    target = torch.tensor(cont, dtype=torch.long, device=positions.device)
                    ll = positions.gather(-1, target.unsqueeze(-1)).sum()
                    greedy = bool((positions.argmax(dim=-1) == target).all())
                    out[i] = (float(ll), greedy)
        scored = [o for o in out if o is not None]
        assert len(scored) == len(requests), "every request is in one group, so every slot is filled"
        return scored

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        """Summed log-likelihood of each whole string, in disjoint windows of ``max_length`` tokens."""
        windows, owner = [], []
        for n, req in enumerate(requests):
            (string,) = req.args
            for ctx, cont in map(make_disjoint_window, get_rolling_token_windows(
                    token_list=self.tok_encode(string), prefix_token=self.prefix_token_id,
                    max_seq_len=self._max_length, context_len=1)):
                windows.append((None, ctx, cont))
                owner.append(n)
        totals = [0.0] * len(requests)
        for n, (ll, _) in zip(owner, self._loglikelihood_tokens(windows), strict=True):
            totals[n] += ll
        return totals

    # --- generation -----------------------------------------------------------------------

    @torch.no_grad()
    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        """Continuations of each context until a stop sequence (EOS always stops), batched."""
        from lm_eval.models.utils import handle_stop_sequences, normalize_gen_kwargs, postprocess_generated_text
        from lm_eval.models.utils_hf import stop_sequences_criteria

        # Requests with the same generation settings run together, longest context first.
        by_kwargs: dict[str, list[int]] = defaultdict(list)
        for n, req in enumerate(requests):
            by_kwargs[json.dumps(req.args[1], sort_keys=True, default=str)].append(n)
        out: list[str | None] = [None] * len(requests)
        eos = self.tok_decode([self.eot_token_id], skip_special_tokens=False)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.eot_token_id
        for key, members in by_kwargs.items():
            kwargs = normalize_gen_kwargs(dict(json.loads(key)), self.max_gen_toks)
            until = handle_stop_sequences(kwargs.pop("until", None), eos=eos)
            max_gen = int(kwargs.pop("max_gen_toks"))
            if max_gen >= self._max_length:
                raise ValueError(f"max_gen_toks {max_gen} leaves no room for a context of {self._max_length} tokens")
            if not kwargs.get("do_sample"):
                kwargs.pop("temperature", None)
                kwargs["do_sample"] = False
            encoded = {n: self.tok_encode(requests[n].args[0])[-(self._max_length - max_gen):] for n in members}
            members = sorted(members, key=lambda n: (-len(encoded[n]), n))
            for start in range(0, len(members), self._batch_size):
                chunk = members[start : start + self._batch_size]
                width = max(len(encoded[n]) for n in chunk)
                ids = torch.full((len(chunk), width), pad, dtype=torch.long)
                mask = torch.zeros((len(chunk), width), dtype=torch.long)
                for row, n in enumerate(chunk):  # left padding: every row ends where generation starts
                    toks = encoded[n]
                    ids[row, width - len(toks):] = torch.tensor(toks, dtype=torch.long)
                    mask[row, width - len(toks):] = 1
                generated = self.model.generate(
                    input_ids=ids.to(self._device), attention_mask=mask.to(self._device),
                    max_new_tokens=max_gen, pad_token_id=pad, use_cache=True,
                    stopping_criteria=stop_sequences_criteria(self.tokenizer, until, width, len(chunk)),
                    **kwargs,
                )
                self.forward_passes += 1
                for row, n in enumerate(chunk):
                    text = self.tok_decode(generated[row, width:].tolist())
                    out[n] = postprocess_generated_text(text, until, None)
        texts = [o for o in out if o is not None]
        assert len(texts) == len(requests), "every request is in one batch, so every slot is filled"
        return texts
