"""Decode speed of the serving engine, end to end, against transformers' own ``generate``.

    python benchmarks/bench_decode.py                        # GPU: Llama-2-7B shape, random weights
    python benchmarks/bench_decode.py --impls ours-int4,hf-fp16 --batch 1
    python benchmarks/bench_decode.py --cpu forge-tiny       # CPU: a registered release, every variant

GPU mode (needs CUDA): a Llama-2-7B-shaped model (32 layers, hidden 4096, MLP 11008, 32 heads,
vocabulary 32000) built from a config in code with seeded random fp16 weights; nothing is
downloaded. Implementations, each measured at every ``--batch`` size in the same run:

* ``hf-fp16``: ``model.generate`` (greedy, its default dynamic cache), the baseline of every ratio;
* ``ours-fp16``: :class:`serving.engine.Engine` on the same weights (slot KV cache, decode
  steps replayed as CUDA graphs, one per batch size and attention bucket);
* ``ours-int8``, ``ours-int4``: the engine after ``kernels.quantize_model`` (RTN; int8 per output
  channel, int4 group size 128), i.e. our Triton weight-only kernels behind ``QuantLinear``.

Decode tokens/s = batch x (new_tokens - 1) / (time to generate new_tokens - time to generate
1 token), so prompt processing is excluded the same way for both. Every request is greedy and
generates exactly ``--new-tokens`` (EOS ignored); a warm-up run before each measurement
captures the CUDA graphs and tunes the kernels. The engine's text decoding is switched off (a
stub tokenizer): only the model and the scheduler are timed. Rows go to
``benchmarks/results/decode.csv`` with device, torch/transformers versions and git commit; the
script ends with the target line from docs/architecture.md (batch-1 int4 >= 3x hf-fp16).

CPU mode (``--cpu REF``): decode tokens/s of a registered release on this machine's CPU, for
the full-precision model and each quantized variant, at each ``--batch``, with transformers'
``generate`` on the full model as the reference. Run it inside a checkout whose store holds the
release (``commonforge build forge-tiny`` first).
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks import resultlog  # noqa: E402  (the repository is on sys.path from here)

DEFAULT_CSV = REPO / "benchmarks" / "results" / "decode.csv"
IMPLS = ("hf-fp16", "ours-fp16", "ours-int8", "ours-int4")
LLAMA2_7B = dict(vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                 num_attention_heads=32, num_key_value_heads=32, max_position_embeddings=4096,
                 rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=False)
TARGET_INT4_BATCH1 = 3.0  # x hf-fp16 tokens/s (docs/architecture.md)
CSV_FIELDS = ["timestamp", "git_commit", "device", "torch", "transformers", "mode", "model", "impl", "batch",
              "prompt_tokens", "new_tokens", "tokens_per_s", "ms_per_step", "speedup_vs_hf", "note"]


def _ints(text: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of integers") from None
    if not values or any(v <= 0 for v in values):
        raise argparse.ArgumentTypeError("batch sizes must be positive")
    return values


def _impls(text: str) -> list[str]:
    values = [x for x in text.split(",") if x]
    bad = [v for v in values if v not in IMPLS]
    if bad or not values:
        raise argparse.ArgumentTypeError(f"unknown implementations {bad}; choose from {', '.join(IMPLS)}")
    return values


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cpu", metavar="REF", default=None, help="CPU mode: time this registered release per variant")
    p.add_argument("--batch", type=_ints, default=None, help="batch sizes (default 1,16 on GPU, 1,4 on CPU)")
    p.add_argument("--impls", type=_impls, default=list(IMPLS), help=f"GPU mode: any of {', '.join(IMPLS)}")
    p.add_argument("--prompt-tokens", type=int, default=128, help="prompt length (GPU mode; default 128)")
    p.add_argument("--new-tokens", type=int, default=None, help="tokens generated per request (default 256; CPU 128)")
    p.add_argument("--repeats", type=int, default=3, help="timed runs per point (median)")
    p.add_argument("--no-cuda-graphs", action="store_true", help="run the engine's decode steps eagerly")
    p.add_argument("--threads", type=int, default=None, help="CPU mode: torch threads (default: torch's choice)")
    p.add_argument("--csv", type=Path, default=DEFAULT_CSV)
    args = p.parse_args(argv)
    if args.batch is None:
        args.batch = [1, 4] if args.cpu else [1, 16]
    if args.new_tokens is None:
        args.new_tokens = 128 if args.cpu else 256
    if args.new_tokens < 2 or args.prompt_tokens < 1 or args.repeats < 1:
        p.error("--new-tokens must be >= 2, --prompt-tokens and --repeats >= 1")
    return args


# --- environment and CSV ----------------------------------------------------------------------


def environment(device) -> dict:
    import torch
    import transformers

    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = f"{platform.machine()} cpu, {torch.get_num_threads()} threads"
    return {"timestamp": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "git_commit": resultlog.git_commit(), "device": name, "torch": torch.__version__,
            "transformers": transformers.__version__}


def append_rows(path: Path, rows: list[dict]) -> None:
    resultlog.append_rows(path, CSV_FIELDS, rows)


def median(xs: list[float]) -> float:
    s = sorted(xs)
    return s[len(s) // 2]


def decode_rate(batch: int, new_tokens: int, t_full: float, t_one: float) -> float:
    """Tokens/s of the decode steps alone: the run minus a one-token run (prefill + first token)."""
    return batch * (new_tokens - 1) / max(t_full - t_one, 1e-9)


# --- timing ---------------------------------------------------------------------------------


class _NoText:
    """A tokenizer stand-in: the engine's text decoding is not what is measured."""

    eos_token_id = None
    bos_token_id = None

    def decode(self, ids, **kwargs) -> str:
        return ""


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_engine(engine, prompts: list[list[int]], new_tokens: int, repeats: int) -> float:
    """Decode tokens/s of the engine with len(prompts) requests submitted together."""
    import threading

    from serving.sampling import SamplingParams

    def run(n: int) -> float:
        params = SamplingParams(max_tokens=n, temperature=0, ignore_eos=True)
        events = [threading.Event() for _ in prompts]
        _sync(engine.device)
        start = time.perf_counter()
        for p, ev in zip(prompts, events):
            engine.submit(p, params, lambda out, ev=ev: out.finished and ev.set())
        for ev in events:
            ev.wait()
        _sync(engine.device)
        return time.perf_counter() - start

    run(new_tokens)  # warm-up: CUDA graphs, kernel tuning
    full = median([run(new_tokens) for _ in range(repeats)])
    one = median([run(1) for _ in range(repeats)])
    return decode_rate(len(prompts), new_tokens, full, one)


