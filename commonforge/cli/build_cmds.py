"""``build``, ``release``, ``reproduce``, ``demo``: the pipeline from the terminal."""

from __future__ import annotations

import argparse

from commonforge.cli.command import add_command
from commonforge.cli.trust_cmds import key_options, signer_from_args

BUILDER_KEY = ("your key (keyid, prefix or name): sign a build statement tying the release to you, "
               "so that rebuilds by others can be shown independent (any key; see `commonforge keys`)")
REBUILDER_KEY = ("your rebuilder key (keyid, prefix or name): sign the result as a rebuild statement "
                 "(checked against the policy before the rebuild starts)")


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "build", cmd_build, "build a recipe with `dvc repro`, then release it",
                    "Run the DVC pipeline for one recipe (only the data stages it uses), then release it: the "
                    "build manifest and provenance go into registry/entries/models, the artifacts into the store "
                    "and the DVC remote. If the release already exists, this is a rebuild: the digests are "
                    "compared and the store filled; a different result is never written under the same version.")
    p.add_argument("recipe", nargs="?", default="forge-small", help="recipe name in params.yaml (default: forge-small)")
    p.add_argument("--no-release", action="store_true", help="only run the pipeline")
    p.add_argument("--replace-draft", action="store_true",
                   help="replace an existing draft release of this version with this build's")
    key_options(p, key=False, optional_key=BUILDER_KEY)

    p = add_command(sub, "release", cmd_release, "release a recipe that `dvc repro` has built",
                    "Write the release of a built recipe (see `build`). Refused when the tree differs from HEAD "
                    "other than dvc.lock and the release's own records.")
    p.add_argument("recipe", help="recipe name in params.yaml, e.g. forge-small")
    p.add_argument("--replace-draft", action="store_true", help="replace an existing draft of this version")
    p.add_argument("--no-push", action="store_true", help="don't push DVC outputs to the default remote")
    key_options(p, key=False, optional_key=BUILDER_KEY)

    p = add_command(sub, "convert", cmd_convert, "convert a pinned external checkpoint (GGUF) into a release",
                    "Fetch the checkpoint a conversion entry pins (registry/entries/conversions/; the artifact from "
                    "the download cache when it is there, else with its registry's own client, checked against its "
                    "sha256, never installed or run), dequantize it to a float32 Hugging Face model, keep its "
                    "quantized blocks unchanged as the lossless 'gguf' variant, and release it with provenance "
                    "'converted': reproducible, so `commonforge reproduce` re-converts it bit for bit. If the "
                    "release exists, an identical conversion only confirms it and fills the store.")
    p.add_argument("ref", metavar="CONVERSION", help="e.g. conversion/smollm2-135m-instruct@1 or smollm2-135m-instruct")
    p.add_argument("--no-release", action="store_true", help="only convert (into build/conversions/<name>/)")
    p.add_argument("--replace-draft", action="store_true", help="replace an existing draft of this version")
    key_options(p, key=False, optional_key=BUILDER_KEY)

    p = add_command(sub, "reproduce", cmd_reproduce,
                    "rebuild a release from its source commit and compare bit for bit",
                    "Rebuild a release in a clean temporary worktree at its source commit (data from the DVC "
                    "remote or the pinned sources) and compare the build manifest field by field; with --key, sign "
                    "the result as a rebuild statement beside the release. "
                    "Exit 0 only when the rebuild is identical; 1 when it differs (the first differing "
                    "stage and any difference in the pinned environment are shown).")
    p.add_argument("ref", metavar="MODEL_REF", help="e.g. model/forge-small@1.0.0 or forge-small")
    p.add_argument("--keep", action="store_true", help="keep the temporary worktree for inspection")
    key_options(p, key=False, optional_key=REBUILDER_KEY)

    p = add_command(sub, "demo", cmd_demo, "build and release forge-small end to end, then say what to try next",
                    "The quickstart's main job (`make demo`): fetch the pinned public-domain sources, prepare them, "
                    "train the tokenizer and forge-small on the CPU, quantize, evaluate, render its card and "
                    "release it (or, where the release is committed, rebuild it and confirm the digests); then convert a pinned "
                    "GGUF checkpoint (SmolLM2-135M-Instruct) into a second release to chat with. Prints "
                    "the time of every stage and the commands to try next.")
    p.add_argument("recipe", nargs="?", default="forge-small", help="recipe to build (default: forge-small)")
    p.add_argument("--conversion", default=DEMO_CONVERSION, metavar="NAME",
                   help=f"then convert this pinned GGUF checkpoint into a release (default: {DEMO_CONVERSION}, "
                   "a real 135M-parameter instruct model to chat with)")
    p.add_argument("--no-conversion", action="store_true", help="build the recipe only; convert nothing")


def _signer(args: argparse.Namespace):
    return signer_from_args(args) if args.key else None


def _print_release(result) -> None:
    from commonforge.cli.output import console

    out = console()
    out.print("[green]✓[/green] " + result.note)
    if result.path is not None:
        out.print(f"  wrote {result.path}")
        out.print("  commit it (with dvc.lock) to put the draft up for review")
    if result.statement is not None:
        out.print(f"  signed build statement: {result.statement}")


def cmd_build(args: argparse.Namespace) -> int:
    from commonforge.cli.output import console
    from commonforge.settings import apply
    from pipelines.reproduce import build

    settings = apply()
    out = console()
    result = build(settings, args.recipe, replace_draft=args.replace_draft, do_release=not args.no_release,
                   signer=_signer(args), announce=out.print)
    if result is not None:
        _print_release(result)
    return 0


