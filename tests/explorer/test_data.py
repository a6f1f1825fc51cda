"""What the pages show, computed without Streamlit: reading, shaping, generating, the CLI command."""

from __future__ import annotations

import argparse
import json

import pytest

from commonforge.errors import InputError, NotFoundError
from explorer import cards, data, outputs, views
from explorer.data import Forge
from tests.explorer.conftest import IMPORTED, RELEASE, SECOND, SHIFT


@pytest.fixture
def forge(explorer_env) -> Forge:
    return Forge.load()


def test_forge_finds_the_checkout_and_its_store(forge, explorer_env):
    assert forge.root == explorer_env.root.resolve()
    assert forge.store_dir == explorer_env.store.resolve()
    assert forge.cache_dir == explorer_env.cache.resolve()
    with pytest.raises(InputError, match="not a commonforge checkout"):
        Forge.load(explorer_env.root / "build")


def test_release_summaries(forge):
    listing = data.release_summaries(forge)
    assert listing.broken == () and listing.datasets == 3 and listing.recipes == 2
    by_ref = {r.ref: r for r in listing.releases}
    assert set(by_ref) == {RELEASE, SECOND, IMPORTED}
    tiny = by_ref[RELEASE]
    assert tiny.status == "draft" and tiny.provenance == "built" and tiny.license == "Apache-2.0"
    assert tiny.reproduced and tiny.reproducibility == "rebuilt identical ×1 (rebuilder-box)"
    assert tiny.parameters == 656000 and tiny.variants == ("int4-g32", "int8")
    assert tiny.evaluated and tiny.headline and tiny.problems == ()
    assert by_ref[SECOND].reproducibility == "not rebuilt yet"
    imported = by_ref[IMPORTED]
    assert imported.reproducibility == "imported: never reproducible" and imported.parameters is None
    assert not imported.evaluated and imported.datasets == ()


def test_find_release_explains_bad_refs(forge):
    reg = forge.registry()
    assert data.find_release(reg, RELEASE).ref == RELEASE
    with pytest.raises(NotFoundError):
        data.find_release(reg, "model/nope@9")
    with pytest.raises(InputError, match="bad ref"):
        data.find_release(reg, "%%%")
    with pytest.raises(InputError, match="is a dataset"):
        data.find_release(reg, "dataset/tiny-local@1")
    with pytest.raises(InputError, match="no release chosen"):
        data.find_release(reg, None)
    assert data.find_dataset(reg, "tiny-local").ref == "dataset/tiny-local@1"


def test_release_detail_reads_build_outputs_mlflow_and_the_store(forge):
    d = data.release_detail(forge, RELEASE)
    assert d.build.matches_release is True and len(d.build.train_loss) == 120 and d.build.val_loss
    assert d.build.metrics["parameters"] == 656000 and set(d.build.quantize["variants"]) == {"full", "int4-g32", "int8"}
    assert d.mlflow.found and d.mlflow.metrics["train_loss"] and d.mlflow.run_id == d.provenance.mlflow_run_id
    assert all(d.in_store.values())
    assert d.stages and all(s.endswith("@forge-tiny") for s in d.stages)
    assert SECOND not in d.derived  # same recipe, but not built on this release


def test_imported_detail_is_honest(forge):
    d = data.release_detail(forge, IMPORTED)
    assert d.build is None and d.mlflow is None and d.recipe is None
    assert not any(d.in_store.values())
    assert d.config is None and "neither config.json nor a recipe" in d.config_source
    assert views.reproduce_commands(d.release, None) is None
    assert [status for _, status in data.reverify(forge, d.release.manifest.artifacts)] == ["missing"] * 3


def test_reverify_detects_a_corrupt_object(forge, tmp_path):
    import shutil

    from registry import Store

    release = forge.registry().release(RELEASE)
    art = release.manifest.artifact("config.json")
    store = Store(tmp_path / "store")
    target = store.object_path(art.sha256)
    target.parent.mkdir(parents=True)
    shutil.copyfile(Store(forge.store_dir).object_path(art.sha256), target)
    target.write_bytes(target.read_bytes() + b" ")
    corrupt = Forge(forge.root, tmp_path / "store", forge.mlflow_uri, forge.cache_dir)
    assert data.reverify(corrupt, [art]) == [("config.json", "corrupt")]