def time_hf_generate(model, prompts: list[list[int]], new_tokens: int, repeats: int) -> float:
    import torch

    device = next(model.parameters()).device
    ids = torch.tensor(prompts, device=device)  # same length prompts: no padding needed
    mask = torch.ones_like(ids)

    def run(n: int) -> float:
        _sync(device)
        start = time.perf_counter()
        with torch.inference_mode():
            model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=n, min_new_tokens=n,
                           do_sample=False, pad_token_id=0)
        _sync(device)
        return time.perf_counter() - start

    run(new_tokens)
    full = median([run(new_tokens) for _ in range(repeats)])
    one = median([run(1) for _ in range(repeats)])
    return decode_rate(len(prompts), new_tokens, full, one)


def _row(env, mode, model, impl, batch, prompt_tokens, new_tokens, tps, base, note="") -> dict:
    return {**env, "mode": mode, "model": model, "impl": impl, "batch": batch, "prompt_tokens": prompt_tokens,
            "new_tokens": new_tokens, "tokens_per_s": f"{tps:.1f}", "ms_per_step": f"{1000 * batch / tps:.3f}",
            "speedup_vs_hf": f"{tps / base:.2f}" if base else "", "note": note}


def _print(row: dict) -> None:
    print(f"{row['model']:>24} {row['impl']:>12} batch {row['batch']:>3}: {row['tokens_per_s']:>9} tokens/s "
          f"({row['ms_per_step']} ms/step){'  x' + row['speedup_vs_hf'] + ' vs hf' if row['speedup_vs_hf'] else ''}",
          flush=True)


# --- GPU mode -------------------------------------------------------------------------------


def build_llama(device, seed: int = 0):
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(seed)
    cfg = AutoConfig.for_model("llama", **LLAMA2_7B)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float16)
    return model.eval()


