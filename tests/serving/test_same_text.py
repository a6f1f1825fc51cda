"""One prompt, one seed, one text: the command line, the server and the explorer's "try it" box.

All three go through :class:`serving.engine.Engine` (its sampling, and its one rule for BOS:
:meth:`~serving.engine.Engine.encode`), so the same prompt and settings give the same
continuation in each: ``commonforge generate`` run by :func:`commonforge.cli.main` in this
process, the real server on 127.0.0.1 driven by the ``openai`` client, and
:func:`explorer.generate.generate`.
"""

from __future__ import annotations

import os

import pytest

from commonforge import cli as forge_cli
from explorer.generate import GenerationSettings, generate
from serving.engine import Engine

PROMPT = "Call me Ishmael. Some years ago"
CASES = {  # the explorer's settings; the CLI and the server are asked for the same
    "greedy": GenerationSettings(max_new_tokens=16),
    "seeded sampling": GenerationSettings(max_new_tokens=16, sample=True, temperature=0.9, top_k=40, seed=7),
}


@pytest.fixture
def submitted(monkeypatch) -> list[list[int]]:
    """The prompts (token ids) that reach an Engine in this process, in order."""
    seen: list[list[int]] = []
    real = Engine.submit_many

    def spy(self, items, *args, **kwargs):
        seen.extend(list(ids) for ids, _ in items)
        return real(self, items, *args, **kwargs)

    monkeypatch.setattr(Engine, "submit_many", spy)
    return seen


@pytest.fixture
def run_cli(tiny_forge, monkeypatch, capsys, request):
    """``commonforge ARGS`` in this process, in the tiny forge; what the command exports is undone after."""
    saved = os.environ.copy()
    request.addfinalizer(lambda: (os.environ.clear(), os.environ.update(saved)))
    monkeypatch.chdir(tiny_forge.root)
    os.environ.update(tiny_forge.env)

    def run(*args: str) -> str:
        capsys.readouterr()
        code = forge_cli.main(list(args))
        out = capsys.readouterr()
        assert code == 0, out.err
        return out.out

    return run


def test_text_prompts_start_a_document(tiny_engine, tiny_loaded):
    tok = tiny_loaded.tokenizer
    bos = tok.bos_token_id
    assert bos == 0 and tok(PROMPT)["input_ids"][:1] != [bos]  # our tokenizers add no BOS themselves
    assert tiny_engine.encode(PROMPT) == [bos, *tok(PROMPT)["input_ids"]]
    assert tiny_engine.encode("") == [bos]
    # A prompt that already starts with BOS (or a tokenizer that adds it) never gets a second one.
    assert tiny_engine.encode(tok.bos_token + PROMPT) == tiny_engine.encode(PROMPT)


@pytest.mark.parametrize("case", CASES)
def test_cli_server_and_explorer_give_the_same_text(case, run_cli, submitted, client, tiny_loaded, tiny_engine):
    settings = CASES[case]
    temperature, top_k = (settings.temperature, settings.top_k) if settings.sample else (0.0, 0)
    prompt_ids = tiny_engine.encode(PROMPT)
    explorer = generate(tiny_loaded, PROMPT, settings)
    assert explorer.new_tokens > 0 and explorer.prompt_tokens == len(prompt_ids)
    # The text alone could agree by chance (a tiny model may continue alike with or without
    # BOS): the model's input is checked too, here and in the server's usage.
    assert submitted == [prompt_ids]

    stdout = run_cli("generate", "forge-tiny", PROMPT, "--max-tokens", str(settings.max_new_tokens),
                     "--temperature", str(temperature), "--top-k", str(top_k), "--seed", str(settings.seed))
    assert stdout.startswith(PROMPT) and stdout.endswith("\n")
    assert stdout[len(PROMPT):-1] == explorer.text
    assert submitted == [prompt_ids, prompt_ids]

    r = client.completions.create(model="forge-tiny", prompt=PROMPT, max_tokens=settings.max_new_tokens,
                                  temperature=temperature, seed=settings.seed, extra_body={"top_k": top_k})
    assert r.choices[0].text == explorer.text
    assert (r.usage.prompt_tokens, r.usage.completion_tokens) == (explorer.prompt_tokens, explorer.new_tokens)
