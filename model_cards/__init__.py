"""Model and dataset cards: jinja2 templates in ``templates/`` and the renderer.

    from model_cards import ModelCardInputs, render_model_card, render_dataset_card

Rendering is pure: inputs (registry records, build outputs) in, markdown out. Gathering the
inputs from a checkout, and writing the cards, is ``pipelines.card``'s job. Rendered cards of
committed releases live in ``model_cards/published/``.
"""

from model_cards.plots import TrainingLog, loss_curve_png
from model_cards.render import (
    BuildOutputs,
    DatasetInputs,
    ModelCardInputs,
    render_dataset_card,
    render_model_card,
)

__all__ = [
    "BuildOutputs",
    "DatasetInputs",
    "ModelCardInputs",
    "TrainingLog",
    "loss_curve_png",
    "render_dataset_card",
    "render_model_card",
]
