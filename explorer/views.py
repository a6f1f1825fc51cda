"""Shaping what the pages show: filters, tables, parameter counts, diagrams, commands, diffs.

Plain functions over registry records and :mod:`explorer.data` values; no Streamlit, no
torch. Tables are lists of dicts (one per row, columns in display order).
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from commonforge.units import human_bytes
from explorer.data import ReleaseSummary, Score
from model_cards.shape import ModelShape
from registry.lineage import Graph
from registry.schema import Artifact, BuildManifest, Dataset, EvaluationRecord, Recipe, Release

if TYPE_CHECKING:
    from registry.schema import Conversion

# --- formatting ----------------------------------------------------------------------------


def human_count(n: int | None) -> str:
    if n is None:
        return "–"
    for div, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if n >= div:
            return f"{n / div:.2f}".rstrip("0").rstrip(".") + suffix
    return str(n)


# --- the Models page -----------------------------------------------------------------------


def filter_releases(
    releases: Iterable[ReleaseSummary],
    query: str = "",
    *,
    statuses: Sequence[str] = (),
    licenses: Sequence[str] = (),
    provenance: Sequence[str] = (),
    reproduced_only: bool = False,
    evaluated_only: bool = False,
) -> list[ReleaseSummary]:
    """Releases matching every word of ``query`` (ref, title, description, license, data) and the filters."""
    words = query.lower().split()
    out = []
    for r in releases:
        text = r.text()
        if words and not all(w in text for w in words):
            continue
        if statuses and r.status not in statuses:
            continue
        if licenses and r.license not in licenses:
            continue
        if provenance and r.provenance not in provenance:
            continue
        if reproduced_only and not r.reproduced:
            continue
        if evaluated_only and not r.evaluated:
            continue
        out.append(r)
    return out


def releases_table(releases: Iterable[ReleaseSummary]) -> list[dict]:
    rows = []
    for r in releases:
        row = {
            "release": r.ref,
            "status": r.status,
            "in": r.layer,
            "provenance": r.provenance,
            "reproducibility": r.reproducibility,
            "parameters": human_count(r.parameters),
            "size": human_bytes(r.weights_bytes),
            "license": r.license,
            "variants": ", ".join(r.variants) or "–",
            "scores": " · ".join(f"{label} {value:.3f}" for label, value in r.headline) if r.evaluated
            else "not evaluated yet",
            "data": ", ".join(r.datasets) or ("imported" if r.provenance == "imported" else "–"),
        }
        rows.append(row)
    return rows


def headline_columns(releases: Iterable[ReleaseSummary]) -> list[str]:
    """Every headline score label across releases, in first-seen order (one table column each)."""
    seen: dict[str, None] = {}
    for r in releases:
        for label, _ in r.headline:
            seen.setdefault(label, None)
    return list(seen)


# --- architecture ---------------------------------------------------------------------------


def parameter_counts(config: dict) -> dict:
    """Parameters of a Llama-family decoder by part, from its config, as :mod:`model_cards.shape` counts them
    (biases included where the config asks for them; the card shows the same numbers)."""
    shape = ModelShape.from_config(config)
    total = shape.total
    return {
        "parts": [{"part": k, "parameters": v, "share": v / total if total else 0.0} for k, v in shape.parts()],
        "per_layer": shape.per_layer,
        "total": total,
        "tied": shape.tie_word_embeddings,
        "head_dim": shape.head_dim,
    }


def _label(*lines: str) -> str:
    return "<" + "<BR/>".join(lines) + ">"


def layer_stack_dot(config: dict) -> str:
    """A Graphviz DOT diagram of the decoder: embeddings, the repeated layer, the head."""
    pc = parameter_counts(config)
    v, h = config["vocab_size"], config["hidden_size"]
    i, n = config["intermediate_size"], config["num_hidden_layers"]
    heads = config["num_attention_heads"]
    kv = config.get("num_key_value_heads") or heads
    ctx = config.get("max_position_embeddings", "?")
    tied = pc["tied"]
    esc = html.escape
    per_layer = f"{human_count(pc['per_layer'])} parameters each"
    head = f"head dim {pc['head_dim']}, RoPE"
    lines = [
        "digraph layers {",
        '  graph [rankdir=TB, nodesep=0.3, ranksep=0.25, bgcolor="transparent", fontname="Helvetica", size="4.5,9"];',
        '  node [shape=box, style="rounded,filled", fillcolor="#eef2f7", color="#8a9bb3", fontname="Helvetica", fontsize=11];',
        '  edge [color="#5b6b82", arrowsize=0.7];',
        f'  tokens [label={_label("<B>input tokens</B>", esc(f"up to {ctx} positions"))}, shape=plain, style=""];',
        f'  embed [label={_label("<B>token embeddings</B>", f"{v} × {h}")}];',
        f"  subgraph cluster_layer {{ label={_label(f'<B>decoder layer × {n}</B>', esc(per_layer))}; "
        'style="rounded,dashed"; color="#8a9bb3"; fontname="Helvetica"; fontsize=11;',
        f'    norm1 [label={_label("RMSNorm", str(h))}];',
        f'    attn [label={_label("<B>self-attention</B>", f"{heads} query heads, {kv} key/value heads", head)}, '
        'fillcolor="#dde8f6"];',
        '    add1 [label="+", shape=circle, width=0.3, fixedsize=true];',
        f'    norm2 [label={_label("RMSNorm", str(h))}];',
        f'    mlp [label={_label("<B>SwiGLU MLP</B>", f"{h} → {i} → {h}")}, fillcolor="#e3f1e4"];',
        '    add2 [label="+", shape=circle, width=0.3, fixedsize=true];',
        "    norm1 -> attn -> add1 -> norm2 -> mlp -> add2;",
        "  }",
        f'  final_norm [label={_label("final RMSNorm", str(h))}];',
        f'  head [label={_label("<B>LM head</B>", f"{h} × {v}" + (" (tied to the embeddings)" if tied else ""))}];',
        '  logits [label="next-token logits", shape=plain, style=""];',
        "  tokens -> embed -> norm1;",
        "  add2 -> final_norm -> head -> logits;",
        '  embed -> add1 [style=dashed, constraint=false, color="#9aa7b8", arrowhead=none];',
        "}",
    ]
    if tied:
        lines.insert(-1, '  embed -> head [style=dotted, color="#b07a2a", label=" shared", fontsize=9, constraint=false];')
    return "\n".join(lines)


def config_rows(config: dict) -> list[dict]:
    keep = ("model_type", "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
            "num_attention_heads", "num_key_value_heads", "head_dim", "max_position_embeddings",
            "rope_theta", "rms_norm_eps", "tie_word_embeddings", "hidden_act", "dtype", "torch_dtype")
    rows = [{"field": k, "value": str(config[k])} for k in keep if k in config]
    if "quantization_config" in config:
        rows.append({"field": "quantization_config", "value": "present"})
    return rows


# --- lineage ------------------------------------------------------------------------------

_KIND_STYLE = {
    "dataset": ('shape=cylinder', "#e3f1e4"),
    "recipe": ('shape=note', "#fdf0d5"),
    "conversion": ('shape=component', "#f3e6f5"),
    "model": ('shape=box, style="rounded,filled"', "#dde8f6"),
    "variant": ('shape=box, style="rounded,filled,dashed"', "#eef2f7"),
}


def lineage_dot(graph: Graph, focus: str | None = None) -> str:
    """DOT for a lineage graph (datasets → recipe → release → variants / derived models)."""
    ids = {node_id: f"n{k}" for k, node_id in enumerate(sorted(graph.nodes))}
    lines = [
        "digraph lineage {",
        '  graph [rankdir=LR, bgcolor="transparent", fontname="Helvetica", nodesep=0.25];',
        '  node [fontname="Helvetica", fontsize=11, style=filled, color="#8a9bb3"];',
        '  edge [color="#5b6b82", arrowsize=0.7];',
    ]
    for node_id in sorted(graph.nodes):
        node = graph.nodes[node_id]
        shape, fill = _KIND_STYLE.get(node.kind, ("shape=box", "#ffffff"))
        label = node.label if node.kind != "variant" else f"variant {node.label}"
        pen = ', penwidth=2.2, color="#2f5d9b"' if node_id == focus else ""
        lines.append(f'  {ids[node_id]} [label="{_dot_escape(label)}", {shape}, fillcolor="{fill}"{pen}, '
                     f'tooltip="{_dot_escape(node.kind)}: {_dot_escape(node_id)}"];')
    for a, b in sorted(graph.edges):
        if a in ids and b in ids:
            lines.append(f"  {ids[a]} -> {ids[b]};")
    lines.append("}")
    return "\n".join(lines)


def _dot_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


# --- evaluation --------------------------------------------------------------------------


def variant_order(scores: Iterable[Score]) -> list[str]:
    names = sorted({s.variant for s in scores})
    return (["full"] if "full" in names else []) + [n for n in names if n != "full"]


def evaluation_table(scores: Sequence[Score]) -> list[dict]:
    """One row per (task, metric, subset); one column per variant (value ± stderr), chance beside them."""
    variants = variant_order(scores)
    rows: dict[tuple, dict] = {}
    for s in scores:
        key = (s.task, s.metric, s.subset)
        row = rows.setdefault(key, {"task": s.task, "metric": s.metric, "items": s.items,
                                    "subset": s.subset, "chance": None, **{v: None for v in variants}})
        row[s.variant] = s.value
        if s.stderr is not None:
            row[f"{s.variant} ±"] = s.stderr
        if s.chance is not None:
            row["chance"] = s.chance
    ordered = []
    for row in rows.values():
        out = {"task": row["task"], "metric": row["metric"], "subset": row["subset"], "items": row["items"]}
        for v in variants:
            out[v] = row.get(v)
            if f"{v} ±" in row:
                out[f"{v} ±"] = row[f"{v} ±"]
        out["chance"] = row["chance"]
        ordered.append(out)
    return ordered


def table_height(rows: Sequence, row_px: int = 35) -> int:
    """Pixels for a st.dataframe that shows every row without scrolling (header included)."""
    return row_px * (len(rows) + 1) + 3


def contamination_rows(record: EvaluationRecord | None) -> list[dict]:
    if record is None:
        return []
    return [{"task": c.task, "items": c.items, "contaminated": c.contaminated,
             "share": (c.contaminated / c.items) if c.items else 0.0, "n-gram": c.ngram}
            for c in record.contamination]


# --- artifacts & reproduction --------------------------------------------------------------


def artifact_rows(artifacts: Sequence[Artifact], present: dict[str, bool] | None = None,
                  checks: dict[str, str] | None = None) -> list[dict]:
    rows = []
    for a in artifacts:
        row = {"path": a.path, "variant": a.variant or "full", "stage": a.stage, "size": human_bytes(a.size),
               "sha256": a.sha256}
        if present is not None:
            row["in local store"] = "yes" if present.get(a.sha256) else "missing"
        if checks is not None:
            row["re-verified"] = checks.get(a.path, "not yet")
        rows.append(row)
    return rows


def environment_pin(m: BuildManifest) -> str:
    """What pins a built release's libraries: the whole lock (manifest schema 1) or the imported set (2)."""
    if m.lock_sha256:
        return f"requirements.lock sha256 {m.lock_sha256}"
    env = m.environment
    if env is None or env.packages_sha256 is None:
        return "an unknown environment"
    return f"the {len(env.packages)} packages its stages imported (digest {env.packages_sha256})"


