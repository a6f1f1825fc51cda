"""One prompt, one seed, one text: the command line, the server and the explorer's "try it" box.

All three go through :class:`serving.engine.Engine` (its sampling, its one rule for BOS:
:meth:`~serving.engine.Engine.encode`, and one renderer for the chat template:
:func:`serving.text.chat_prompt_ids`), so the same prompt and settings give the same text in
each, two ways:

- raw: ``commonforge generate --raw`` = /v1/completions (= the box with "Raw text" ticked);
- chat: ``commonforge generate`` = /v1/chat/completions = the box as it opens, the prompt being
  one user message and the reply ending at the end-of-turn token.

``commonforge generate`` is run by :func:`commonforge.cli.main` in this process, the real server
on 127.0.0.1 is driven by the ``openai`` client, the box is :func:`explorer.generate.generate`.
"""

from __future__ import annotations

import dataclasses
import os

import pytest

from commonforge import cli as forge_cli
from explorer.generate import GenerationSettings, generate
from serving.engine import Engine
from serving.text import chat_prompt_ids, chat_stop_ids

PROMPT = "Call me Ishmael. Some years ago"
CASES = {  # the explorer's settings; the CLI and the server are asked for the same
    "greedy": GenerationSettings(max_new_tokens=16),
    "seeded sampling": GenerationSettings(max_new_tokens=16, sample=True, temperature=0.9, top_k=40, seed=7),
}


@pytest.fixture
def submitted(monkeypatch) -> list[tuple[list[int], tuple[int, ...]]]:
    """The requests that reach an Engine in this process, in order: (prompt ids, extra stop token ids)."""
    seen: list[tuple[list[int], tuple[int, ...]]] = []
    real = Engine.submit_many

    def spy(self, items, *args, **kwargs):
        seen.extend((list(ids), tuple(params.stop_token_ids)) for ids, params in items)
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

    def run(*args: str) -> tuple[str, str]:
        capsys.readouterr()
        code = forge_cli.main(list(args))
        out = capsys.readouterr()
        assert code == 0, out.err
        return out.out, out.err

    return run


def _cli_args(settings: GenerationSettings) -> list[str]:
    temperature, top_k = (settings.temperature, settings.top_k) if settings.sample else (0.0, 0)
    return ["--max-tokens", str(settings.max_new_tokens), "--temperature", str(temperature), "--top-k", str(top_k),
            "--seed", str(settings.seed)]


def _server_args(settings: GenerationSettings) -> dict:
    temperature, top_k = (settings.temperature, settings.top_k) if settings.sample else (0.0, 0)
    return {"model": "forge-tiny", "max_tokens": settings.max_new_tokens, "temperature": temperature,
            "seed": settings.seed, "extra_body": {"top_k": top_k}}


def test_text_prompts_start_a_document(tiny_engine, tiny_loaded):
    tok = tiny_loaded.tokenizer
    bos = tok.bos_token_id
    assert bos == 0 and tok(PROMPT)["input_ids"][:1] != [bos]  # our tokenizers add no BOS themselves
    assert tiny_engine.encode(PROMPT) == [bos, *tok(PROMPT)["input_ids"]]
    assert tiny_engine.encode("") == [bos]
    # A prompt that already starts with BOS (or a tokenizer that adds it) never gets a second one.
    assert tiny_engine.encode(tok.bos_token + PROMPT) == tiny_engine.encode(PROMPT)


def test_a_chat_prompt_is_one_user_turn_that_ends_where_the_reply_starts(tiny_loaded):
    tok = tiny_loaded.tokenizer
    ids = chat_prompt_ids(tok, [{"role": "user", "content": PROMPT}])
    assert tok.decode(ids, skip_special_tokens=False) == f"{tok.bos_token}<|user|>{PROMPT}<|end|><|assistant|>"
    assert ids.count(tok.bos_token_id) == 1 and ids[0] == tok.bos_token_id  # the template's BOS, not a second
    assert chat_stop_ids(tok) == (tok.convert_tokens_to_ids("<|end|>"),)


@pytest.mark.parametrize("case", CASES)
def test_raw_generate_completions_and_the_raw_box_give_the_same_text(case, run_cli, submitted, client, tiny_loaded,
                                                                     tiny_engine):
    settings = dataclasses.replace(CASES[case], raw=True)
    prompt_ids = tiny_engine.encode(PROMPT)
    explorer = generate(tiny_loaded, PROMPT, settings)
    assert explorer.new_tokens > 0 and explorer.prompt_tokens == len(prompt_ids) and not explorer.chat
    # The text alone could agree by chance (a tiny model may continue alike with or without
    # BOS): the model's input is checked too, here and in the server's usage.
    assert submitted == [(prompt_ids, ())]

    stdout, _ = run_cli("generate", "forge-tiny", PROMPT, "--raw", *_cli_args(settings))
    assert stdout.startswith(PROMPT) and stdout.endswith("\n")
    assert stdout[len(PROMPT):-1] == explorer.text
    assert submitted == [(prompt_ids, ())] * 2  # stops only at end-of-text

    r = client.completions.create(prompt=PROMPT, **_server_args(settings))
    assert r.choices[0].text == explorer.text
    assert (r.usage.prompt_tokens, r.usage.completion_tokens) == (explorer.prompt_tokens, explorer.new_tokens)


@pytest.mark.parametrize("case", CASES)
def test_generate_chat_completions_and_the_box_give_the_same_reply(case, run_cli, submitted, client, tiny_loaded):
    settings = CASES[case]
    assert not settings.raw  # the box's default
    tok = tiny_loaded.tokenizer
    prompt_ids = chat_prompt_ids(tok, [{"role": "user", "content": PROMPT}])
    stops = chat_stop_ids(tok)
    explorer = generate(tiny_loaded, PROMPT, settings)
    assert explorer.chat and explorer.new_tokens > 0 and explorer.prompt_tokens == len(prompt_ids)
    assert submitted == [(prompt_ids, stops)] and stops  # the template's prompt, ended by <|end|>

    stdout, stderr = run_cli("generate", "forge-tiny", PROMPT, *_cli_args(settings))
    assert stdout == explorer.text + "\n"  # the reply alone: no prompt echoed
    assert submitted == [(prompt_ids, stops)] * 2
    assert "no chat template" not in stderr

    r = client.chat.completions.create(messages=[{"role": "user", "content": PROMPT}], **_server_args(settings))
    assert r.choices[0].message.content == explorer.text
    assert (r.usage.prompt_tokens, r.usage.completion_tokens) == (explorer.prompt_tokens, explorer.new_tokens)
    assert r.choices[0].finish_reason == ("stop" if explorer.stopped == "eos" else "length")
