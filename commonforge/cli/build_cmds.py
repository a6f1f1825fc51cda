"""``build``, ``release``, ``reproduce``: the pipeline from the terminal."""

from __future__ import annotations

import argparse

from commonforge.cli.output import console, table
from commonforge.errors import VerificationError
from commonforge.settings import apply


def _print_release(result) -> None:
    out = console()
    out.print(("[green]✓[/green] " if result.confirmed else "[green]✓[/green] ") + result.note)
    if result.path is not None:
        out.print(f"  wrote {result.path}")
        out.print("  commit it (with dvc.lock) to publish the draft for review")


def cmd_build(args: argparse.Namespace) -> int:
    from pipelines.reproduce import build

    settings = apply()
    out = console()
    result = build(settings, args.recipe, replace_draft=args.replace_draft, do_release=not args.no_release,
                   announce=out.print)
    if result is not None:
        _print_release(result)
    return 0


def cmd_release(args: argparse.Namespace) -> int:
    from pipelines.release import release

    settings = apply()
    _print_release(release(settings, args.recipe, replace_draft=args.replace_draft, push=not args.no_push))
    return 0


def cmd_reproduce(args: argparse.Namespace) -> int:
    from pipelines.reproduce import reproduce

    settings = apply()
    out = console()
    rep = reproduce(settings, args.ref, keep=args.keep, announce=out.print)
    rec, diff = rep.record, rep.diff
    expected = {a.path: a for a in rep.rebuilt.artifacts}
    from registry import Registry

    release = Registry(settings.root).release(rec.release)
    t = table(f"{rec.release}: release vs rebuild", "artifact", "result", "release sha256", "rebuild sha256")
    for a in release.manifest.artifacts:
        b = expected.get(a.path)
        same = b is not None and b.sha256 == a.sha256
        t.add_row(a.path, "[green]identical[/green]" if same else "[red]different[/red]", a.sha256,
                  b.sha256 if b else "(missing)")
    out.print(t)
    for line in diff.environment:
        out.print(f"[yellow]environment differs:[/yellow] {line}")
    out.print(f"rebuild record: {rep.record_path}")
    if rec.result != "identical":
        raise VerificationError(
            f"the rebuild of {rec.release} differs (release sha256:{rec.release_digest}, rebuild "
            f"sha256:{rec.rebuilt_digest}); first differing stage: {rec.first_differing_stage or 'none (inputs)'}"
            + ("".join(f"\n  {d}" for d in rec.differences[:10])),
            hint="a different pinned environment explains everything downstream of it"
            if diff.environment else "compare the stage's inputs; a difference there is a determinism bug worth reporting",
        )
    out.print(f"[green]✓[/green] {rec.release} rebuilt bit for bit (sha256:{rec.rebuilt_digest}) "
              f"in {rec.wall_seconds:.0f} s")
    return 0


NEXT_STEPS = """\
What to try next (all local; nothing leaves this machine):
  commonforge show {name}                          what it is, where it came from, its digests
  commonforge verify {name}                        re-hash every artifact against the manifest
  commonforge reproduce {name}                     rebuild from the source commit and compare bit for bit
  commonforge eval {name} --limit 20               lm-eval on the pinned benchmarks
  commonforge card {name}                          its model card
  commonforge generate {name} "Four score and seven years ago"
  commonforge chat {name}                          a streaming chat in the terminal
  commonforge serve {name}                         an OpenAI-compatible server on 127.0.0.1
  commonforge explore                              the explorer in your browser
"""


def cmd_demo(args: argparse.Namespace) -> int:
    import os
    import time

    from pipelines.reproduce import build
    from pipelines.stage import read_timings
    from pipelines.workspace import Params

    settings = apply()
    out = console()
    started = time.perf_counter()
    result = build(settings, args.recipe, announce=out.print)
    total = time.perf_counter() - started
    _print_release(result)
    recipe = args.recipe
    timings = read_timings(settings.root, recipe)
    params = Params.load(settings.root)
    for key, item in params.training_data.items():
        if item["recipe"] == recipe:
            timings.update({f"{k}@{item['dataset']}": v for k, v in read_timings(settings.root, item["dataset"]).items()})
    t = table(f"stage times of the last run of each stage (wall, {os.cpu_count()} cores)", "stage", "seconds")
    for stage, seconds in timings.items():
        t.add_row(stage, f"{seconds:.1f}")
    out.print(t)
    out.print(f"demo finished in {total:.0f} s\n")
    out.print(NEXT_STEPS.format(name=recipe))
    return 0
