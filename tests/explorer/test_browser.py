"""``commonforge explore`` for real: the server under the privacy audit, driven by headless Chromium.

One server per module (on a free port, against a copy of the tiny forge, started the way a
user starts it). The browser test opens every page, waits for its content, checks it, checks
that no exception box is shown and that the browser asked nothing of any host but 127.0.0.1,
measures load times and saves screenshots in its temporary folder. The privacy test then
stops the server and reads the audit: no connection outside 127.0.0.1 from any process,
Streamlit's included, and every process ran with the privacy variables.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from commonforge.settings import PRIVACY_ENV
from tests.explorer.conftest import IMPORTED, RELEASE, SECOND, known_phrase
from tests.helpers import VENV_BIN
from tests.privacy.audit import audited_env, processes, unprotected_processes, violations

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def explore_command(port: int, root: Path) -> list[str]:
    """``commonforge explore``, the way a user starts it."""
    return [str(VENV_BIN / "commonforge"), "explore", "--port", str(port), "--root", str(root)]


class Server:
    def __init__(self, forge, workdir: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.audit = workdir / "audit"
        env = audited_env(forge.env, self.audit)
        for var in PRIVACY_ENV:
            env.pop(var, None)  # the command must switch telemetry off itself
        self.lines: list[str] = []
        self.ready = threading.Event()
        self.started = time.perf_counter()
        # Its own process group, so stopping it reaches Streamlit too (and nothing else).
        self.proc = subprocess.Popen(explore_command(self.port, forge.root), cwd=workdir, env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     start_new_session=True)
        threading.Thread(target=self._read, daemon=True).start()
        if not self.ready.wait(90):
            self.stop()
            pytest.fail("`commonforge explore` did not get ready in 90 s:\n" + "".join(self.lines[-40:]))
        self.startup_seconds = time.perf_counter() - self.started

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line)
            if "ready at" in line:
                self.ready.set()

    def stop(self) -> int | None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        return self.proc.returncode


@pytest.fixture(scope="module")
def server(explorer_forge, tmp_path_factory):
    srv = Server(explorer_forge, tmp_path_factory.mktemp("explore-server"))
    yield srv
    srv.stop()


PAGES = [
    # (name, path, texts the page must show, a selector that must render)
    ("models", "/", [RELEASE, SECOND, IMPORTED, "rebuilt identical ×1"], None),
    ("model-card", f"/model?ref={RELEASE}", ["forge-tiny, the test model", "Intended use."], None),
    ("model-architecture", f"/model?ref={RELEASE}&tab=Architecture", ["Layer stack", "Parameters by part"],
     '[data-testid="stGraphVizChart"] svg'),
    ("model-training", f"/model?ref={RELEASE}&tab=Training", ["the build of this release", "Validation loss"],
     '[data-testid="stVegaLiteChart"]'),
    ("model-evaluation", f"/model?ref={RELEASE}&tab=Evaluation", ["Scores, every variant side by side", "Contamination"],
     '[data-testid="stVegaLiteChart"]'),
    ("model-lineage", f"/model?ref={RELEASE}&tab=Lineage", ["Trained on", "Derived models"],
     '[data-testid="stGraphVizChart"] svg'),
    ("model-artifacts", f"/model?ref={RELEASE}&tab=Artifacts", ["Re-verify every artifact", "model.safetensors"], None),
    ("model-reproduce", f"/model?ref={RELEASE}&tab=Reproduce", [f"commonforge reproduce {RELEASE}", "Rebuilds"], None),
    ("model-imported", f"/model?ref={IMPORTED}", ["Imported: this model was not built by the forge",
                                                  "3 of 3 artifacts of this release are not in the local store"], None),
    ("model-unknown-ref", "/model?ref=model/nope@9", ["not found: model/nope@9", "Releases in this registry"], None),
    ("dataset", "/dataset?ref=dataset/tiny-local@1", ["Motivation", "Maintenance"], None),
    ("dataset-statistics", "/dataset?ref=dataset/tiny-local@1&tab=Statistics", ["Words per source and split"],
     '[data-testid="stVegaLiteChart"]'),
    ("dataset-documents", "/dataset?ref=dataset/tiny-local@1&tab=Documents&q=Queequeg", ["documents match"], None),
    ("compare", f"/compare?a={RELEASE}&b={SECOND}", ["Recipe differences", "Both were built from identical recipes."],
     None),
]


def _settle(page) -> None:
    """Wait until Streamlit has finished the run (its 'running' indicator is gone)."""
    page.wait_for_function("() => !document.querySelector('[data-testid=\"stStatusWidget\"]')", timeout=60_000)


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian chromium at /usr/bin/chromium "
                    "(apt-get install -y --no-install-recommends chromium); CI installs it")
def test_every_page_in_a_real_browser(server, explorer_forge, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api")
    shots = tmp_path / "screenshots"
    shots.mkdir()
    times: dict[str, float] = {}
    outside: list[str] = []

    def only_localhost(route):
        url = route.request.url
        if url.startswith((server.url, "data:", "blob:", "about:")):
            route.continue_()
        else:
            outside.append(url)
            route.abort()

    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1800})
            page.route("**/*", only_localhost)
            page.set_default_timeout(60_000)
            for name, path, texts, selector in PAGES:
                started = time.perf_counter()
                page.goto(server.url + path)
                for text in texts:
                    page.get_by_text(text, exact=False).first.wait_for(state="visible")
                if selector:
                    page.locator(selector).first.wait_for(state="visible")
                _settle(page)
                times[name] = round(time.perf_counter() - started, 2)
                page.screenshot(path=str(shots / f"{name}.png"), full_page=True)
                assert page.locator('[data-testid="stException"]').count() == 0, f"{name}: an exception is shown"
                assert page.get_by_text("Page not found").count() == 0, name

            # The document browser: a phrase search, then the document itself.
            phrase, doc_id = known_phrase(explorer_forge.root)
            page.goto(server.url + "/dataset?ref=dataset/tiny-local@1&tab=Documents")
            box = page.get_by_label("Search the documents")
            box.fill(f'"{phrase}"')
            box.press("Enter")
            page.get_by_text("documents match").wait_for()
            page.get_by_text(doc_id, exact=True).first.wait_for()
            page.get_by_role("button", name="Open").first.click()
            page.locator("h3", has_text=doc_id).wait_for()
            _settle(page)
            page.screenshot(path=str(shots / "dataset-document.png"), full_page=True)

            # Try it: greedy generation on the CPU through the release loader.
            started = time.perf_counter()
            page.goto(server.url + f"/model?ref={RELEASE}&tab=Try+it")
            page.get_by_role("button", name="Generate").click()
            page.get_by_text("new tokens after").wait_for(timeout=180_000)
            times["try-it generate (first load)"] = round(time.perf_counter() - started, 2)
            page.screenshot(path=str(shots / "model-try-it.png"), full_page=True)
            assert page.locator('[data-testid="stException"]').count() == 0
        finally:
            browser.close()

    report = {"startup_seconds": round(server.startup_seconds, 2), "page_seconds": times}
    (tmp_path / "timings.json").write_text(json.dumps(report, indent=2))
    print(f"\n[explorer] server ready in {server.startup_seconds:.1f} s; page loads (s): {json.dumps(times)}"
          f"\n[explorer] screenshots in {shots}")
    assert outside == [], f"the browser was sent outside 127.0.0.1: {outside}"


def test_explore_makes_no_connection_outside_localhost(server):
    """Run last in this module: stops the server, then reads what the audit saw in every process."""
    assert server.stop() in (0, -signal.SIGTERM), "".join(server.lines[-30:])
    seen = processes(server.audit)
    # `python -m streamlit run .../explorer/app.py ...` shows up as argv ["-m", "run", ".../app.py", ...].
    streamlit = [r for r in seen if r["argv"][1:2] == ["run"] and str(r["argv"][2]).endswith("explorer/app.py")]
    assert streamlit, f"the audit never saw the Streamlit server: {[r['argv'] for r in seen]}"
    assert violations(server.audit) == []
    assert unprotected_processes(server.audit) == []
    assert all(r["env"]["STREAMLIT_BROWSER_GATHER_USAGE_STATS"] == "false" for r in streamlit)