def reproduce_commands(release: Release, recipe_name: str | None, stages: Sequence[str] = ()) -> str | None:
    """The exact shell commands that rebuild a built release and compare it bit for bit."""
    m = release.manifest
    if m.provenance != "built" or m.source_commit is None or recipe_name is None:
        return None
    lines = [
        "# in your clone of the forge (any peer's copy of the repository has the commit)",
        f"git fetch && git checkout {m.source_commit}",
        f"make venv            # installs the hashed lock; the release pins {environment_pin(m)}",
        "",
        "# rebuild in a clean worktree at that commit and compare every digest with the release",
        f".venv/bin/commonforge reproduce {release.ref}",
        "",
        "# or step by step: run the pipeline, then compare what it made with the release",
    ]
    if stages:
        lines.append(".venv/bin/dvc repro " + " ".join(stages))
    lines += [
        f".venv/bin/commonforge build {recipe_name}   # a rebuild of an existing release only compares, never overwrites",
        f".venv/bin/commonforge verify {release.ref}   # re-hash the artifacts in your store",
        "",
        f"# expected release digest: sha256:{release.release_digest}",
    ]
    return "\n".join(lines)


def checkpoint_spec(conversion: Conversion) -> str:
    """The pinned checkpoint of a conversion in the ``KIND:SPEC`` form a user types, with its member."""
    src = conversion.source
    spec = (f"{src.kind}:{src.url or src.path}" if src.kind in ("url", "local")
            else f"{src.kind}:{src.package}=={src.version}" + (f":{src.file}" if src.file else ""))
    return spec + (f" ({src.member})" if src.member else "")


