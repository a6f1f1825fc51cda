"""The loss curve of a training run, as PNG bytes that are the same on every render.

Drawn on a bare ``Figure`` with the Agg canvas (no pyplot state, no display), under
matplotlib's built-in defaults (a user's matplotlibrc changes nothing), at a fixed size and
dpi, with the PNG's text chunks (matplotlib's "Software" stamp) left out: the same losses give
the same bytes with the same matplotlib and FreeType.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass

DPI = 100
SIZE_INCHES = (7.0, 4.0)


@dataclass(frozen=True)
class TrainingLog:
    """Losses per optimizer step, in nats per token (train/loss.csv, train/val_loss.csv)."""

    train: tuple[tuple[int, float], ...]
    validation: tuple[tuple[int, float], ...] = ()

    @classmethod
    def from_rows(cls, train: Sequence[Sequence], validation: Sequence[Sequence] = ()) -> TrainingLog:
        return cls(tuple((int(s), float(v)) for s, v in train), tuple((int(s), float(v)) for s, v in validation))


def loss_curve_png(log: TrainingLog, title: str) -> bytes:
    """Training loss per step (a line) and validation loss (markers), as PNG bytes."""
    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    with matplotlib.rc_context():
        matplotlib.rcdefaults()
        fig = Figure(figsize=SIZE_INCHES, dpi=DPI)
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        if log.train:
            steps, losses = zip(*log.train)
            ax.plot(steps, losses, linewidth=1.2, color="#1f77b4", label="training loss (per step)")
        if log.validation:
            steps, losses = zip(*log.validation)
            ax.plot(steps, losses, marker="o", linewidth=1.2, color="#d62728", label="validation loss")
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("cross-entropy (nats per token)")
        ax.set_title(title)
        ax.grid(True, alpha=0.3)
        ax.legend(loc="upper right")
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    return buf.getvalue()
