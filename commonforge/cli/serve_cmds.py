"""``serve``, ``chat``, ``generate``, ``import``: using a release from the terminal.

Wiring only (the logic is in :mod:`serving`). The server's limits default to
:mod:`serving.api`'s, looked up when ``serve`` runs: importing the server (FastAPI) to build
the parser would slow every ``commonforge`` run, ``--help`` included.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time

from commonforge.cli.command import add_command
from commonforge.settings import API_KEY_ENV


def _model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("ref", metavar="MODEL_REF", help="e.g. model/forge-small@1.0.0 or forge-small")
    p.add_argument("--variant", default=None, help="a quantized variant (e.g. int4-g128); default: full precision")
    p.add_argument("--device", default="auto", help="auto (CUDA if present), cpu, cuda, cuda:1 ...")
    p.add_argument("--dtype", default=None, choices=["float32", "float16", "bfloat16"],
                   help="activation dtype (default: float32 on CPU, float16 on GPU)")
    p.add_argument("--allow-revoked", action="store_true",
                   help="use a revoked release anyway (refused otherwise; a warning says so)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: torch's choice; 1 is often fastest for small models "
                        "on a busy machine)")


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "serve", cmd_serve, "serve a release with an OpenAI-compatible API (127.0.0.1 by default)",
                    "Serve a verified release over HTTP: /v1/models, /v1/completions, /v1/chat/completions "
                    "(streaming with server-sent events) and /health. Binds 127.0.0.1 unless --host says otherwise, "
                    "and then only with an API key (--api-key or $" + API_KEY_ENV + "). Prints the address once it "
                    "accepts connections; Ctrl-C stops it.")
    _model_args(p)
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 picks a free one)")
    p.add_argument("--api-key", default=None, help=f"require 'Authorization: Bearer KEY' (default ${API_KEY_ENV})")
    p.add_argument("--max-batch", type=int, default=8, help="requests decoded together (KV cache slots; default 8)")
    p.add_argument("--max-queue", type=int, default=32, help="requests waiting for a slot before 429 (default 32)")
    p.add_argument("--timeout", type=float, default=None, help="seconds a request may take, queueing included")
    p.add_argument("--max-body", type=int, default=None, help="largest request body in bytes (default 4 MiB)")
    p.add_argument("--log-level", default="warning", choices=["critical", "error", "warning", "info", "debug"])

    p = add_command(sub, "chat", cmd_chat, "chat with a release in the terminal (streaming; /reset, /quit)",
                    "A terminal chat through the release's chat template, streamed as it is generated. /reset starts "
                    "a new conversation, /quit (or Ctrl-D) leaves.")
    _model_args(p)
    p.add_argument("--system", default=None, help="a system message to start every conversation with")
    p.add_argument("--max-tokens", type=int, default=256, help="longest reply in tokens (default 256)")
    p.add_argument("--temperature", type=float, default=0.7)
    p.add_argument("--top-p", type=float, default=0.95)
    p.add_argument("--seed", type=int, default=None)

    p = add_command(sub, "generate", cmd_generate, "answer one prompt, or continue it with --raw (streamed to stdout)",
                    "Generate from one prompt, streamed to stdout.\n\n"
                    "By default the prompt is one user message through the release's chat template, and the reply\n"
                    "stops at the end of the model's turn: what `chat` and the server's /v1/chat/completions give.\n"
                    "Only the reply is printed.\n\n"
                    "--raw continues the prompt as plain text instead (BOS first), as /v1/completions does, and\n"
                    "prints the prompt before its continuation. A release without a chat template is always\n"
                    "continued raw; a note on stderr says so.")
    _model_args(p)
    p.add_argument("prompt", help="a question or instruction (with --raw: the text to continue)")
    p.add_argument("--raw", action="store_true",
                   help="no chat template: continue the prompt as plain text, stopping only at end-of-text")
    p.add_argument("--max-tokens", type=int, default=64, help="tokens to generate (default 64)")
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--top-k", type=int, default=0)
    p.add_argument("--seed", type=int, default=None, help="makes sampling repeatable")

    p = add_command(sub, "import", cmd_import, "register an existing Hugging Face model directory as a release",
                    "Import a model the forge did not build: a directory with config.json, *.safetensors, "
                    "tokenizer.json (tokenizer_config.json, generation_config.json ...). The files go into the store "
                    "unchanged; the release (provenance 'imported', no recipe) and its provenance record into "
                    "registry/entries/models/NAME/. Pickle weights, custom code, symlinks out of the directory, "
                    "inconsistent shards and missing tokenizers are refused, changing nothing.")
    p.add_argument("path", metavar="PATH", help="the model directory")
    p.add_argument("--name", required=True, help="release name, e.g. my-llama")
    p.add_argument("--license", required=True, help="SPDX expression of the model's licence, e.g. Apache-2.0")
    p.add_argument("--version", default="1.0.0", help="release version (default 1.0.0)")
    p.add_argument("--base-model", default=None, help="the registered release this one derives from")


# --- commands -------------------------------------------------------------------------------


def _load(args, settings):
    import torch

    from serving.loader import load_release

    if args.threads is not None:
        if args.threads < 1:
            from commonforge.errors import InputError

            raise InputError("--threads must be at least 1")
        torch.set_num_threads(args.threads)
    loaded = load_release(args.ref, variant=args.variant, device=args.device, dtype=args.dtype, settings=settings,
                          allow_revoked=args.allow_revoked)
    status = loaded.status
    print(f"{loaded.ref}: {status.status.upper() if status.status == 'revoked' else status.status} "
          f"(policy {status.policy.version if status.policy else 0}; `commonforge status {loaded.ref}` explains)",
          file=sys.stderr, flush=True)
    return loaded


def cmd_serve(args: argparse.Namespace) -> int:
    from commonforge.settings import api_key as configured_api_key
    from commonforge.settings import apply

    settings = apply()
    from serving.api import DEFAULT_MAX_BODY, DEFAULT_TIMEOUT, Served, check_binding, serve
    from serving.engine import Engine

    api_key = args.api_key or configured_api_key()
    check_binding(args.host, api_key)  # before the (slow) load
    loaded = _load(args, settings)
    timeout = DEFAULT_TIMEOUT if args.timeout is None else args.timeout
    engine = Engine(loaded, max_batch=args.max_batch, max_queue=args.max_queue, request_timeout=timeout)
    model_id = Served.of(engine).id

    def started(host: str, port: int) -> None:
        print(f"serving {loaded.ref} ({loaded.variant}, {loaded.device}) as '{model_id}' at "
              f"http://{host}:{port}/v1", flush=True)

    # uvicorn shuts down gracefully on SIGTERM, then raises the signal again: end with status 0 then
    # (so exit handlers run) instead of dying by the default action.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    max_body = DEFAULT_MAX_BODY if args.max_body is None else args.max_body
    serve(engine, host=args.host, port=args.port, api_key=api_key, max_body_bytes=max_body,
          on_started=started, log_level=args.log_level)
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    from commonforge.settings import apply

    settings = apply()
    from commonforge.errors import ForgeError, InputError
    from serving.engine import Engine
    from serving.text import chat_prompt_ids, chat_stop_ids, has_chat_template

    loaded = _load(args, settings)
    tok = loaded.tokenizer
    chat = not args.raw and has_chat_template(tok)
    if not args.raw and not chat:
        print(f"{loaded.ref} has no chat template: continuing the prompt as plain text (as --raw does)",
              file=sys.stderr, flush=True)
    engine = Engine(loaded, max_batch=1, max_queue=1).start()
    try:
        if chat:
            # one user message, as /v1/chat/completions renders it, ending where the reply starts
            from jinja2 import TemplateError

            try:
                ids = chat_prompt_ids(tok, [{"role": "user", "content": args.prompt}])
            except TemplateError as err:  # the release's template refused the prompt
                raise InputError(f"the chat template of {loaded.ref} refused the prompt: {err}",
                                 hint="--raw continues the prompt as plain text instead") from None
            params = _params(args, max_tokens=args.max_tokens, stop_token_ids=chat_stop_ids(tok))
        else:
            ids = engine.encode(args.prompt)  # BOS first, as the server and the explorer do
            params = _params(args, max_tokens=args.max_tokens)
            sys.stdout.write(args.prompt)
        started = time.perf_counter()
        last = None
        for out in engine.stream(ids, params):
            sys.stdout.write(out.text)
            sys.stdout.flush()
            last = out
        seconds = time.perf_counter() - started
        sys.stdout.write("\n")
        if last is not None and last.error:
            raise ForgeError(f"generating from {loaded.ref} failed: {last.error}",
                             hint=f"`commonforge verify {args.ref}` re-hashes the release's files; "
                             "`commonforge -v generate ...` logs more")
        n = last.completion_tokens if last else 0
        finish = last.finish_reason if last else "-"
        if chat and finish == "stop":
            finish = "end of turn"
        how = "through the chat template" if chat else "raw"
        print(f"[{n} tokens in {seconds:.2f} s, {n / max(seconds, 1e-9):.1f} tokens/s; prompt {len(ids)} tokens "
              f"({how}); finish: {finish}]", file=sys.stderr)
    finally:
        engine.stop()
    return 0


def _params(args, *, max_tokens: int, stop_token_ids: tuple[int, ...] = ()):
    from commonforge.errors import InputError
    from serving.sampling import SamplingParams

    try:
        return SamplingParams(max_tokens=max_tokens, temperature=args.temperature, top_p=args.top_p,
                              top_k=getattr(args, "top_k", 0), seed=args.seed, stop_token_ids=stop_token_ids)
    except ValueError as err:
        raise InputError(str(err)) from None


def cmd_chat(args: argparse.Namespace) -> int:
    from commonforge.settings import apply

    settings = apply()
    from commonforge.errors import InputError
    from serving.engine import Engine
    from serving.text import chat_prompt_ids, chat_stop_ids, has_chat_template

    loaded = _load(args, settings)
    tok = loaded.tokenizer
    if not has_chat_template(tok):
        raise InputError(f"{loaded.ref} has no chat template", hint="use `commonforge generate` instead")
    engine = Engine(loaded, max_batch=1, max_queue=1).start()
    stops = chat_stop_ids(tok)
    start = [{"role": "system", "content": args.system}] if args.system else []
    history = list(start)
    print(f"chatting with {loaded.ref} ({loaded.variant}); /reset starts over, /quit leaves", flush=True)
    try:
        while True:
            try:
                line = input("you> ")
            except EOFError:
                print()
                return 0
            if line.strip() in ("/quit", "/exit"):
                return 0
            if line.strip() == "/reset":
                history = list(start)
                print("(new conversation)")
                continue
            if not line.strip():
                continue
            history.append({"role": "user", "content": line})
            ids = chat_prompt_ids(tok, history)
            # forget the oldest turns until the conversation leaves room for a reply
            while len(ids) + 16 > engine.context_length and len(history) > len(start) + 1:
                del history[len(start):len(start) + 2]
                ids = chat_prompt_ids(tok, history)
            room = engine.context_length - len(ids)
            if room <= 0:
                print("(that message is longer than the model's context; /reset or write less)")
                history.pop()
                continue
            params = _params(args, max_tokens=min(args.max_tokens, room), stop_token_ids=stops)
            sys.stdout.write("model> ")
            reply = []
            try:
                for out in engine.stream(ids, params):
                    sys.stdout.write(out.text)
                    sys.stdout.flush()
                    reply.append(out.text)
            except KeyboardInterrupt:
                sys.stdout.write(" [interrupted]")
            sys.stdout.write("\n")
            history.append({"role": "assistant", "content": "".join(reply)})
    finally:
        engine.stop()


def cmd_import(args: argparse.Namespace) -> int:
    from pathlib import Path

    from commonforge.settings import apply

    settings = apply()
    from commonforge.cli.output import console, human_bytes
    from serving.importer import import_model

    result = import_model(settings, Path(args.path), name=args.name, license=args.license, version=args.version,
                          base_model=args.base_model)
    out = console()
    rel = result.release
    size = sum(a.size for a in rel.manifest.artifacts)
    if result.entry is None:
        out.print(f"[green]✓[/green] {rel.ref} already exists with the same digest; the store holds its files")
    else:
        out.print(f"[green]✓[/green] imported {rel.ref} (provenance: imported, licence {rel.manifest.license})")
        out.print(f"  release digest sha256:{rel.release_digest}")
        out.print(f"  {len(rel.manifest.artifacts)} files, {human_bytes(size)}, into the store")
        out.print(f"  wrote {result.entry}")
        out.print(f"  wrote {result.provenance}")
        out.print("  commit them to share the release")
    return 0