def conversion_reproduce_commands(release: Release) -> str | None:
    """The exact shell commands that convert a converted release again and compare it bit for bit."""
    m = release.manifest
    if m.provenance != "converted" or m.conversion is None or m.source_commit is None:
        return None
    return "\n".join([
        "# in your clone of the forge (any peer's copy of the repository has the commit)",
        f"git fetch && git checkout {m.source_commit}",
        f"make venv            # installs the hashed lock; the release pins {environment_pin(m)}",
        "",
        "# fetch the pinned checkpoint, convert it again at that commit in a clean worktree, compare every digest",
        f".venv/bin/commonforge reproduce {release.ref}",
        "",
        "# or by hand in that checkout: an identical conversion only confirms the release, a different one is refused",
        f".venv/bin/commonforge convert {m.conversion.ref}",
        "",
        f"# expected release digest: sha256:{release.release_digest}",
    ])


# --- the Dataset page -----------------------------------------------------------------------


def split_rows(stats: dict) -> list[dict]:
    rows = []
    for split, d in (stats.get("splits") or {}).items():
        rows.append({"split": split, "documents": d.get("documents"), "bytes": human_bytes(d.get("bytes")),
                     "sha256": d.get("sha256")})
    return rows


def source_stats_rows(stats: dict) -> list[dict]:
    """Per source and split: documents, words, bytes (long form, for tables and charts)."""
    rows = []
    for source, s in sorted((stats.get("sources") or {}).items()):
        for split, c in (s.get("splits") or {}).items():
            rows.append({"source": source, "split": split, "documents": c.get("documents", 0),
                         "words": c.get("words", 0), "bytes": c.get("bytes", 0), "characters": c.get("characters", 0)})
    return rows


