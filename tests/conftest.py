"""Session fixtures: the tiny model is built once per test run and shared.

``tiny_forge`` is a copy of the project as a real git repository in a temporary folder,
in which ``commonforge build forge-tiny`` ran for real (DVC, MLflow sqlite, the store and a
local DVC remote all under the same temporary folder) under the privacy audit, and whose
release was committed. Tests that change it work on their own clone.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers import cli, copy_project, forge_env, git
from tests.privacy.audit import audited_env


@pytest.fixture(scope="session", autouse=True)
def _user_config_isolated(tmp_path_factory):
    """No test reads or writes the real user's keys, trust pins or log copy (every CLI child inherits this)."""
    home = tmp_path_factory.mktemp("user-config")
    saved = {k: os.environ.get(k) for k in ("COMMONFORGE_TRUST_PINS", "COMMONFORGE_KEYS", "COMMONFORGE_LOG",
                                             "COMMONFORGE_LOG_STATE", "COMMONFORGE_USER_REGISTRY",
                                             "COMMONFORGE_PEERS")}
    os.environ["COMMONFORGE_TRUST_PINS"] = str(home / "trust-pins.json")
    os.environ["COMMONFORGE_KEYS"] = str(home / "keys")
    os.environ["COMMONFORGE_LOG"] = str(home / "log")
    os.environ["COMMONFORGE_LOG_STATE"] = str(home / "log-state.json")
    os.environ["COMMONFORGE_PEERS"] = str(home / "peers.json")
    os.environ["COMMONFORGE_USER_REGISTRY"] = str(home / "user-registry")
    yield home
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@dataclass
class TinyForge:
    root: Path  # the repository
    state: Path  # store, DVC remote, MLflow db, HF home
    audit: Path  # privacy audit records of the build
    env: dict[str, str]
    build_seconds: float
    build_output: str

    def cli(self, *args: str, cwd: Path | None = None, env: dict | None = None, timeout: float = 900):
        return cli(*args, cwd=cwd or self.root, env=env or self.env, timeout=timeout)


@pytest.fixture(scope="session")
def tiny_forge(tmp_path_factory) -> TinyForge:
    base = tmp_path_factory.mktemp("tiny-forge")
    root = copy_project(base / "forge")
    env = forge_env(base)
    env.update({"GIT_AUTHOR_NAME": "Forge Test", "GIT_AUTHOR_EMAIL": "test@example.invalid",
                "GIT_COMMITTER_NAME": "Forge Test", "GIT_COMMITTER_EMAIL": "test@example.invalid"})
    # The tests start from a registry without the project's committed releases (their artifacts
    # are not in this forge's store); tests/pipelines/test_build.py compares the build with the
    # committed forge-tiny release instead.
    removed = False
    for folder in (root / "registry" / "entries" / "models", root / "model_cards" / "published"):
        for p in sorted(folder.glob("*")) if folder.is_dir() else ():
            if p.is_dir() and p.name != "datasets":
                shutil.rmtree(p)
                removed = True
    if removed:
        git(root, "add", "-A")
        git(root, "commit", "-q", "-m", "tests start without releases")
    audit = base / "audit"
    started = time.perf_counter()
    result = cli("build", "forge-tiny", cwd=root, env=audited_env(env, audit), timeout=1200)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        pytest.fail(f"building forge-tiny failed ({result.returncode}):\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "release forge-tiny")
    print(f"\n[tiny_forge] built forge-tiny in {seconds:.1f} s")
    return TinyForge(root, base / "state", audit, env, seconds, result.stdout + result.stderr)


# Fixtures whose setup builds, trains or serves a model: a test that uses one (directly or through
# another fixture) is `slow`, so `pytest -m "not slow"` is the fast lane. Computed from each test's
# fixture closure, so a new test on the tiny forge is marked without anyone remembering to.
SLOW_FIXTURES = frozenset({"tiny_forge"})


def pytest_collection_modifyitems(config, items):
    for item in items:
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