def test_mlflow_run_when_absent():
    assert outputs.mlflow_run("sqlite:////nonexistent/mlflow.db", "abc").found is False
    assert outputs.mlflow_run("sqlite:////nonexistent/mlflow.db", None) is None


def test_model_card_none_changed_and_ok(forge, explorer_env, tmp_path):
    import shutil

    from registry import Registry
    from registry.digest import sha256_file
    from registry.schema import CardRecord

    root = tmp_path / "forge"
    shutil.copytree(explorer_env.root / "registry", root / "registry")
    reg = Registry(root)
    release = reg.release(SECOND)
    f = Forge(root, forge.store_dir, forge.mlflow_uri, forge.cache_dir)
    assert cards.model_card(f, reg, release).status == "none"
    card = root / "model_cards/published/forge-tiny/2.0.0/README.md"
    card.parent.mkdir(parents=True)
    card.write_text("---\nlicense: apache-2.0\n---\n<!-- editor note -->\n# forge-tiny\n\nA card.\n")
    reg.save_record(release, "card", CardRecord(schema_version=1, release_digest=release.release_digest,
                                                path="model_cards/published/forge-tiny/2.0.0/README.md",
                                                sha256=sha256_file(card), rendered_at="2026-11-24T23:00:00Z"))
    ok = cards.model_card(f, reg, release)
    assert ok.status == "ok" and ok.markdown == "# forge-tiny\n\nA card." and ok.front_matter == "license: apache-2.0"
    card.write_text(card.read_text() + "edited\n")
    assert cards.model_card(f, reg, release).status == "changed"
    card.unlink()
    assert cards.model_card(f, reg, release).status == "missing"


def test_dataset_detail(forge):
    d = data.dataset_detail(forge, "dataset/tiny-local@1")
    assert d.build.stats["dataset"] == "dataset/tiny-local@1" and set(d.build.split_files) == {"train", "validation", "test"}
    assert d.trained_on == (RELEASE, SECOND)
    assert d.split_users[RELEASE]["train"] == d.build.stats["splits"]["train"]["sha256"]
    austen = data.dataset_detail(forge, "dataset/austen@1")
    assert austen.build.stats == {} and "not prepared in this checkout" in austen.build.note


# --- views ----------------------------------------------------------------------------------


def test_parameter_counts_match_the_trained_model(forge, explorer_env):
    config = data.model_config(forge, forge.registry().release(RELEASE))
    metrics = json.loads((explorer_env.root / "build/models/forge-tiny/train/metrics.json").read_text())
    pc = views.parameter_counts(config)
    assert pc["total"] == metrics["parameters"]
    assert sum(p["parameters"] for p in pc["parts"]) == pc["total"]
    tied = views.parameter_counts({**config, "tie_word_embeddings": True})
    assert tied["total"] == pc["total"] - config["vocab_size"] * config["hidden_size"]
    dot = views.layer_stack_dot(config)
    assert dot.startswith("digraph") and "decoder layer × 2" in dot and "4 query heads, 2 key/value heads" in dot


def test_parameter_counts_include_biases_as_the_card_does():
    from transformers import LlamaConfig, LlamaForCausalLM

    from model_cards.shape import ModelShape

    config = {"vocab_size": 96, "hidden_size": 32, "intermediate_size": 48, "num_hidden_layers": 2,
              "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 64,
              "attention_bias": True, "mlp_bias": True}
    model = LlamaForCausalLM(LlamaConfig(**config))
    pc = views.parameter_counts(config)
    assert pc["total"] == sum(p.numel() for p in model.parameters()) == ModelShape.from_config(config).total
    assert pc["per_layer"] == sum(p.numel() for p in model.model.layers[0].parameters())
    assert [p["part"] for p in pc["parts"]] == [name for name, _ in ModelShape.from_config(config).parts()]


