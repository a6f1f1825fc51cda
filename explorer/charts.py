"""Altair chart specs for the pages (data in, chart out; rendered by st.altair_chart)."""

from __future__ import annotations

from collections.abc import Sequence

import altair as alt
import pandas as pd

from explorer.data import BuildOutputs, MlflowRun, Score

_VARIANT_COLORS = ["#2f5d9b", "#d9822b", "#5a9e6f", "#a05195", "#8a9bb3", "#c44e52"]


def training_curves(build: BuildOutputs | None, run: MlflowRun | None) -> alt.Chart | None:
    """Train and validation loss by step, from the build's plots files and, where found, MLflow."""
    rows = []
    if build is not None:
        rows += [{"step": s, "loss": v, "series": "train loss (loss.csv)"} for s, v in build.train_loss]
        rows += [{"step": s, "loss": v, "series": "validation loss (val_loss.csv)"} for s, v in build.val_loss]
    if run is not None and run.found:
        for key, name in (("train_loss", "train loss (MLflow)"), ("val_loss", "validation loss (MLflow)")):
            rows += [{"step": s, "loss": v, "series": name} for s, v in run.metrics.get(key, ())]
    if not rows:
        return None
    df = pd.DataFrame(rows)
    return (
        alt.Chart(df)
        .mark_line(point=alt.OverlayMarkDef(size=18, filled=True))
        .encode(
            x=alt.X("step:Q", title="optimizer step"),
            y=alt.Y("loss:Q", title="loss (nats/token)", scale=alt.Scale(zero=False)),
            color=alt.Color("series:N", title=None, legend=alt.Legend(orient="bottom", columns=2)),
            strokeDash=alt.condition(alt.FieldOneOfPredicate("series", [r for r in df["series"].unique() if "MLflow" in r]),
                                     alt.value([5, 3]), alt.value([1, 0])),
            tooltip=["series", "step", alt.Tooltip("loss:Q", format=".4f")],
        )
        .properties(height=300)
    )


def evaluation_chart(scores: Sequence[Score], variants: Sequence[str]) -> alt.Chart | None:
    """One panel per task and metric, a bar per variant, a dashed rule at chance level."""
    if not scores:
        return None
    rows = []
    for s in scores:
        rows.append({"measure": s.label, "variant": s.variant, "value": s.value,
                     "stderr": s.stderr if s.stderr is not None else 0.0,
                     "chance": s.chance if s.chance is not None else float("nan")})
    df = pd.DataFrame(rows)
    # One chance value per measure (it is the same for every variant).
    df["chance"] = df.groupby("measure")["chance"].transform("max")
    color = alt.Color("variant:N", sort=list(variants), title="variant",
                      scale=alt.Scale(domain=list(variants), range=_VARIANT_COLORS[: len(variants)]))
    bars = alt.Chart().mark_bar().encode(
        x=alt.X("variant:N", sort=list(variants), title=None, axis=alt.Axis(labelAngle=0)),
        y=alt.Y("value:Q", title=None),
        color=color,
        tooltip=["measure", "variant", alt.Tooltip("value:Q", format=".4f"), alt.Tooltip("stderr:Q", format=".4f")],
    )
    # An invisible point at the panel's top keeps an all-zero panel from collapsing to [0, 0].
    df["ceiling"] = df.groupby("measure")["value"].transform("max")
    df.loc[df["ceiling"] <= 0, "ceiling"] = 1.0
    layers = [bars, alt.Chart().mark_point(opacity=0).encode(y="max(ceiling):Q")]
    if df["chance"].notna().any():
        layers.append(alt.Chart().mark_rule(strokeDash=[6, 4], color="#c44e52", size=2).encode(
            y="mean(chance):Q", tooltip=[alt.Tooltip("mean(chance):Q", title="chance level", format=".3f")]))
    return (
        alt.layer(*layers, data=df)
        .properties(width=170, height=170)
        .facet(facet=alt.Facet("measure:N", title=None), columns=4)
        .resolve_scale(y="independent")
    )


def parameter_chart(parts: list[dict]) -> alt.Chart:
    df = pd.DataFrame(parts)
    return (
        alt.Chart(df)
        .mark_bar(color="#2f5d9b")
        .encode(
            x=alt.X("parameters:Q", title="parameters"),
            y=alt.Y("part:N", sort=None, title=None, axis=alt.Axis(labelLimit=220)),
            tooltip=["part", alt.Tooltip("parameters:Q", format=","), alt.Tooltip("share:Q", format=".1%")],
        )
        .properties(height=alt.Step(26))
    )


def source_split_chart(rows: list[dict], measure: str = "words") -> alt.Chart | None:
    if not rows:
        return None
    df = pd.DataFrame(rows)
    return (
        alt.Chart(df)
        .mark_bar()
        .encode(
            x=alt.X(f"{measure}:Q", title=measure),
            y=alt.Y("source:N", title=None),
            color=alt.Color("split:N", sort=["train", "validation", "test"],
                            scale=alt.Scale(domain=["train", "validation", "test"],
                                            range=["#2f5d9b", "#d9822b", "#5a9e6f"])),
            order=alt.Order("split_order:Q"),
            tooltip=["source", "split", "documents", "words", "bytes"],
        )
        .transform_calculate(split_order="datum.split == 'train' ? 0 : datum.split == 'validation' ? 1 : 2")
        .properties(height=alt.Step(34))
    )


def score_diff_chart(rows: list[dict]) -> alt.Chart | None:
    data = [r for r in rows if r["A"] is not None and r["B"] is not None]
    if not data:
        return None
    long = []
    for r in data:
        label = f"{r['task']} {r['metric']}" + ("" if r["subset"] == "all" else " (clean)")
        if r["variant"] != "full":
            label += f" [{r['variant']}]"
        long += [{"measure": label, "release": "A", "value": r["A"]}, {"measure": label, "release": "B", "value": r["B"]}]
    df = pd.DataFrame(long)
    return (
        alt.Chart(df)
        .mark_bar()
        .encode(x=alt.X("release:N", title=None, axis=alt.Axis(labelAngle=0)), y=alt.Y("value:Q", title=None),
                color=alt.Color("release:N", scale=alt.Scale(domain=["A", "B"], range=["#2f5d9b", "#d9822b"])),
                tooltip=["measure", "release", alt.Tooltip("value:Q", format=".4f")])
        .properties(width=120, height=150)
        .facet(facet=alt.Facet("measure:N", title=None), columns=5)
        .resolve_scale(y="independent")
    )
