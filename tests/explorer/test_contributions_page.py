"""The Contributions page under Streamlit's AppTest, over a real git repository with contrib branches.

No tiny-forge build needed: the page reads git and runs the fast checks, so the forge here is
the small registry copy of tests/contributions/gitrepos.py with two contribution branches, one
that passes the fast checks and one whose recipe's heads do not divide its hidden size.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from commonforge.settings import PRIVACY_ENV
from tests.contributions.gitrepos import branch, commit, entry_path, entry_text, repo, seed_forge, write

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest  # noqa: E402

import explorer  # noqa: E402

APP = Path(explorer.__file__).resolve().parent / "app.py"
GOOD, BAD = "contrib/dataset-psalms-1", "contrib/recipe-forge-odd-1"


@pytest.fixture
def contrib_forge(tmp_path, monkeypatch) -> Path:
    root = seed_forge(tmp_path / "forge")
    branch(root, GOOD)
    write(root, entry_path("dataset", "psalms"), entry_text("dataset", "psalms"))
    commit(root, "Add dataset/psalms@1", "registry")
    branch(root, BAD)
    write(root, entry_path("recipe", "forge-odd"),
          entry_text("recipe", "forge-odd", **{"architecture.num_attention_heads": 3}))
    commit(root, "Add recipe/forge-odd@1", "registry")
    repo(root).git.checkout("-q", "main")
    for key, value in PRIVACY_ENV.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("COMMONFORGE_ROOT", str(root))
    monkeypatch.setenv("COMMONFORGE_STORE", str(tmp_path / "store"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("COMMONFORGE_EXPLORER_CACHE", str(tmp_path / "cache"))
    return root


def page_text(at: AppTest) -> str:
    out = []
    for kind in ("title", "header", "subheader", "markdown", "caption", "info", "warning", "error"):
        out += [str(e.value) for e in getattr(at, kind)]
    out += [str(b.proto.label) for b in at.get("badge")]
    return "\n".join(out)


def open_contributions(**query: str) -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=60)
    at.run()
    at.switch_page("app_pages/contributions.py")
    at.query_params.update(query)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_lists_contrib_branches_with_their_fast_check_status_and_reviews_one(contrib_forge):
    before = repo(contrib_forge).git.worktree("list")
    at = open_contributions()
    text = page_text(at)
    assert GOOD in text and BAD in text
    assert "fast checks failed" in text  # the odd recipe
    assert "dataset/psalms@1" in text and "recipe/forge-odd@1" in text
    assert repo(contrib_forge).git.worktree("list") == before  # the check's worktrees are gone

    at = open_contributions(branch=BAD)
    text = page_text(at)
    assert f"Review of {BAD}" in text
    assert "hidden_size 128 is not divisible by num_attention_heads 3" in text  # the check report, with its line
    assert f"`{entry_path('recipe', 'forge-odd')}:" in text
    if "The review view is not available" not in text:
        assert f"Review of `{BAD}` against `main`" in text  # contributions.review's Markdown


def test_a_checkout_without_contrib_branches_says_how_to_make_one(contrib_forge):
    r = repo(contrib_forge)
    r.git.branch("-D", GOOD, BAD)
    text = page_text(open_contributions())
    assert "No `contrib/*` branches here" in text and "commonforge contribute" in text
