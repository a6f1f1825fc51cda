"""The "try it" box: a few tokens from a release, on the CPU, through the release loader.

    loaded = load(forge, release, "full")          # serving.loader.load_release: verified first
    out = generate(loaded, "Call me Ishmael.", GenerationSettings(max_new_tokens=40))

Generation goes through :mod:`serving`'s engine and sampling, as ``commonforge generate`` and
the server do, so the same prompt, settings and seed give the same text in each. By default the
prompt is one user message through the release's chat template and the reply stops at the end of
the model's turn: ``commonforge generate`` and /v1/chat/completions (:func:`serving.text.chat_prompt_ids`,
:func:`serving.text.chat_stop_ids`). ``raw=True``, or a release without a template, continues the
prompt as plain text instead (BOS first: :meth:`serving.engine.Engine.encode`), as
``commonforge generate --raw`` and /v1/completions do. Greedy, or seeded sampling (temperature,
top-k); stops at the end-of-text token or the cap. torch is imported only when a model is loaded.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

from commonforge.errors import ForgeError
from explorer.data import Forge
from explorer.search import escape_markdown
from registry.schema import Release

MAX_NEW_TOKENS = 128  # the box's hard cap: this is a demo on a CPU, not a server


@dataclass(frozen=True)
class GenerationSettings:
    max_new_tokens: int = 40
    sample: bool = False  # False: greedy (argmax)
    temperature: float = 0.8
    top_k: int = 40
    seed: int = 0
    raw: bool = False  # True: continue the prompt as text; False: the chat template, where the release has one


@dataclass(frozen=True)
class Generation:
    prompt: str
    text: str  # the continuation only
    new_tokens: int
    prompt_tokens: int
    seconds: float
    stopped: str  # "eos" (end of text, or of the turn in a chat) | "length"
    chat: bool = False  # the prompt went through the chat template (text is then the reply)

    @property
    def tokens_per_second(self) -> float:
        return self.new_tokens / self.seconds if self.seconds > 0 else 0.0


def load(forge: Forge, release: Release, variant: str = "full", *, allow_revoked: bool = False):
    """Verify and load a release for the CPU through :func:`serving.loader.load_release` (which
    refuses a revoked release unless ``allow_revoked``, as the CLI does)."""
    from dataclasses import replace

    from commonforge.settings import Settings
    from serving.loader import load_release

    # The checkout and store the explorer browses, wherever it was started from.
    settings = replace(Settings.load(forge.root), store_dir=forge.store_dir, mlflow_uri=forge.mlflow_uri)
    return load_release(release, variant=None if variant == "full" else variant, device="cpu", settings=settings,
                        allow_revoked=allow_revoked)


def generate(loaded, prompt: str, settings: GenerationSettings) -> Generation:
    """Answer ``prompt`` (or continue it, raw) through serving's engine: what the CLI and the server give."""
    from serving.engine import Engine
    from serving.sampling import SamplingParams
    from serving.text import chat_stop_ids, has_chat_template

    cap = max(1, min(int(settings.max_new_tokens), MAX_NEW_TOKENS))
    tok = loaded.tokenizer
    chat = not settings.raw and has_chat_template(tok)
    # One request alone in its own engine: never batched with another visitor's, so a seed
    # always gives the same text (see serving.engine on batching).
    with Engine(loaded, max_batch=1, max_queue=1) as engine:
        context = engine.context_length
        room = max(1, context - cap)  # the box never refuses a long prompt: it keeps the prompt's end
        ids = _chat_ids(tok, prompt, room) if chat else engine.encode(prompt)[-room:]
        params = SamplingParams(max_tokens=min(cap, context - len(ids)),
                                temperature=settings.temperature if settings.sample else 0.0,
                                top_k=settings.top_k if settings.sample else 0, seed=int(settings.seed),
                                stop_token_ids=chat_stop_ids(tok) if chat else ())
        started = time.perf_counter()
        done = engine.generate(ids, params)
        seconds = time.perf_counter() - started
    if done.error:
        raise ForgeError(f"generation failed: {done.error}", hint="try again; if it keeps failing, reload the page")
    return Generation(prompt, done.text, done.completion_tokens, len(ids), seconds,
                      "eos" if done.finish_reason == "stop" else "length", chat)


def _chat_ids(tok, prompt: str, room: int) -> list[int]:
    """The prompt as one user message; a message too long for ``room`` tokens loses its start (the
    template's own tokens, BOS and the turn markers, stay)."""
    from serving.text import chat_prompt_ids

    try:
        ids = chat_prompt_ids(tok, [{"role": "user", "content": prompt}])
    except Exception as err:  # noqa: BLE001 - the release's template refused the prompt
        raise ForgeError(f"the chat template of this release refused the prompt: {err}",
                         hint="tick 'Raw text' to continue the prompt as plain text") from None
    if len(ids) <= room:
        return ids
    content = tok(prompt, add_special_tokens=False)["input_ids"]
    keep = max(0, len(content) - (len(ids) - room))
    while True:
        text = tok.decode(content[len(content) - keep:], skip_special_tokens=True) if keep else ""
        ids = chat_prompt_ids(tok, [{"role": "user", "content": text}])
        if len(ids) <= room or keep == 0:
            break
        keep -= 1  # decoding and encoding again may merge differently: a token less until it fits
    if len(ids) > room:
        raise ForgeError(f"the chat template alone takes {len(ids)} tokens, more than the {room} the context "
                         "leaves for a prompt", hint="tick 'Raw text' or ask for fewer new tokens")
    return ids


def as_markdown(gen: Generation) -> str:
    """Prompt in bold, the continuation right after it (a chat reply: in a paragraph of its own);
    line breaks kept, runs of blank lines shortened."""
    def esc(text: str) -> str:
        text = re.sub(r"\n{3,}", "\n\n", text.replace("\r", ""))
        return "  \n".join(escape_markdown(line) for line in text.split("\n"))

    if not gen.text.strip():
        tail = " *(the model ended its reply at once)*" if gen.chat and not gen.text else \
            " *(only whitespace was generated)*"
    else:
        tail = "\n\n" + esc(gen.text.strip("\n")) if gen.chat else esc(gen.text)
    return f"**{esc(gen.prompt.strip())}**{tail}"