def gpu_mode(args) -> int:
    import torch

    from serving.engine import Engine
    from serving.loader import LoadedModel

    if not torch.cuda.is_available():
        print("bench_decode: GPU mode needs a CUDA GPU (use --cpu REF on this machine)", file=sys.stderr)
        return 2
    device = torch.device("cuda")
    env = environment(device)
    gen = torch.Generator().manual_seed(0)
    rows, rates = [], {}
    max_len = args.prompt_tokens + args.new_tokens + 64
    for impl in args.impls:
        model = build_llama(device)
        if impl in ("ours-int8", "ours-int4"):
            from kernels import quantize_model

            quantize_model(model, "int8" if impl == "ours-int8" else "int4-g128")
        for batch in args.batch:
            prompts = torch.randint(3, LLAMA2_7B["vocab_size"], (batch, args.prompt_tokens), generator=gen).tolist()
            if impl == "hf-fp16":
                tps = time_hf_generate(model, prompts, args.new_tokens, args.repeats)
            else:
                loaded = LoadedModel(release=None, variant=impl, model=model, tokenizer=_NoText(), device=device,
                                     dtype=torch.float16)
                engine = Engine(loaded, max_batch=batch, max_queue=batch, max_len=max_len,
                                cuda_graphs=not args.no_cuda_graphs).start()
                try:
                    tps = time_engine(engine, prompts, args.new_tokens, args.repeats)
                finally:
                    engine.stop()
                    del engine
            rates[(impl, batch)] = tps
            base = rates.get(("hf-fp16", batch))
            row = _row(env, "gpu", "llama2-7b-shape", impl, batch, args.prompt_tokens, args.new_tokens, tps, base,
                       "cuda graphs" if impl != "hf-fp16" and not args.no_cuda_graphs else "")
            rows.append(row)
            _print(row)
        del model
        torch.cuda.empty_cache()
    append_rows(args.csv, rows)
    print(f"appended {len(rows)} rows to {args.csv}")
    if ("ours-int4", 1) in rates and ("hf-fp16", 1) in rates:
        ratio = rates[("ours-int4", 1)] / rates[("hf-fp16", 1)]
        verdict = "PASS" if ratio >= TARGET_INT4_BATCH1 else "FAIL"
        print(f"{verdict}: batch-1 int4 decode is {ratio:.2f}x transformers fp16 generate "
              f"(target >= {TARGET_INT4_BATCH1}x) on {env['device']}")
    return 0


# --- CPU mode -------------------------------------------------------------------------------

CPU_TEXT = ("It was the best of times, it was the worst of times, it was the age of wisdom, it was the age "
            "of foolishness, it was the epoch of belief")


def cpu_mode(args) -> int:
    from commonforge import settings as forge_settings

    settings = forge_settings.apply()
    import torch

    from serving.engine import Engine
    from serving.loader import FULL, load_release

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cpu")
    env = environment(device)
    first = load_release(args.cpu, device="cpu", settings=settings)
    release = first.release
    assert release is not None  # load_release always loads a registered release
    prompt = first.tokenizer(CPU_TEXT)["input_ids"]
    new_tokens = min(args.new_tokens, first.context_length - len(prompt))
    rows = []
    base = {}
    for batch in args.batch:
        base[batch] = time_hf_generate(first.model, [prompt] * batch, new_tokens, args.repeats)
        row = _row(env, "cpu", release.ref, "hf-generate", batch, len(prompt), new_tokens, base[batch], None,
                   "full")
        rows.append(row)
        _print(row)
    for variant in [FULL, *release.manifest.variants()]:
        loaded = first if variant == FULL else load_release(release, variant=variant, device="cpu", settings=settings)
        for batch in args.batch:
            engine = Engine(loaded, max_batch=batch, max_queue=batch).start()
            try:
                tps = time_engine(engine, [prompt] * batch, new_tokens, args.repeats)
            finally:
                engine.stop()
            row = _row(env, "cpu", release.ref, f"ours-{variant}", batch, len(prompt), new_tokens, tps, base[batch],
                       variant)
            rows.append(row)
            _print(row)
    append_rows(args.csv, rows)
    print(f"appended {len(rows)} rows to {args.csv} ({os.cpu_count()} cores)")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return cpu_mode(args) if args.cpu else gpu_mode(args)


if __name__ == "__main__":
    sys.exit(main())