def dropped_rows(stats: dict) -> list[dict]:
    rows = []
    for source, s in sorted((stats.get("sources") or {}).items()):
        inp, kept, dropped = s.get("input") or {}, s.get("kept") or {}, s.get("dropped") or {}
        rows.append({"source": source, "input documents": inp.get("documents"), "kept": kept.get("documents"),
                     "too short": dropped.get("short", 0), "exact duplicates": dropped.get("exact_duplicate", 0),
                     "near duplicates": dropped.get("near_duplicate", 0), "kept words": kept.get("words")})
    return rows


def source_rows(dataset: Dataset) -> list[dict]:
    rows = []
    for s in dataset.sources:
        if s.kind == "local":
            origin = s.path
        elif s.kind == "url":
            origin = s.url
        else:
            origin = f"{s.kind}: {s.package}=={s.version} ({s.file})"
        rows.append({"source": s.id, "title": s.title, "license": s.license, "from": origin,
                     "sha256": s.sha256, "attribution": s.attribution or "–"})
    return rows


DATASHEET_SECTIONS = ("motivation", "composition", "collection", "preprocessing", "uses", "limitations", "maintenance")


def datasheet_sections(dataset: Dataset) -> list[tuple[str, str]]:
    ds = dataset.datasheet
    return [(name.capitalize(), getattr(ds, name)) for name in DATASHEET_SECTIONS]


