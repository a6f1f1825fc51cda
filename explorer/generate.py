"""The "try it" box: a few tokens from a release, on the CPU, through the release loader.

    loaded = load(forge, release, "full")          # serving.loader.load_release: verified first
    out = generate(loaded, "Call me Ishmael.", GenerationSettings(max_new_tokens=40))

Generation goes through :mod:`serving`'s engine and sampling, as ``commonforge generate`` and
the server do: the same prompt, settings and seed give the same text in all three (BOS first:
:meth:`serving.engine.Engine.encode`). Greedy, or seeded sampling (temperature, top-k); stops
at the end-of-text token or the cap. torch is imported only when a model is loaded.
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


@dataclass(frozen=True)
class Generation:
    prompt: str
    text: str  # the continuation only
    new_tokens: int
    prompt_tokens: int
    seconds: float
    stopped: str  # "eos" | "length"

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
    """Continue ``prompt`` through serving's engine: the text ``commonforge generate`` and the server give."""
    from serving.engine import Engine
    from serving.sampling import SamplingParams

    cap = max(1, min(int(settings.max_new_tokens), MAX_NEW_TOKENS))
    # One request alone in its own engine: never batched with another visitor's, so a seed
    # always gives the same text (see serving.engine on batching).
    with Engine(loaded, max_batch=1, max_queue=1) as engine:
        ids = engine.encode(prompt)
        context = engine.context_length
        ids = ids[-max(1, context - cap):]  # the box never refuses a long prompt: it keeps the prompt's end
        params = SamplingParams(max_tokens=min(cap, context - len(ids)),
                                temperature=settings.temperature if settings.sample else 0.0,
                                top_k=settings.top_k if settings.sample else 0, seed=int(settings.seed))
        started = time.perf_counter()
        done = engine.generate(ids, params)
        seconds = time.perf_counter() - started
    if done.error:
        raise ForgeError(f"generation failed: {done.error}", hint="try again; if it keeps failing, reload the page")
    return Generation(prompt, done.text, done.completion_tokens, len(ids), seconds,
                      "eos" if done.finish_reason == "stop" else "length")


def as_markdown(gen: Generation) -> str:
    """Prompt in bold, the continuation right after it; line breaks kept, runs of blank lines shortened."""
    def esc(text: str) -> str:
        text = re.sub(r"\n{3,}", "\n\n", text.replace("\r", ""))
        return "  \n".join(escape_markdown(line) for line in text.split("\n"))

    tail = esc(gen.text) if gen.text.strip() else " *(only whitespace was generated)*"
    return f"**{esc(gen.prompt.strip())}**{tail}"