def test_filter_releases(forge):
    releases = data.release_summaries(forge).releases
    refs = lambda rs: {r.ref for r in rs}  # noqa: E731
    assert refs(views.filter_releases(releases, "tiny")) == {RELEASE, SECOND}
    assert refs(views.filter_releases(releases, "imported sample")) == {IMPORTED}
    assert refs(views.filter_releases(releases, reproduced_only=True)) == {RELEASE}
    assert refs(views.filter_releases(releases, provenance=["imported"])) == {IMPORTED}
    assert refs(views.filter_releases(releases, evaluated_only=True)) == {RELEASE, SECOND}
    assert refs(views.filter_releases(releases, statuses=["published"])) == set()
    rows = views.releases_table(releases)
    assert {r["release"] for r in rows} == {RELEASE, SECOND, IMPORTED}


def test_evaluation_and_score_tables(forge):
    reg = forge.registry()
    record = reg.evaluation(reg.release(RELEASE))
    scores = data.scores_of(record)
    table = views.evaluation_table(scores)
    variants = views.variant_order(scores)
    assert variants[0] == "full"
    keys = {(r["task"], r["metric"], r["subset"]) for r in table}
    assert keys == {(s.task, s.metric, s.subset) for s in scores}
    for s in scores:
        row = next(r for r in table if (r["task"], r["metric"], r["subset"]) == (s.task, s.metric, s.subset))
        assert row[s.variant] == s.value
    diff = views.score_diff(scores, data.scores_of(reg.evaluation(reg.release(SECOND))))
    assert all(round(r["B − A"], 6) == SHIFT for r in diff)
    assert len(views.contamination_rows(record)) == len(record.contamination)


def test_compare_views(forge):
    a = data.release_detail(forge, RELEASE)
    b = data.release_detail(forge, SECOND)
    i = data.release_detail(forge, IMPORTED)
    assert views.recipe_diff(a.recipe, b.recipe) == []
    assert any(r["field"] == "training.steps" for r in views.recipe_diff(a.recipe, None))
    assert all(r["same"] == "yes" for r in views.data_diff(a.release, b.release))
    assert all(r["same"] == "no" for r in views.data_diff(a.release, i.release))
    assert views.environment_diff(a.release, b.release) == []
    glance = {r[""]: r for r in views.summary_diff(a.summary, i.summary)}
    assert glance["provenance"]["same"] == "no" and glance["release digest"]["same"] == "no"


def test_reproduce_commands_and_lineage(forge):
    d = data.release_detail(forge, RELEASE)
    cmds = views.reproduce_commands(d.release, "forge-tiny", d.stages)
    m = d.release.manifest
    assert f"git checkout {m.source_commit}" in cmds and f"commonforge reproduce {RELEASE}" in cmds
    assert "dvc repro " + " ".join(d.stages) in cmds
    # manifest schema 2: the digest of the packages the stages imported, not of the whole lock
    assert m.environment.packages_sha256 in cmds and "requirements.lock sha256" not in cmds
    dot = views.lineage_dot(d.lineage, focus=RELEASE)
    assert '"dataset/tiny-local@1"' in dot and '"variant int8"' in dot and "penwidth" in dot


def test_dot_escaping():
    from registry.lineage import Graph, Node

    g = Graph()
    g.add(Node('model/x"y@1', "model", 'model/x"y@1'))
    assert 'label="model/x\\"y@1"' in views.lineage_dot(g)


def test_human_units():
    assert views.human_bytes(2626216) == "2.5 MiB" and views.human_bytes(None) == "–"
    assert views.human_count(656000) == "656k" and views.human_count(7_000_000_000) == "7B"


# --- try it ---------------------------------------------------------------------------------


def test_generate_greedy_and_seeded_sampling(forge, monkeypatch):
    from explorer import generate as generate_module
    from explorer.generate import GenerationSettings, generate, load

    release = forge.registry().release(RELEASE)
    loaded = load(forge, release, "full")
    assert loaded.variant == "full" and loaded.device.type == "cpu"
    greedy = generate(loaded, "Call me Ishmael.", GenerationSettings(max_new_tokens=8))
    assert greedy.chat and greedy.new_tokens <= 8 and greedy.stopped in ("eos", "length")
    assert generate(loaded, "Call me Ishmael.", GenerationSettings(max_new_tokens=8)).text == greedy.text
    a = generate(loaded, "The whale", GenerationSettings(max_new_tokens=10, sample=True, seed=7))
    b = generate(loaded, "The whale", GenerationSettings(max_new_tokens=10, sample=True, seed=7))
    assert a.text == b.text and a.new_tokens == b.new_tokens
    raw = generate(loaded, "The whale", GenerationSettings(max_new_tokens=10, sample=True, seed=7, raw=True))
    assert not raw.chat and raw.prompt_tokens < a.prompt_tokens  # no template around the prompt
    monkeypatch.setattr(generate_module, "MAX_NEW_TOKENS", 5)
    capped = generate(loaded, "x", GenerationSettings(max_new_tokens=10_000, sample=True, seed=1))
    assert capped.new_tokens <= 5


