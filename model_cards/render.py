"""Render model and dataset cards: the typed contexts laid out by the packaged jinja2 templates.

    text = render_model_card(ModelCardInputs(release, recipe=..., datasets=..., evaluation=...))
    text = render_dataset_card(dataset, stats, models=["model/forge-small@1.0.0 (draft)"])

The contexts are built in :mod:`model_cards.model_card` and :mod:`model_cards.dataset_card`;
the templates live in ``model_cards/templates/`` and run under ``StrictUndefined``, so a
misspelled slot is an error instead of an empty line. Rendering is pure: the same inputs give
the same bytes.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any

from model_cards.dataset_card import DatasetCardContext, dataset_card_context
from model_cards.model_card import (
    BuildOutputs,
    DatasetInputs,
    ModelCardContext,
    ModelCardInputs,
    model_card_context,
)
from model_cards.plots import TrainingLog
from model_cards.text import Table
from registry.schema import Dataset, DatasetBuild


@functools.cache
def environment():
    """The jinja2 environment over the packaged templates (strict: an unknown slot is an error)."""
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("model_cards", "templates"),
        undefined=jinja2.StrictUndefined,
        autoescape=False,  # markdown, not HTML
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["md_table"] = Table.markdown
    return env


def _render(template: str, context: object) -> str:
    out = environment().get_template(template).render(c=context)
    # One blank line between blocks, one newline at the end: stable bytes whatever the branches.
    lines = out.splitlines()
    tidy: list[str] = []
    for line in lines:
        line = line.rstrip()
        if line == "" and (not tidy or tidy[-1] == ""):
            continue
        tidy.append(line)
    return "\n".join(tidy).strip() + "\n"


def render_model_card(inputs: ModelCardInputs) -> str:
    return _render("model_card.md.j2", model_card_context(inputs))


def render_dataset_card(dataset: Dataset, stats: Mapping[str, Any] | None = None, *,
                        models: Sequence[str] = (), splits: DatasetBuild | None = None) -> str:
    return _render("dataset_card.md.j2", dataset_card_context(dataset, stats, models=models, splits=splits))


__all__ = [
    "BuildOutputs",
    "DatasetCardContext",
    "DatasetInputs",
    "ModelCardContext",
    "ModelCardInputs",
    "TrainingLog",
    "dataset_card_context",
    "model_card_context",
    "render_dataset_card",
    "render_model_card",
]
