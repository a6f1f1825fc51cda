"""Every page of the explorer under Streamlit's AppTest, against a copy of the tiny forge."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.explorer.conftest import IMPORTED, RELEASE, SECOND, SHIFT, known_phrase
from tests.helpers import snapshot

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest  # noqa: E402

import explorer  # noqa: E402

APP = Path(explorer.__file__).resolve().parent / "app.py"
TEXT_ELEMENTS = ("title", "header", "subheader", "markdown", "caption", "info", "warning", "error", "success",
                 "text", "code")


def open_page(page: str, timeout: float = 60, **query: str) -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=timeout)
    at.run()
    if page != "models":
        at.switch_page(f"app_pages/{page}.py")
    at.query_params.update(query)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def page_text(at: AppTest) -> str:
    out = []
    for kind in TEXT_ELEMENTS:
        out += [str(e.value) for e in getattr(at, kind)]
    out += [f"{m.label} {m.value}" for m in at.metric]
    out += [link.proto.label for link in at.get("page_link")]
    return "\n".join(out)


def registry(forge):
    from registry import Registry

    return Registry(forge.root)


def evaluation_of(forge, ref: str):
    reg = registry(forge)
    return reg.evaluation(reg.release(ref))


def headline(record) -> dict[str, float]:
    out = {}
    for r in record.results:
        if r.variant == "full" and r.subset == "all" and r.task not in {k.split()[0] for k in out}:
            out[f"{r.task} {r.metric}"] = r.value
    return out


# --- Models ---------------------------------------------------------------------------------


def test_models_lists_every_release_with_status_scores_and_reproducibility(explorer_env):
    at = open_page("models")
    text = page_text(at)
    for ref in (RELEASE, SECOND, IMPORTED):
        assert ref in text
    assert "draft" in text and "Apache-2.0" in text
    assert "rebuilt identical ×1 (rebuilder-box)" in text
    assert "imported: not built by the forge" in text
    assert ("Parameters", "656k") in [(m.label, m.value) for m in at.metric]
    # The headline scores are the evaluation record's, to three decimals.
    shown = [(m.label, m.value) for m in at.metric]
    for label, value in headline(evaluation_of(explorer_env, RELEASE)).items():
        assert (label, f"{value:.3f}") in shown


def test_models_search_and_filters(explorer_env):
    at = open_page("models")
    at.text_input(key="q").set_value("imported").run()
    text = page_text(at)
    assert IMPORTED in text and RELEASE not in text
    at.text_input(key="q").set_value("").run()
    at.toggle(key="reproduced").set_value(True).run()
    text = page_text(at)
    assert RELEASE in text and SECOND not in text and IMPORTED not in text
    at.toggle(key="reproduced").set_value(False).run()
    at.multiselect(key="provenance").set_value(["imported"]).run()
    assert RELEASE not in page_text(at)
    at.text_input(key="q").set_value("no such model anywhere").run()
    assert "No release matches those filters" in page_text(at)


def test_empty_registry_says_so_on_every_page(empty_forge):
    assert "The registry has no releases yet" in page_text(open_page("models"))
    assert "The registry has no releases yet" in page_text(open_page("model"))
    assert "The registry has no datasets yet" in page_text(open_page("dataset"))
    assert "The registry has no releases yet" in page_text(open_page("compare"))


def test_a_folder_that_is_no_checkout_gets_a_message(tmp_path, monkeypatch):
    monkeypatch.setenv("COMMONFORGE_ROOT", str(tmp_path))
    text = page_text(open_page("models"))
    assert "This explorer has no checkout to show" in text and "COMMONFORGE_ROOT" in text


# --- Model ----------------------------------------------------------------------------------


def test_model_page_header_card_and_intended_use(explorer_env):
    at = open_page("model", ref=RELEASE)
    text = page_text(at)
    assert RELEASE in text and "forge-tiny, the test model" in text
    reg = registry(explorer_env)
    card = reg.card(reg.release(RELEASE))
    if card is None:
        assert "No model card has been rendered for model/forge-tiny@1.0.0 yet" in text
    else:
        assert card.path in text and "## " in text  # the card's own sections
        card_file = explorer_env.root / card.path
        if "](loss.png)" in card_file.read_text():
            assert at.image, "the card's loss curve is not shown"
        assert "](../../datasets/" not in text  # dataset-card links point at the Dataset page instead
    at = open_page("model", ref=SECOND)
    assert "No model card has been rendered for model/forge-tiny@2.0.0 yet" in page_text(at)
    assert "Intended use." in text and "Testing the forge's own machinery" in text
    assert "Known limitations." in text


def test_model_page_evaluation_matches_the_record(explorer_env):
    record = evaluation_of(explorer_env, RELEASE)
    at = open_page("model", ref=RELEASE, tab="Evaluation")
    assert record.harness in page_text(at)
    scores, contamination = at.dataframe[0].value, at.dataframe[1].value
    for r in record.results:
        row = scores[(scores.task == r.task) & (scores.metric == r.metric) & (scores.subset == r.subset)]
        assert len(row) == 1, (r.task, r.metric, r.subset)
        assert row[r.variant].iloc[0] == pytest.approx(r.value)
        if r.chance is not None:
            assert row["chance"].iloc[0] == pytest.approx(r.chance)
    assert scores.columns[4] == "full"  # every variant side by side, the full model first
    assert sorted(contamination.task) == sorted(c.task for c in record.contamination)
    assert at.get("vega_lite_chart"), "no evaluation chart"


def test_model_page_without_evaluation_says_so(explorer_env):
    at = open_page("model", ref=IMPORTED, tab="Evaluation")
    assert "has not been evaluated yet" in page_text(at)


def test_model_page_architecture(explorer_env):
    metrics = json.loads((explorer_env.root / "build/models/forge-tiny/train/metrics.json").read_text())
    at = open_page("model", ref=RELEASE, tab="Architecture")
    shown = {m.label: m.value for m in at.metric}
    assert shown["Parameters"] == "656k" and metrics["parameters"] == 656000
    assert shown["Layers"] == "2"
    dot = at.get("graphviz_chart")[0].proto.spec
    assert "decoder layer × 2" in dot and "SwiGLU MLP" in dot
    assert "config.json (verified against the manifest)" in page_text(at)


def test_model_page_training_curves_from_build_and_mlflow(explorer_env):
    reg = registry(explorer_env)
    run_id = reg.provenance(reg.release(RELEASE)).mlflow_run_id
    at = open_page("model", ref=RELEASE, tab="Training")
    text = page_text(at)
    assert "the build of this release (its weights match the manifest)" in text
    assert f"MLflow run {run_id}" in text
    assert at.get("vega_lite_chart")
    assert {m.label: m.value for m in at.metric}["Steps"] == "120"


def test_model_page_lineage(explorer_env):
    at = open_page("model", ref=RELEASE, tab="Lineage")
    dot = at.get("graphviz_chart")[0].proto.spec
    for node in ("dataset/tiny-local@1", "recipe/forge-tiny@1", RELEASE, "variant int8", "variant int4-g32"):
        assert node in dot


def test_model_page_artifacts_reverify(explorer_env):
    at = open_page("model", ref=RELEASE, tab="Artifacts")
    reg = registry(explorer_env)
    release = reg.release(RELEASE)
    text = page_text(at)
    for a in release.manifest.artifacts:
        assert a.sha256 in text
    at.button[0].click().run()  # re-verify every artifact
    badges = [m.value for m in at.markdown if "badge[" in m.value]
    assert sum("verified" in b for b in badges) == len(release.manifest.artifacts)


def test_model_page_reproduce_commands_and_rebuilds(explorer_env):
    release = registry(explorer_env).release(RELEASE)
    at = open_page("model", ref=RELEASE, tab="Reproduce")
    commands = at.code[0].value
    assert f"git fetch && git checkout {release.manifest.source_commit}" in commands
    assert f"commonforge reproduce {RELEASE}" in commands
    assert f"sha256:{release.release_digest}" in commands
    rebuilds = at.dataframe[-1].value
    assert list(rebuilds["result"]) == ["identical"] and "rebuilder-box" in rebuilds["where"].iloc[0]


def test_model_page_governance_is_computed_when_viewed(explorer_env):
    at = open_page("model", ref=RELEASE, tab="Governance")
    text = page_text(at)
    assert "**Status: draft** under governance policy **1**" in text
    assert "Why it is not published yet" in text and "approvals: 0 of 3 approvals counted" in text
    assert "No signed build statement" in text
    rebuilders = at.dataframe[-1].value
    assert list(rebuilders["rebuilder"]) == ["Second Rebuilder"] and list(rebuilders["affiliation"]) == ["Beta"]
    # A revocation shows at once (the cache key covers the statements): two maintainers sign one.
    from registry import Ref, Registry
    from trust import keys as trust_keys
    from trust.statements import RevocationPredicate, sign, statements_dir, write
    from trust.status import release_status

    root = explorer_env.root
    rel = Registry(root).release(RELEASE)
    keys_dir = root.parent / "keys"  # where the fixture founded the forge's policy
    folder = statements_dir(root, Ref.parse(RELEASE))
    written = []
    for who in ("Ann Approver", "Cy Reviewer"):
        signer, info = trust_keys.load_signer(keys_dir, who)
        data = sign(signer, "revocation", RELEASE, rel.release_digest, RevocationPredicate(
            signed_at="2026-11-30T00:00:00Z", reason="Found a source whose license forbids this use.", severity="high"))
        written.append(write(folder, "revocation", info.keyid, data))
    try:
        assert release_status(root, rel).status == "revoked"
        at = open_page("model", ref=RELEASE, tab="Governance")
        assert "This release is REVOKED." in page_text(at) and "Found a source whose license" in page_text(at)
    finally:
        for path in written:
            path.unlink()


def test_imported_release_with_missing_artifacts_says_so(explorer_env):
    at = open_page("model", ref=IMPORTED)
    text = page_text(at)
    assert "Imported: this model was not built by the forge" in text
    assert "3 of 3 artifacts of this release are not in the local store" in text
    assert "An imported release has no recipe" in text
    at = open_page("model", ref=IMPORTED, tab="Reproduce")
    assert "cannot be reproduced" in page_text(at)
    at = open_page("model", ref=IMPORTED, tab="Artifacts")
    at.button[0].click().run()
    assert sum("missing]" in m.value for m in at.markdown) == 3


def test_try_it_generates_on_the_cpu(explorer_env):
    at = open_page("model", timeout=120, ref=RELEASE, tab="Try it")
    at.text_area[0].set_value("Call me Ishmael.")
    at.slider[0].set_value(12)
    at.button[0].click().run(timeout=180)
    assert not at.exception, [e.value for e in at.exception]
    text = page_text(at)
    assert "**Call me Ishmael\\.**" in text  # the prompt in bold, the continuation after it
    assert "new tokens after" in text and not at.error


def test_try_it_on_missing_files_is_a_message(explorer_env):
    at = open_page("model", timeout=120, ref=IMPORTED, tab="Try it")
    at.button[0].click().run(timeout=120)
    assert not at.exception
    assert "Could not load this release." in page_text(at)


@pytest.mark.parametrize("ref, message", [
    ("model/nope@9", "not found: model/nope@9"),
    ("model/forge-tiny@9.9.9", "not found: model/forge-tiny@9.9.9"),
    ("%%%", "bad ref"),
    ("dataset/tiny-local@1", "is a dataset, not a model release"),
])
def test_unknown_or_bad_ref_is_a_message(explorer_env, ref, message):
    at = open_page("model", ref=ref)
    assert message in page_text(at)
    assert not at.exception
    assert any(RELEASE in str(link.proto) for link in at.get("page_link"))  # what exists instead


# --- Dataset --------------------------------------------------------------------------------


def test_dataset_page_datasheet_statistics_licenses_models(explorer_env):
    at = open_page("dataset", ref="dataset/tiny-local@1")
    text = page_text(at)
    for section in ("Motivation", "Composition", "Collection", "Preprocessing", "Uses", "Limitations", "Maintenance"):
        assert section in text
    stats = json.loads((explorer_env.root / "build/datasets/tiny-local/stats.json").read_text())
    at = open_page("dataset", ref="dataset/tiny-local@1", tab="Statistics")
    splits = at.dataframe[0].value
    for split, d in stats["splits"].items():
        row = splits[splits.split == split]
        assert row["documents"].iloc[0] == d["documents"] and row["sha256"].iloc[0] == d["sha256"]
    assert len(at.get("vega_lite_chart")) == 2
    at = open_page("dataset", ref="dataset/tiny-local@1", tab="Licenses")
    assert "CC0-1.0" in page_text(at)
    at = open_page("dataset", ref="dataset/tiny-local@1", tab="Models")
    links = " ".join(str(link.proto) for link in at.get("page_link"))
    assert RELEASE in links and SECOND in links


def test_dataset_search_finds_a_known_document_and_opens_it(explorer_env):
    phrase, doc_id = known_phrase(explorer_env.root)
    at = open_page("dataset", ref="dataset/tiny-local@1", tab="Documents")
    at.text_input(key="q").set_value(f'"{phrase}"').run()
    text = page_text(at)
    assert f"**{doc_id}**" in text, text[:2000]
    assert "documents match" in text
    at.button(key=f"open-{doc_id}").click().run()
    assert doc_id in [s.value for s in at.subheader]
    assert any(phrase.split()[0] in t.value for t in at.text)


def test_dataset_browser_pages_through_a_split(explorer_env):
    at = open_page("dataset", ref="dataset/tiny-local@1", tab="Documents")
    assert "(in id order) · page 1 of 4" in page_text(at)
    first_page = [m.value for m in at.markdown if m.value.startswith("**moby-dick/")]
    at.pagination[0].set_value(2).run()
    assert "(in id order) · page 2 of 4" in page_text(at)
    second_page = [m.value for m in at.markdown if m.value.startswith("**moby-dick/")]
    assert second_page and not set(first_page) & set(second_page)


def test_dataset_search_with_no_match_and_unknown_dataset(explorer_env):
    at = open_page("dataset", ref="dataset/tiny-local@1", tab="Documents")
    at.text_input(key="q").set_value("zzyzx-never-appears").run()
    assert "No document in the train split matches" in page_text(at)
    at = open_page("dataset", ref="dataset/nope@1")
    assert "not found: dataset/nope@1" in page_text(at)


# --- Compare --------------------------------------------------------------------------------


def test_compare_two_releases(explorer_env):
    at = open_page("compare", a=RELEASE, b=SECOND)
    text = page_text(at)
    assert "Both were built from identical recipes." in text
    glance, scores = at.dataframe[0].value, at.dataframe[1].value
    assert list(glance[glance[""] == "release digest"]["same"]) == ["no"]
    assert scores["B − A"].dropna().round(6).eq(SHIFT).all()
    at = open_page("compare", a=RELEASE, b=IMPORTED)
    text = page_text(at)
    assert "only A was built from a recipe" in text and "Only A has an evaluation record" in text


def test_compare_with_an_unknown_ref(explorer_env):
    at = open_page("compare", a=RELEASE, b="model/nope@9")
    assert "not found: model/nope@9" in page_text(at)


# --- read-only ------------------------------------------------------------------------------


def test_browsing_changes_nothing_in_the_checkout(explorer_env):
    before = {k: v for k, v in snapshot(explorer_env.root).items() if not k.startswith(".git/")}
    for page, query in [("models", {}), ("model", {"ref": RELEASE}), ("model", {"ref": RELEASE, "tab": "Artifacts"}),
                        ("dataset", {"ref": "dataset/tiny-local@1", "tab": "Documents", "q": "whale"}),
                        ("compare", {})]:
        open_page(page, **query)
    after = {k: v for k, v in snapshot(explorer_env.root).items() if not k.startswith(".git/")}
    assert after == before