def test_generate_keeps_the_end_of_a_long_prompt_inside_the_template(forge, monkeypatch):
    from explorer.generate import GenerationSettings, generate, load
    from serving.engine import Engine

    loaded = load(forge, forge.registry().release(RELEASE), "full")
    tok = loaded.tokenizer
    seen: list[list[int]] = []
    real = Engine.submit_many
    monkeypatch.setattr(Engine, "submit_many", lambda self, items, *a, **k: (
        seen.extend(list(ids) for ids, _ in items), real(self, items, *a, **k))[1])
    prompt = " ".join(f"word{i}" for i in range(loaded.context_length)) + " the end"
    out = generate(loaded, prompt, GenerationSettings(max_new_tokens=8))
    assert out.chat and out.prompt_tokens + 8 <= loaded.context_length and len(seen) == 1
    # what the model saw: the template's BOS and turn markers around the prompt's last words
    text = tok.decode(seen[0], skip_special_tokens=False)
    assert text.startswith(tok.bos_token + "<|user|>") and text.endswith(" the end<|end|><|assistant|>")
    assert "word0 " not in text and len(seen[0]) == out.prompt_tokens


def test_generate_without_a_chat_template_continues_raw(forge, monkeypatch):
    from explorer.generate import GenerationSettings, as_markdown, generate, load

    loaded = load(forge, forge.registry().release(RELEASE), "full")
    settings = GenerationSettings(max_new_tokens=8, sample=True, seed=3)
    monkeypatch.setattr(loaded.tokenizer, "chat_template", None)  # as a base model's tokenizer has none
    plain = generate(loaded, "Call me Ishmael.", settings)
    raw = generate(loaded, "Call me Ishmael.", GenerationSettings(max_new_tokens=8, sample=True, seed=3, raw=True))
    assert not plain.chat and (plain.text, plain.prompt_tokens) == (raw.text, raw.prompt_tokens)
    assert as_markdown(plain).startswith("**Call me Ishmael\\.**") and "\n\n" not in as_markdown(plain)[:22]


# --- the command ----------------------------------------------------------------------------


def test_explore_command_parser_and_flags():
    from commonforge.cli import explore_cmds

    parser = argparse.ArgumentParser()
    explore_cmds.add_parsers(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["explore", "--port", "8765", "--root", "/x"])
    assert args._target == ("commonforge.cli.explore_cmds", "cmd_explore") and args.port == 8765
    cmd = explore_cmds.streamlit_command(explore_cmds.app_path(), 8765)
    pairs = dict(zip(cmd[6::2], cmd[7::2]))
    assert pairs["--server.address"] == "127.0.0.1" and pairs["--browser.gatherUsageStats"] == "false"
    assert pairs["--server.headless"] == "true" and pairs["--server.port"] == "8765"
    assert cmd[1:6] == ["-P", "-m", "streamlit", "run", str(explore_cmds.app_path())]
    assert explore_cmds.app_path().is_file()


def test_explore_refuses_a_folder_that_is_no_checkout(tmp_path, capsys):
    from commonforge.cli import main

    assert main(["explore", "--root", str(tmp_path)]) == 2
    assert "not a commonforge checkout" in capsys.readouterr().err
    assert main(["explore", "--port", "0"]) == 2


def test_generation_as_markdown_is_escaped():
    from explorer.generate import Generation, as_markdown

    gen = Generation("Call me *Ishmael*.", " and $5\n\n\n\nthe end", 3, 4, 0.1, "eos")
    assert as_markdown(gen) == "**Call me \\*Ishmael\\*\\.** and \\$5  \n  \nthe end"
    assert as_markdown(Generation("Hi", "\n\n", 2, 2, 0.1, "eos")).endswith("*(only whitespace was generated)*")
