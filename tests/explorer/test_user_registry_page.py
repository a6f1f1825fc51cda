"""The explorer over both registry layers (registry.layers), under Streamlit's AppTest: a checkout
(tests.helpers.make_registry) and a user registry holding a pulled release whose artifacts are only
in the user registry's own store (tests.registry.test_layers.user_release). The Models page and the
pickers list both releases, each with its layer; the pulled release's page is read from the user
registry (records, status, store) and says so; nothing on disk changes."""

from __future__ import annotations

from pathlib import Path

import pytest

from commonforge.settings import PRIVACY_ENV
from tests.helpers import make_registry, snapshot
from tests.registry.test_layers import user_release

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest  # noqa: E402

import explorer  # noqa: E402

APP = Path(explorer.__file__).resolve().parent / "app.py"
CHECKOUT_REF = "model/sample@1.0.0"
PULLED_REF = "model/pulled@2.0.0"


@pytest.fixture
def layered(tmp_path, monkeypatch):
    """This process (the AppTest) pointed at a checkout, with a user registry beside it."""
    checkout = make_registry(tmp_path / "checkout")
    user = tmp_path / "user"
    pulled = user_release(user)
    for key, value in PRIVACY_ENV.items():
        monkeypatch.setenv(key, value)
    env = {"COMMONFORGE_ROOT": checkout, "COMMONFORGE_STORE": tmp_path / "checkout-store",
           "COMMONFORGE_USER_REGISTRY": user, "COMMONFORGE_EXPLORER_CACHE": tmp_path / "cache",
           "COMMONFORGE_PEERS": tmp_path / "peers.json"}
    for key, value in env.items():
        monkeypatch.setenv(key, str(value))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    return checkout, user, pulled


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
    for kind in ("title", "header", "subheader", "markdown", "caption", "info", "warning", "error", "success"):
        out += [str(e.value) for e in getattr(at, kind)]
    return "\n".join(out)


def test_models_page_lists_both_layers_and_marks_each_release(layered):
    checkout, user, _ = layered
    before = snapshot(checkout), snapshot(user)
    at = open_page("models")
    table = at.dataframe[0].value  # "As a table"
    assert dict(zip(table["release"], table["in"])) == {CHECKOUT_REF: "checkout", PULLED_REF: "user registry"}
    text = page_text(at)
    assert "2 releases" in text and str(user / "registry" / "entries") in text
    badges = [m.value for m in at.markdown if "badge[" in m.value]
    assert sum("in the user registry" in b for b in badges) == 1 and sum("in the checkout" in b for b in badges) == 1
    picker = open_page("model")  # no ?ref=: the picker offers the releases of both layers
    assert picker.selectbox[0].options == [CHECKOUT_REF, PULLED_REF]
    assert (snapshot(checkout), snapshot(user)) == before


def test_a_user_registry_release_opens_from_its_own_layer_and_store(layered):
    checkout, user, pulled = layered
    before = snapshot(checkout), snapshot(user)
    at = open_page("model", ref=PULLED_REF, tab="Artifacts")
    assert at.header[0].value == PULLED_REF
    text = page_text(at)
    assert f"in the user registry (`{user.resolve()}`)" in text
    assert "On this machine it is in the user registry." in text
    assert "not in the local store" not in text  # its artifacts are in the user registry's store, not the checkout's
    assert str((user / ".forge" / "store").resolve()) in text
    assert [b.value for b in at.markdown if "badge[" in b.value and "draft" in b.value]  # its status, computed
    at.button[0].click().run()  # re-verify every artifact, re-hashed in the user registry's store
    badges = [m.value for m in at.markdown if "badge[" in m.value]
    assert sum("verified" in b for b in badges) == len(pulled.manifest.artifacts) == 2

    own = open_page("model", ref=CHECKOUT_REF)  # the checkout's release still opens from the checkout
    assert f"in the checkout (`{checkout.resolve()}`)" in page_text(own)
    assert (snapshot(checkout), snapshot(user)) == before


def test_a_bare_name_only_the_user_registry_has_resolves_there(layered):
    _, user, _ = layered
    at = open_page("model", ref="pulled")
    assert at.header[0].value == PULLED_REF and "in the user registry" in page_text(at)


def test_the_cache_key_changes_when_the_user_registry_does(layered):
    from explorer.checkout import Forge

    checkout, user, _ = layered
    forge = Forge.load(checkout)
    first = forge.fingerprint()
    assert forge.fingerprint() == first
    statement = user / "registry" / "entries" / "models" / "pulled" / "2.0.0.statements" / "note.json"
    statement.parent.mkdir(parents=True, exist_ok=True)
    statement.write_text("{}")
    assert forge.fingerprint() != first


def test_a_private_fine_tune_is_shown_locally_marked_private_with_its_base(layered):
    """Every tab of a finetuned release's page opens; it says private, names its base and its data's
    digest only, and the models list marks it."""
    from registry.schema import MANIFEST_SCHEMA, Artifact, BuildManifest, FinetunePin, LoraSettings, Release
    from tests.helpers import write_yaml

    checkout, user, _ = layered
    from registry import Registry

    base = Registry(checkout).release(CHECKOUT_REF)
    tuned = Release.from_manifest(BuildManifest(
        schema_version=MANIFEST_SCHEMA, name="my-tune", version="1.0.0", provenance="finetuned", license="Apache-2.0",
        base_model=CHECKOUT_REF, private=True,
        finetune=FinetunePin(base_sha256=base.release_digest, method="lora", objective="sft", data_sha256="a" * 64,
                             data_format="chat",
                             settings=LoraSettings()),
        artifacts=[Artifact(path="adapter/adapter_model.safetensors", sha256="b" * 64, size=4096, stage="finetune")]))
    write_yaml(user / "registry" / "entries" / "models" / "my-tune" / "1.0.0.yaml",
               tuned.model_dump(mode="json", exclude_none=True))
    models = open_page("models")
    badges = [m.value for m in models.markdown if "badge[" in m.value]
    assert sum("private fine-tune: yours, never shared" in b for b in badges) == 1
    for tab in ("Card", "Governance", "Architecture", "Training", "Evaluation", "Lineage", "Artifacts", "Reproduce",
                "Try it"):
        at = open_page("model", ref="model/my-tune@1.0.0", tab=tab)
        assert at.header[0].value == "model/my-tune@1.0.0"
    text = page_text(open_page("model", ref="model/my-tune@1.0.0"))
    assert f"Private fine-tune of `{CHECKOUT_REF}`" in text and "a" * 64 in text
    assert "never offered to peers, signed for or logged" in text
