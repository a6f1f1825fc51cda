"""``export``: a release out of the forge, as a plain Hugging Face directory (and a GGUF, a signature).

Wiring only (the logic is in :mod:`serving.export`, imported when the command runs so that
building the parser stays fast).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from commonforge.cli.command import add_command


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "export", cmd_export, "write a release as a plain Hugging Face directory (GGUF, signed)",
                    "Write a verified release to DIR as a Hugging Face model directory that transformers' "
                    "from_pretrained, lm-eval's hf model and vLLM load as they are: config.json, the safetensors "
                    "weights, the tokenizer and chat template, each re-hashed against the release's manifest while "
                    "it is copied, and the model card as README.md. --gguf adds DIR/NAME.gguf for llama.cpp (full "
                    "precision); --sign KEY adds DIR/model.sig, an OpenSSF Model Signing signature (key method, "
                    "ECDSA P-256), which recipients check with `model_signing verify key DIR --signature "
                    "DIR/model.sig --public_key KEY.pub`. Such a signature is for recipients: it never counts "
                    "toward the forge's policy. Nothing is written unless every file verifies; DIR must be new "
                    "or empty unless --force.")
    p.add_argument("ref", metavar="MODEL_REF", help="e.g. model/forge-small@1.0.0 or forge-small")
    p.add_argument("dir", metavar="DIR", type=Path, help="the directory to write (created)")
    p.add_argument("--variant", default=None, help="a quantized variant (e.g. int4-g128); default: full precision")
    p.add_argument("--force", action="store_true", help="replace DIR if it exists and is not empty")
    p.add_argument("--allow-revoked", action="store_true",
                   help="export a revoked release anyway (refused otherwise; a warning says so)")
    p.add_argument("--gguf", action="store_true", help="also write DIR/NAME.gguf for llama.cpp (full precision only)")
    p.add_argument("--gguf-dtype", default="f32", choices=["f32", "f16"], help="GGUF weight type (default f32)")
    p.add_argument("--sign", default=None, metavar="KEY",
                   help="sign DIR with this ECDSA P-256 key (keyid, prefix or name) into DIR/model.sig")
    p.add_argument("--passphrase-file", type=Path, metavar="FILE", help="the key's passphrase (first line of FILE)")
    p.add_argument("--keys-dir", type=Path, default=None, help="where the key lives (default $COMMONFORGE_KEYS or "
                   "~/.config/commonforge/keys)")


def cmd_export(args: argparse.Namespace) -> int:
    from commonforge.settings import apply

    settings = apply()
    from serving.export import export_release
    from trust.keys import read_passphrase

    result = export_release(args.ref, args.dir, variant=args.variant, settings=settings,
                            allow_revoked=args.allow_revoked, force=args.force, gguf=args.gguf,
                            gguf_dtype=args.gguf_dtype, sign=args.sign, keys_dir=args.keys_dir,
                            passphrase=read_passphrase(args.passphrase_file))
    print(f"exported {result.ref} ({result.variant}, {result.status}) to {result.directory}: "
          f"{len(result.files)} files verified against the manifest")
    print(f"  model card: {result.card or 'none (README.md says so)'}")
    if result.gguf is not None:
        print(f"  GGUF: {result.gguf}")
    if result.signature is not None:
        print(f"  signed with key {result.signed_by}: {result.signature} (OpenSSF Model Signing; "
              "not read by the forge's trust)")
    return 0
