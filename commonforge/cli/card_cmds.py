"""``card``: a release's model card, rendered from the registry (and its build, where this checkout has it)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from commonforge.cli.command import add_command

DESCRIPTION = """\
Render the model card of a release and print it, or write it to FILE. The card is rendered
from the registry (the release, its recipe and datasets, its provenance and evaluation
records) and, where this checkout holds the release's own build outputs, from them too (the
training logs, quantization scores and, with -o, the loss curve as loss.png beside FILE).
Imported releases and releases without build outputs render as well: the card says what is
unknown. The published card of a release is model_cards/published/<name>/<version>/README.md.
"""


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "card", cmd_card, "print (or write) the model card of a release", DESCRIPTION)
    p.add_argument("ref", metavar="MODEL_REF", help="e.g. model/forge-small@1.0.0 or forge-small")
    p.add_argument("-o", "--output", metavar="FILE", type=Path,
                   help="write the card to FILE (atomically) instead of printing it; images go beside it")
    p.add_argument("--publish", action="store_true",
                   help="render the draft's published card again (model_cards/published/...) and update its "
                   "card record; refused for published releases, whose cards never change")


def cmd_card(args: argparse.Namespace) -> int:
    from commonforge.errors import InputError
    from commonforge.settings import apply
    from pipelines.card import LOSS_IMAGE, render_registered_card
    from registry.fsutil import atomic_write_bytes

    settings = apply()
    if args.publish:
        if args.output is not None:
            raise InputError("--publish writes the published card; it takes no --output")
        from pipelines.card import republish_card

        release, record = republish_card(settings.root, args.ref)
        print(f"published the card of {release.ref} to {record.path} (sha256:{record.sha256})", file=sys.stderr)
        return 0
    out: Path | None = args.output
    if out is not None and out.is_dir():
        raise InputError(f"{out} is a directory", hint=f"name a file, e.g. {out / 'README.md'}")
    card = render_registered_card(settings.root, args.ref, store_dir=settings.store_dir,
                                  image_name=LOSS_IMAGE if out is not None else None)
    if out is None:
        sys.stdout.write(card.markdown)
        return 0
    for name, data in card.images.items():  # images first: the card never links to a missing file
        atomic_write_bytes(out.parent / name, data)
    atomic_write_bytes(out, card.markdown.encode("utf-8"))
    print(f"wrote the card of {card.release.ref} to {out}"
          + "".join(f" and {out.parent / name}" for name in card.images), file=sys.stderr)
    return 0