def cmd_release(args: argparse.Namespace) -> int:
    from commonforge.settings import apply
    from pipelines.release import release

    settings = apply()
    _print_release(release(settings, args.recipe, replace_draft=args.replace_draft, push=not args.no_push,
                           signer=_signer(args)))
    return 0


def _conversion_ref(settings, text: str) -> str:
    from registry import Ref, Registry

    ref = Ref.parse(text, default_kind="conversion")
    return str(Registry(settings.root).resolve(ref, "conversion").ref)


def _convert(settings, ref: str, announce: str, *, release: bool = True, **release_args):
    """Convert ``ref`` and (unless ``release`` is False) release it; a dirty tree is refused first,
    before ``announce`` and the conversion's minutes, not after. Returns the release result, or None."""
    from commonforge.cli.output import console
    from pipelines.convert import run_conversion
    from pipelines.release import check_conversion_tree, release_conversion

    if release:
        check_conversion_tree(settings.root)
    console().print(announce, highlight=False)
    run_conversion(settings.root, ref)
    if not release:
        return None
    result = release_conversion(settings, ref, **release_args)
    _print_release(result)
    return result


def cmd_convert(args: argparse.Namespace) -> int:
    from commonforge.settings import apply

    settings = apply()
    ref = _conversion_ref(settings, args.ref)
    _convert(settings, ref, f"converting {ref} (python -m pipelines.convert {ref})", release=not args.no_release,
             replace_draft=args.replace_draft, signer=_signer(args))
    return 0


def cmd_reproduce(args: argparse.Namespace) -> int:
    from commonforge.cli.output import console, table
    from commonforge.errors import VerificationError
    from commonforge.settings import apply
    from pipelines.reproduce import reproduce
    from registry import Registry

    settings = apply()
    out = console()
    rep = reproduce(settings, args.ref, keep=args.keep, signer=_signer(args), announce=out.print)
    rec, diff = rep.record, rep.diff
    expected = {a.path: a for a in rep.rebuilt.artifacts}
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
    if rep.statement is not None:
        out.print(f"signed rebuild statement: {rep.statement.relative_to(settings.root)}")
    else:
        out.print(f"not signed (no --key): to vouch for it, `commonforge attest rebuild {rec.release} "
                  f"--rebuilt-digest {rec.rebuilt_digest} --key K`")
    if rec.result != "identical":
        raise VerificationError(
            f"the rebuild of {rec.release} differs (release sha256:{rec.release_digest}, rebuild "
            f"sha256:{rec.rebuilt_digest}); first differing stage: {rec.first_differing_stage or 'none (inputs)'}"
            + ("".join(f"\n  {d}" for d in rec.differences[:10])),
            hint="a different pinned environment explains everything downstream of it" if diff.environment
            else "compare the stage's inputs; a difference there is a determinism bug worth reporting",
        )
    out.print(f"[green]✓[/green] {rec.release} rebuilt bit for bit (sha256:{rec.rebuilt_digest}) "
              f"in {rec.wall_seconds:.0f} s")
    return 0


DEMO_CONVERSION = "smollm2-135m-instruct"
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
  commonforge status {name}                        who vouched for it, and what publishing still needs
"""


def cmd_demo(args: argparse.Namespace) -> int:
    import os
    import time

    from commonforge.cli.output import console, table
    from commonforge.settings import apply
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
    for item in params.training_data.values():
        if item["recipe"] == recipe:
            data_timings = read_timings(settings.root, item["dataset"])
            timings.update({f"{stage}@{item['dataset']}": v for stage, v in data_timings.items()})
    t = table(f"stage times of the last run of each stage (wall, {os.cpu_count()} cores)", "stage", "seconds")
    for stage, seconds in timings.items():
        t.add_row(stage, f"{seconds:.1f}")
    out.print(t)
    out.print(f"demo finished in {total:.0f} s\n")
    out.print(NEXT_STEPS.format(name=recipe))
    from trust.status import release_status

    assert result is not None  # build() releases unless do_release=False
    status = release_status(settings.root, result.release)
    out.print(f"[bold]{result.release.ref} is a {status.status}[/bold] (governance: `commonforge status`):",
              highlight=False)
    for line in status.explain()[2:]:
        out.print(line, highlight=False, markup=False)
    if status.needs:
        out.print("to be published it still needs: " + "; ".join(status.needs), highlight=False, markup=False)
    if not args.no_conversion:
        _demo_conversion(settings, args.conversion, out)
    return 0


def _demo_conversion(settings, name: str, out) -> None:
    """Convert a pinned checkpoint and release it (or confirm its committed release), then say how to chat."""
    import time

    ref = _conversion_ref(settings, name)
    started = time.perf_counter()
    result = _convert(settings, ref, f"\n[bold]converting {ref}[/bold]: fetch the pinned checkpoint, check its "
                      "digests, dequantize it and keep its own blocks as the lossless variant")
    assert result is not None  # released: _convert returns None only with release=False
    model = result.release.manifest.name
    out.print(f"conversion finished in {time.perf_counter() - started:.0f} s\n"
              f"  commonforge chat {model}                 chat with it (its own chat template)\n"
              f"  commonforge chat {model} --variant gguf  the same model on the checkpoint's own blocks\n"
              f"  commonforge show {model}                 where it came from: the pinned checkpoint, its license",
              highlight=False)
