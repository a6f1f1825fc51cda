"""`generate` and `chat` from the terminal: the real `commonforge` command (``python -m commonforge``)."""

from __future__ import annotations

import subprocess
import sys

CMD = [sys.executable, "-m", "commonforge"]


def test_generate_streams_a_completion(tiny_forge):
    args = ["generate", "forge-tiny", "Call me Ishmael.", "--max-tokens", "12", "--seed", "3", "--temperature", "0.8"]
    runs = [subprocess.run([*CMD, *args], cwd=tiny_forge.root, env=tiny_forge.env, capture_output=True, text=True,
                           timeout=120) for _ in range(2)]
    assert all(r.returncode == 0 for r in runs), runs[0].stderr
    assert runs[0].stdout.startswith("Call me Ishmael.") and len(runs[0].stdout.strip()) > len("Call me Ishmael.")
    assert runs[0].stdout == runs[1].stdout  # seeded
    assert "tokens/s" in runs[0].stderr


def test_chat_keeps_a_conversation_and_resets(tiny_forge):
    r = subprocess.run([*CMD, "chat", "forge-tiny", "--max-tokens", "8", "--seed", "1"], input="Hello there\n/reset\n"
                       "How are you?\n/quit\n", cwd=tiny_forge.root, env=tiny_forge.env, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("model> ") == 2 and "(new conversation)" in r.stdout
    bad = subprocess.run([*CMD, "generate", "forge-tiny", "x", "--temperature", "7"], cwd=tiny_forge.root,
                         env=tiny_forge.env, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "temperature" in bad.stderr
