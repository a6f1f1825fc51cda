"""Tokens to text while streaming: whole UTF-8 characters only, and stop strings held back.

A byte-level BPE token can end in the middle of a multi-byte character ("é" is two bytes, an
emoji four, often split across tokens). Decoding the tokens seen so far would then end in
U+FFFD; :class:`IncrementalDetokenizer` holds such a tail back until the character completes
(the approach of text-generation-inference: decode a short window of recent tokens and emit
only what grew). :class:`StopStrings` then holds back any tail that could still become a
stop string, so a client never sees half of one.

The chat side of text and tokens lives here too, once for every caller (the server's chat
completions, ``commonforge chat`` and ``generate``, the explorer's "try it"), free of FastAPI and
torch: :func:`chat_prompt_ids` renders messages through the release's chat template, and
:func:`chat_stop_ids` finds the end-of-turn token that ends a reply.
"""

from __future__ import annotations

REPLACEMENT = "\ufffd"


def has_chat_template(tokenizer) -> bool:
    """Whether the release says how to turn messages into a prompt (base models often do not)."""
    return bool(getattr(tokenizer, "chat_template", None))


def chat_prompt_ids(tokenizer, messages: list[dict]) -> list[int]:
    """``messages`` as the model's input: the chat template, ending in the assistant's turn.

    The template writes every special token itself (forge templates start with BOS), so the
    tokenizer adds none. Raises what the template raises for messages it refuses.
    """
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def chat_stop_ids(tokenizer) -> tuple[int, ...]:
    """The special token the chat template puts after an assistant turn (e.g. ``<|end|>``): it ends a reply."""
    if not has_chat_template(tokenizer):
        return ()
    marker = "\u2063MARK\u2063"
    try:
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": "x"}, {"role": "assistant", "content": marker}], tokenize=False)
    except Exception:  # noqa: BLE001 - a template we cannot probe simply adds no stop token
        return ()
    tail = text.split(marker, 1)[-1] if marker in text else ""
    ids = tokenizer(tail, add_special_tokens=False)["input_ids"] if tail else []
    special = set(tokenizer.all_special_ids)
    return (ids[0],) if ids and ids[0] in special else ()


class IncrementalDetokenizer:
    def __init__(self, tokenizer, *, skip_special_tokens: bool = True) -> None:
        self.tokenizer = tokenizer
        self.skip = skip_special_tokens
        self.ids: list[int] = []
        self.prefix = 0  # start of the decoding window
        self.read = 0  # tokens up to here have been emitted as text

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=self.skip, clean_up_tokenization_spaces=False)

    def push(self, token_id: int) -> str:
        """Add a token; return the text it completes (possibly empty)."""
        self.ids.append(token_id)
        before = self._decode(self.ids[self.prefix:self.read])
        after = self._decode(self.ids[self.prefix:])
        if len(after) > len(before) and not after.endswith(REPLACEMENT):
            self.prefix, self.read = self.read, len(self.ids)
            return after[len(before):]
        return ""

    def flush(self) -> str:
        """The text of tokens not yet emitted (at the end: an incomplete character stays U+FFFD)."""
        before = self._decode(self.ids[self.prefix:self.read])
        after = self._decode(self.ids[self.prefix:])
        self.prefix = self.read = len(self.ids)
        return after[len(before):]


class StopStrings:
    """Accumulates generated text; finds stop strings; says how much is safe to emit."""

    def __init__(self, stops: tuple[str, ...] | list[str]) -> None:
        self.stops = [s for s in stops if s]
        self.longest = max((len(s) for s in self.stops), default=0)
        self.text = ""
        self.emitted = 0
        self.stopped = False

    def add(self, delta: str) -> str:
        """Append ``delta``; return the newly safe text. After a stop string, ``stopped`` is set."""
        if self.stopped:
            return ""
        start = max(0, len(self.text) - self.longest + 1)
        self.text += delta
        if self.stops:
            hits = [i for i in (self.text.find(s, start) for s in self.stops) if i >= 0]
            if hits:
                self.text = self.text[: min(hits)]
                self.stopped = True
                return self._take(len(self.text))
        return self._take(len(self.text) - self._held())

    def finish(self) -> str:
        """Everything not yet emitted (generation ended without a stop string)."""
        return self._take(len(self.text))

    def _held(self) -> int:
        # the longest tail of the text that is a proper prefix of some stop string
        held = 0
        for s in self.stops:
            for n in range(min(len(s) - 1, len(self.text)), held, -1):
                if self.text.endswith(s[:n]):
                    held = n
                    break
        return held

    def _take(self, upto: int) -> str:
        upto = max(upto, self.emitted)
        out = self.text[self.emitted:upto]
        self.emitted = upto
        return out
