"""Dataset cards of the real dataset entries, with the statistics of real builds."""

from __future__ import annotations

import pytest

from model_cards import render_dataset_card
from registry import Registry
from registry.schema import DatasetBuild
from tests.helpers import REPO
from tests.model_cards.conftest import assert_complete, front_matter, stats

REG = Registry(REPO)
SECTIONS = ("Motivation", "Composition", "Collection process", "Preprocessing", "Uses", "Limitations",
            "Maintenance", "License and attribution")


@pytest.mark.parametrize("name", ["literary-pd", "austen", "tiny-local"])
def test_dataset_card_of_a_real_entry(name):
    from huggingface_hub import DatasetCard

    dataset = REG.dataset(f"dataset/{name}@1")
    s = stats(name)
    text = render_dataset_card(dataset, s, models=[f"model/{name}-model@1.0.0 (draft)"])
    assert_complete(text)
    card = DatasetCard(text)
    assert card.data.pretty_name == dataset.title and card.data.language == dataset.language
    assert "commonforge" in card.data.tags
    for title in SECTIONS:
        assert f"\n## {title}\n" in text
    # The datasheet, word for word (entries fold their prose; the card keeps it as one paragraph).
    for section in ("motivation", "limitations", "maintenance"):
        assert " ".join(getattr(dataset.datasheet, section).split()) in text
    # Every source: kind, artifact, digest, license; and every attribution its license asks for.
    for source in dataset.sources:
        assert f"`{source.sha256}`" in text and source.kind in text and source.license in text
        if source.package:
            assert f"`{source.package}@{source.version}`" in text
        if source.attribution:
            assert " ".join(source.attribution.split()) in text
    # Statistics per split and per source and split, from stats.json.
    for split, info in s["splits"].items():
        assert f"| {split} | {info['documents']:,} |" in text and info["sha256"] in text
    for sid, info in s["sources"].items():
        c = info["splits"]["train"]
        assert f"| {sid} | train | {c['documents']:,} | {c['words']:,} | {c['characters']:,} |" in text
    assert f"`model/{name}-model@1.0.0 (draft)`" in text


def test_literary_pd_licenses_and_attribution():
    dataset = REG.dataset("dataset/literary-pd@1")
    text = render_dataset_card(dataset, stats("literary-pd"))
    assert front_matter(text)["license"] == ["cc-by-2.5", "cc0-1.0", "mit"]
    assert front_matter(text)["size_categories"] == ["1K<n<10K"]
    assert "Open Knowledge Foundation" in text.split("## License and attribution")[1]
    assert "| kjv | 1,189 | 1 | 0 | 0 | 1,188 |" in text  # Psalm 117 is under 200 characters
    assert "The registry holds no model trained on this dataset yet." in text


def test_without_stats_the_card_says_where_they_would_come_from():
    dataset = REG.dataset("dataset/austen@1")
    text = render_dataset_card(dataset, None)
    assert_complete(text)
    assert "build/datasets/austen/stats.json" in text and "size_categories" not in front_matter(text)
    # A release's manifest still knows the split sizes.
    splits = DatasetBuild.model_validate({"ref": dataset.ref, "splits": stats("austen")["splits"]})
    text = render_dataset_card(dataset, None, splits=splits)
    assert_complete(text)
    assert "| train | 248 |" in text and "come from a release's build manifest" in text


def test_dataset_cards_render_identically_twice():
    dataset = REG.dataset("dataset/literary-pd@1")
    assert render_dataset_card(dataset, stats("literary-pd")) == render_dataset_card(dataset, stats("literary-pd"))
