"""The "try it" box: a few tokens from a release, on the CPU, through the release loader.

    loaded = load(forge, release, "full")          # serving.loader.load_release: verified first
    out = generate(loaded, "Call me", GenerationSettings(max_new_tokens=40))

A plain loop with a KV cache: greedy, or seeded sampling (temperature, top-k) drawn from a
``torch.Generator`` of its own, so two sessions never share random state and the same seed
gives the same text. Stops at the end-of-text token or the cap. torch is imported here only.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

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


def load(forge: Forge, release: Release, variant: str = "full"):
    """Verify and load a release for the CPU through :func:`serving.loader.load_release`."""
    from dataclasses import replace

    from commonforge.settings import Settings
    from serving.loader import load_release

    # The checkout and store the explorer browses, wherever it was started from.
    settings = replace(Settings.load(forge.root), store_dir=forge.store_dir, mlflow_uri=forge.mlflow_uri)
    return load_release(release, variant=None if variant == "full" else variant, device="cpu", settings=settings)


def generate(loaded, prompt: str, settings: GenerationSettings) -> Generation:
    import torch

    tok, model = loaded.tokenizer, loaded.model
    cap = max(1, min(int(settings.max_new_tokens), MAX_NEW_TOKENS))
    bos = tok.bos_token_id
    eos = tok.eos_token_id
    ids = tok.encode(prompt, add_special_tokens=False)
    # Documents were trained as BOS + text + EOS: start the same way.
    if bos is not None:
        ids = [bos, *ids]
    context = loaded.context_length
    ids = ids[-max(1, context - cap):]  # keep the prompt's end when it would overflow the context
    prompt_tokens = len(ids)
    gen = torch.Generator().manual_seed(int(settings.seed))
    new: list[int] = []
    stopped = "length"
    started = time.perf_counter()
    with torch.inference_mode():
        inputs = torch.tensor([ids], dtype=torch.long)
        cache = None
        for _ in range(cap):
            out = model(input_ids=inputs, cache=cache, use_cache=True, logits_to_keep=1)
            cache = out.cache
            logits = out.logits[0, -1].float()  # (vocab,)
            if settings.sample:
                logits = logits / max(settings.temperature, 1e-4)
                if 0 < settings.top_k < logits.numel():
                    kth = torch.topk(logits, settings.top_k).values[-1]
                    logits = logits.masked_fill(logits < kth, float("-inf"))
                probs = torch.softmax(logits, dim=-1)
                nxt = int(torch.multinomial(probs, 1, generator=gen).item())
            else:
                nxt = int(torch.argmax(logits).item())
            if eos is not None and nxt == eos:
                stopped = "eos"
                break
            new.append(nxt)
            if prompt_tokens + len(new) >= context:
                break
            inputs = torch.tensor([[nxt]], dtype=torch.long)
    seconds = time.perf_counter() - started
    text = tok.decode(new, skip_special_tokens=True)
    return Generation(prompt, text, len(new), prompt_tokens, seconds, stopped)


def as_markdown(gen: Generation) -> str:
    """Prompt in bold, the continuation right after it; line breaks kept, runs of blank lines shortened."""
    def esc(text: str) -> str:
        text = re.sub(r"\n{3,}", "\n\n", text.replace("\r", ""))
        return "  \n".join(escape_markdown(line) for line in text.split("\n"))

    tail = esc(gen.text) if gen.text.strip() else " *(only whitespace was generated)*"
    return f"**{esc(gen.prompt.strip())}**{tail}"
