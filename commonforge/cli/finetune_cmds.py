"""``finetune``: adapt a release to your own data with LoRA, privately, into your own registry.

Wiring only (the logic is in :mod:`pipelines.finetune`, imported when the command runs).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from commonforge.cli.command import add_command


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = add_command(
        sub, "finetune", cmd_finetune, "fine-tune a release on your own data (LoRA, private, on this machine)",
        "Train a LoRA adapter (peft) for BASE, any release, on --data FILE: chat JSON lines "
        '({"messages": [{"role": "user", ...}, {"role": "assistant", ...}]}, rendered with the base\'s own chat '
        "template, the loss on the assistant turns only) or plain text lines. The base is verified through the "
        "loader and trained in full precision; every --heldout-every-th example is held out, and its bits per "
        "byte are reported on the base and on the fine-tune. Or align it to your own values with --preferences "
        "FILE: pairs of a chosen and a rejected answer, trained with DPO (trl); the margin log p(chosen) - log "
        "p(rejected) is reported before and after. The same base, data and settings give the same adapter "
        "bytes.\n\n"
        "The result is a private release (provenance finetuned) in your own registry: the data stays where it "
        "is (only its sha256 and file name are recorded), and the release is never offered to peers, pushed, "
        "logged or committed. Use it like any release: commonforge chat NAME, generate, serve, eval.")
    p.add_argument("base", metavar="BASE", help="the release to adapt, e.g. forge-small or model/forge-tiny@1.0.0")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--data", type=Path, metavar="FILE", help="chat JSON lines or plain text lines (supervised)")
    what.add_argument("--preferences", type=Path, metavar="FILE",
                      help='preference pairs, JSON lines {"prompt": ..., "chosen": ..., "rejected": ...}: trained '
                      "with DPO (trl), the base itself as the reference model")
    p.add_argument("--method", default="lora", choices=["lora"], help="lora (full fine-tuning is not built yet)")
    p.add_argument("--beta", type=float, default=0.1, help="DPO's beta: how far from the base it may move (0.1)")
    p.add_argument("--name", default=None, help="the fine-tune's name (default: BASE-<data file name>)")
    p.add_argument("--version", default="1.0.0", help="its version (default 1.0.0)")
    p.add_argument("--rank", type=int, default=8, help="LoRA rank (default 8)")
    p.add_argument("--alpha", type=int, default=16, help="LoRA alpha; the adapter is scaled by alpha/rank (default 16)")
    p.add_argument("--targets", default="q_proj,v_proj",
                   help="comma-separated module names to adapt (default q_proj,v_proj)")
    p.add_argument("--steps", type=int, default=30, help="optimizer steps (default 30)")
    p.add_argument("--learning-rate", type=float, default=1e-3, help="AdamW learning rate (default 1e-3)")
    p.add_argument("--batch-size", type=int, default=4, help="examples per step (default 4)")
    p.add_argument("--seq-len", type=int, default=256, help="longer examples are cut, and counted (default 256)")
    p.add_argument("--seed", type=int, default=1234, help="seed of the adapter's initialisation and data order")
    p.add_argument("--threads", type=int, default=2, help="CPU threads, pinned like a build's (default 2)")
    p.add_argument("--heldout-every", type=int, default=5, help="hold out every Nth example (default 5)")
    p.add_argument("--time-budget", type=int, default=900, help="stop with an error past this many seconds")
    p.add_argument("--allow-revoked", action="store_true", help="fine-tune a revoked base anyway")


def cmd_finetune(args: argparse.Namespace) -> int:
    from commonforge.errors import InputError
    from commonforge.settings import apply

    settings = apply()
    from pydantic import ValidationError

    from pipelines.finetune import finetune
    from registry.schema import LoraSettings

    try:
        lora = LoraSettings(rank=args.rank, alpha=args.alpha, steps=args.steps, learning_rate=args.learning_rate,
                            target_modules=[t.strip() for t in args.targets.split(",") if t.strip()],
                            batch_size=args.batch_size, seq_len=args.seq_len, seed=args.seed, threads=args.threads,
                            heldout_every=args.heldout_every, time_budget_s=args.time_budget,
                            beta=args.beta)
    except ValidationError as err:
        first = err.errors()[0]
        raise InputError(f"bad setting {'.'.join(str(x) for x in first['loc'])}: {first['msg']}",
                         hint="see commonforge finetune --help") from None
    data = args.data if args.data is not None else args.preferences
    result = finetune(settings, args.base, data, name=args.name, version=args.version, settings=lora,
                      allow_revoked=args.allow_revoked, preferences=args.preferences is not None)
    r, rec = result.release, result.record
    print(f"fine-tuned {r.manifest.base_model} -> {r.ref} (private, in {result.root})")
    print(f"  release digest {r.release_digest}")
    print(f"  {rec['train_examples']} training examples, {rec['steps']} steps in {rec['seconds']:.1f} s; "
          f"loss {rec['loss_first']:.3f} -> {rec['loss_last']:.3f}")
    if rec.get("truncated_examples"):
        print(f"  {rec['truncated_examples']} example(s) were cut to --seq-len {args.seq_len}")
    if rec.get("preference_margin_base") is not None:
        print(f"  log p(chosen) - log p(rejected), mean over the {rec['margin_split']} pairs: "
              f"base {rec['preference_margin_base']:.3f} -> fine-tune {rec['preference_margin_finetuned']:.3f}")
    elif rec.get("heldout_bpb_base") is not None:
        print(f"  held-out ({rec['heldout_examples']} examples) bits per byte: base {rec['heldout_bpb_base']:.4f} "
              f"-> fine-tune {rec['heldout_bpb_finetuned']:.4f}")
    else:
        print("  no held-out split (too few examples for --heldout-every)")
    print(f"try it: commonforge chat {r.name}")
    return 0