def processing_summary(dataset: Dataset) -> str:
    p = dataset.processing
    return (f"Unicode {p.normalize}; documents under {p.min_chars} characters dropped; "
            f"split by a seeded hash of the document id (seed {p.split.seed}: validation {p.split.validation:.0%}, "
            f"test {p.split.test:.0%}); deduplication: exact {'on' if p.dedup.exact else 'off'}, near "
            f"{'on' if p.dedup.near else 'off'} (MinHash over {p.dedup.shingle}-word shingles, threshold {p.dedup.threshold}).")


# --- Compare ---------------------------------------------------------------------------------


def _flatten(value, prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    if isinstance(value, dict):
        for k, v in value.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        for k, v in enumerate(value):
            key = v.get("name") or v.get("ref") or v.get("id") or str(k)
            out.update(_flatten(v, f"{prefix}[{key}]"))
    else:
        out[prefix] = ", ".join(map(str, value)) if isinstance(value, list) else str(value)
    return out


def diff_rows(a: dict, b: dict, *, only_changes: bool = True) -> list[dict]:
    """Field-by-field differences of two nested dicts (flattened to dotted keys)."""
    fa, fb = _flatten(a), _flatten(b)
    rows = []
    for key in sorted(set(fa) | set(fb)):
        va, vb = fa.get(key, "–"), fb.get(key, "–")
        if only_changes and va == vb:
            continue
        rows.append({"field": key, "A": va, "B": vb})
    return rows


def recipe_diff(a: Recipe | None, b: Recipe | None) -> list[dict]:
    da = a.model_dump(mode="json", exclude_none=True) if a else {}
    db = b.model_dump(mode="json", exclude_none=True) if b else {}
    for d in (da, db):
        d.pop("schema_version", None)
    return diff_rows(da, db)


def data_diff(a: Release, b: Release) -> list[dict]:
    """Per dataset and split: the digests each release trained on, and whether they are the same."""
    def splits(rel: Release) -> dict[str, str]:
        return {f"{d.ref} {s}": v.sha256 for d in rel.manifest.datasets for s, v in d.splits.items()}

    sa, sb = splits(a), splits(b)
    rows = []
    for key in sorted(set(sa) | set(sb)):
        va, vb = sa.get(key), sb.get(key)
        rows.append({"data": key, "A": (va[:16] + "…") if va else "–", "B": (vb[:16] + "…") if vb else "–",
                     "same": "yes" if va and va == vb else "no"})
    return rows


def environment_diff(a: Release, b: Release) -> list[dict]:
    ea = a.manifest.environment.model_dump() if a.manifest.environment else {}
    eb = b.manifest.environment.model_dump() if b.manifest.environment else {}
    return diff_rows(ea, eb)


def score_diff(a: Sequence[Score], b: Sequence[Score]) -> list[dict]:
    """Scores both releases share (by variant, task, metric, subset), with B − A."""
    ka = {(s.variant, s.task, s.metric, s.subset): s for s in a}
    kb = {(s.variant, s.task, s.metric, s.subset): s for s in b}
    rows = []
    for key in sorted(set(ka) | set(kb), key=lambda k: (k[0] != "full", k)):
        sa, sb = ka.get(key), kb.get(key)
        either = sa or sb
        assert either is not None  # the key came from one of them
        rows.append({"variant": key[0], "task": key[1], "metric": key[2], "subset": key[3],
                     "A": sa.value if sa else None, "B": sb.value if sb else None,
                     "B − A": (sb.value - sa.value) if sa and sb else None,
                     "chance": either.chance})
    return rows


def summary_diff(a: ReleaseSummary, b: ReleaseSummary) -> list[dict]:
    fields = [
        ("status", lambda r: r.status), ("provenance", lambda r: r.provenance), ("license", lambda r: r.license),
        ("recipe", lambda r: r.recipe or "–"), ("datasets", lambda r: ", ".join(r.datasets) or "–"),
        ("parameters", lambda r: human_count(r.parameters)), ("weights", lambda r: human_bytes(r.weights_bytes)),
        ("all artifacts", lambda r: human_bytes(r.total_bytes)), ("variants", lambda r: ", ".join(r.variants) or "–"),
        ("reproducibility", lambda r: r.reproducibility), ("release digest", lambda r: r.digest),
    ]
    return [{"": name, "A": get(a), "B": get(b), "same": "yes" if get(a) == get(b) else "no"} for name, get in fields]
