"""`generate` and `chat` from the terminal: the real `commonforge` command (``python -m commonforge``)."""

from __future__ import annotations

import json
import re
import subprocess
import sys

from registry import Registry, Store
from tests.helpers import make_registry

CMD = [sys.executable, "-m", "commonforge"]
REF = "model/forge-tiny@1.0.0"
PROMPT = "Call me Ishmael."


def _run(args: list[str], cwd, env) -> subprocess.CompletedProcess:
    return subprocess.run([*CMD, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def test_generate_answers_through_the_chat_template_and_raw_continues(tiny_forge):
    args = ["generate", "forge-tiny", PROMPT, "--max-tokens", "12", "--seed", "3", "--temperature", "0.8"]
    chat = [_run(args, tiny_forge.root, tiny_forge.env) for _ in range(2)]
    raw = _run([*args, "--raw"], tiny_forge.root, tiny_forge.env)
    assert all(r.returncode == 0 for r in (*chat, raw)), chat[0].stderr + raw.stderr
    assert chat[0].stdout == chat[1].stdout  # seeded
    assert chat[0].stdout.endswith("\n") and not chat[0].stdout.startswith(PROMPT)  # the reply alone
    assert "tokens/s" in chat[0].stderr and "no chat template" not in chat[0].stderr
    assert raw.stdout.startswith(PROMPT) and len(raw.stdout.strip()) > len(PROMPT)  # the prompt, continued
    # two different inputs reached the model: the template wraps the prompt in its role markers
    # (the replies may still agree: forge-tiny barely looks at its context)
    chat_ids = int(re.search(r"prompt (\d+) tokens \(through the chat template\)", chat[0].stderr)[1])
    raw_ids = int(re.search(r"prompt (\d+) tokens \(raw\)", raw.stderr)[1])
    assert chat_ids > raw_ids > 0, (chat[0].stderr, raw.stderr)
    helped = _run(["generate", "--help"], tiny_forge.root, tiny_forge.env)
    assert helped.returncode == 0 and "--raw" in helped.stdout and "chat template" in helped.stdout


def test_generate_without_a_chat_template_continues_raw_and_says_so(tiny_forge, tmp_path):
    """A base model imported without a template: `generate` is `generate --raw`, with one note on stderr."""
    release = Registry(tiny_forge.root).release(REF)
    model = tmp_path / "base-model"
    Store(tiny_forge.state / "store").materialize(release.manifest, model)
    for p in model.iterdir():  # materialize hard-links read-only store objects: make real copies
        data = p.read_bytes()
        p.unlink()
        p.write_bytes(data)
    config = json.loads((model / "tokenizer_config.json").read_text())
    assert config.pop("chat_template")
    (model / "tokenizer_config.json").write_text(json.dumps(config))
    (model / "chat_template.jinja").unlink(missing_ok=True)
    root = make_registry(tmp_path / "repo", release=False)
    env = dict(tiny_forge.env, COMMONFORGE_STORE=str(tmp_path / "store"))
    imported = _run(["import", str(model), "--name", "base-tiny", "--license", "Apache-2.0"], root, env)
    assert imported.returncode == 0, imported.stderr

    args = ["generate", "base-tiny", PROMPT, "--max-tokens", "8"]
    plain, raw = _run(args, root, env), _run([*args, "--raw"], root, env)
    assert plain.returncode == 0, plain.stderr
    assert plain.stderr.count("has no chat template") == 1 and "--raw" in plain.stderr
    assert plain.stdout == raw.stdout and plain.stdout.startswith(PROMPT)
    assert "no chat template" not in raw.stderr  # asked for raw: nothing to say


def test_chat_keeps_a_conversation_and_resets(tiny_forge):
    r = subprocess.run([*CMD, "chat", "forge-tiny", "--max-tokens", "8", "--seed", "1"], input="Hello there\n/reset\n"
                       "How are you?\n/quit\n", cwd=tiny_forge.root, env=tiny_forge.env, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("model> ") == 2 and "(new conversation)" in r.stdout
    bad = _run(["generate", "forge-tiny", "x", "--temperature", "7"], tiny_forge.root, tiny_forge.env)
    assert bad.returncode == 2 and "temperature" in bad.stderr
