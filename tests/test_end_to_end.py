"""The whole life of forge-tiny in a fresh clone, the way a person would walk it.

build (a rebuild of the committed release: two clean clones must agree) → verify → reproduce
(under a different parent environment) → eval → card → serve (the `openai` client) → explore
(headless Chromium). Every command runs under the privacy audit; at the end no process made a
connection outside 127.0.0.1.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest

from registry import Registry
from tests.helpers import cli, forge_env, git
from tests.privacy.audit import audited_env, unprotected_processes, violations

CHROMIUM = Path("/usr/bin/chromium")


def test_the_whole_life_of_forge_tiny(tiny_forge, tmp_path):
    clone = tmp_path / "clone"
    git(tiny_forge.root, "clone", "-q", str(tiny_forge.root), str(clone))
    audit = tmp_path / "audit"
    # Its own store, DVC remote and MLflow database: nothing shared with the first build.
    env = audited_env(forge_env(tmp_path), audit)

    def run(*args: str, extra: dict | None = None, timeout: float = 1200):
        result = cli(*args, cwd=clone, env=env | (extra or {}), timeout=timeout)
        assert result.returncode == 0, f"commonforge {' '.join(args)}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        return result.stdout

    rel = Registry(clone).release("model/forge-tiny@1.0.0")

    # build: a second clean clone rebuilds the committed release bit for bit.
    out = run("build", "forge-tiny")
    assert "rebuild of model/forge-tiny@1.0.0 is identical" in out

    # verify: the rebuild filled this clone's store with exactly the released artifacts.
    out = run("verify", "forge-tiny")
    assert f"all {len(rel.manifest.artifacts)} artifacts match the manifest" in out

    # reproduce, with thread and ISA variables the pins must override, signed by a rebuilder of
    # this clone's (freshly founded) governance policy.
    from tests.helpers import found_forge
    from trust.status import release_status

    keys = tmp_path / "keys"
    people = found_forge(clone, keys, {"Rita Rebuilder": ("Beta", ["maintainer", "rebuilder"]),
                         "Ann Approver": ("Acme", ["maintainer"]), "Cy Reviewer": ("Cyan", ["maintainer"])})
    out = run("reproduce", "model/forge-tiny@1.0.0", "--key", "Rita Rebuilder",
              extra={"ATEN_CPU_CAPABILITY": "default", "OMP_NUM_THREADS": "1", "MKL_CBWR": "COMPATIBLE",
                     "COMMONFORGE_KEYS": str(keys)})
    assert "rebuilt bit for bit" in out and "signed rebuild statement: registry/entries/models/forge-tiny" in out
    status = release_status(clone, rel)
    assert [(m.name, st.predicate.result) for m, st in status.rebuilds] == [("Rita Rebuilder", "identical")]
    assert "commonforge-reproduce-" not in git(clone, "worktree", "list")  # the temporary worktree is gone

    # eval: lm-eval through the release loader, a few items.
    out = run("eval", "forge-tiny", "--tasks", "lambada", "--limit", "2", "--variant", "int8")
    assert "lambada" in out and "int8" in out

    # card: written to a file, naming the release digest.
    run("card", "forge-tiny", "-o", str(tmp_path / "card" / "README.md"))
    assert rel.release_digest in (tmp_path / "card" / "README.md").read_text()

    # governance: Ann signs that she built it, three affiliations approve, Cy publishes (which
    # renders the card again with who vouched, from this clone's own build outputs).
    from trust import status as ts

    ts.attest_build(clone, rel, *people["Ann Approver"])
    for name in people:
        ts.approve(clone, rel, *people[name], comment=f"{name} read the card and the data")
    out = run("publish", "model/forge-tiny@1.0.0", "--key", "Cy Reviewer", extra={"COMMONFORGE_KEYS": str(keys)})
    assert "status: published  (policy 1)" in out
    card = (clone / "model_cards" / "published" / "forge-tiny" / "1.0.0" / "README.md").read_text()
    assert "## Governance (as of publication)" in card and "| rebuilt identically by | Rita Rebuilder (Beta)" in card
    assert "loss.png" in card  # rendered from the build outputs: the training logs are still there

    # serve: the OpenAI-compatible API through the real `openai` client (the bare name: the published release).
    from openai import OpenAI

    from tests.serving.conftest import start_server, stop_server

    forge = SimpleNamespace(root=clone, env=forge_env(tmp_path))
    (tmp_path / "serve").mkdir()
    server = start_server(forge, tmp_path / "serve", env=forge.env, audit=audit)
    try:
        client = OpenAI(base_url=server.url, api_key="unused", max_retries=0)
        done = client.completions.create(model=server.model, prompt="Call me Ishmael.", max_tokens=8, temperature=0)
        assert done.usage.completion_tokens > 0 and done.choices[0].text
        chat = client.chat.completions.create(model=server.model, messages=[{"role": "user", "content": "Hello"}],
                                              max_tokens=8, seed=1)
        assert chat.choices[0].message.role == "assistant"
    finally:
        stop_server(server)
    assert "model/forge-tiny@1.0.0: published (policy 1" in server.log.read_text()

    # revoke: two affiliations revoke it; nothing serves or generates it unless insisted.
    for name in ("Rita Rebuilder", "Ann Approver"):
        ts.revoke(clone, rel, *people[name], reason="A source turned out not to be public domain.", severity="high")
    refused = cli("generate", "forge-tiny", "Call me", "--max-tokens", "2", cwd=clone, env=env, timeout=300)
    assert refused.returncode == 2 and "every release of model/forge-tiny is revoked" in refused.stderr
    refused = cli("generate", "model/forge-tiny@1.0.0", "Call me", "--max-tokens", "2", cwd=clone, env=env, timeout=300)
    assert refused.returncode == 1 and "model/forge-tiny@1.0.0 is revoked (" in refused.stderr
    out = run("generate", "model/forge-tiny@1.0.0", "Call me", "--max-tokens", "2", "--allow-revoked", "--raw")
    assert out.strip()

    # explore: the explorer in a real browser shows the release.
    if not CHROMIUM.exists():
        pytest.skip("needs Debian chromium at /usr/bin/chromium (CI installs it); every other step passed")
    from playwright.sync_api import sync_playwright

    from tests.explorer.test_browser import CHROMIUM_ARGS, Server

    (tmp_path / "explore").mkdir()
    explorer = Server(SimpleNamespace(root=clone, env=forge_env(tmp_path)), tmp_path / "explore")  # audited
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            page = browser.new_page()
            page.set_default_timeout(60_000)
            page.goto(explorer.url + "/")
            page.get_by_text("model/forge-tiny@1.0.0", exact=False).first.wait_for()
            page.get_by_text("rebuilt identical", exact=False).first.wait_for()
            page.screenshot(path=str(tmp_path / "explore.png"), full_page=True)
            assert page.locator('[data-testid="stException"]').count() == 0
            browser.close()
    finally:
        explorer.stop()
    shutil.rmtree(clone / "build", ignore_errors=True)

    for folder in (audit, explorer.audit):
        assert violations(folder) == []
        assert unprotected_processes(folder) == []
