"""CPU decode: our engine (float32, bf16, int8, int4, the lossless GGUF variant) against transformers'
``generate`` and llama.cpp, one run, same machine, same prompts (issue 15).

    python benchmarks/bench_cpu_decode.py --quick --tokens 16          # SmolLM2 only, 2 threads, batch 1
    python benchmarks/bench_cpu_decode.py --llama-python /tmp/cf/benchenv/bin/python   # the full matrix
    python benchmarks/bench_cpu_decode.py --models smollm2,llama1b --threads 1,2 --batch 1,16

Models: ``smollm2`` (the forge's conversion of SmolLM2-135M-Instruct, read from
``build/conversions/smollm2-135m-instruct/`` and verified against its prospective manifest, or
``--release REF`` for a registered release; llama.cpp reads the conversion's own Q4_1 GGUF) and
``llama1b`` (a Llama-3.2-1B-shaped Llama with vocabulary 32000 and seeded random weights, written
once as a Q4_1 GGUF under ``--work``; every engine runs that file's weights: ours through
transformers' dequantization and the GGUF's own blocks, exactly as a conversion would).

Each configuration runs in a fresh subprocess, so the thread setting is isolated and the peak
resident set (``VmHWM`` of /proc/self/status: the high-water mark of this process's own memory
map, which exec starts afresh; ``ru_maxrss`` would carry the parent's peak over) is that
configuration's own. Per configuration:

* prefill tokens/s: batch x prompt tokens / time of a one-token run (prefill + first token);
* decode tokens/s: batch x (N - 1) / (time of an N-token run - time of a one-token run), the
  definition of ``bench_decode.py`` (its helpers are reused);
* perplexity: exp(mean NLL) over the same token ids of a fixed public-domain text (the SmolLM2
  tokenizer's ids, passed as ids to llama.cpp too), one forward pass of at most 512 tokens.

llama.cpp runs under ``--llama-python`` (an interpreter with ``llama-cpp-python``, built in the
benchmark's own environment, never in the project's lock; default ``$LLAMA_CPP_PYTHON``, else its
rows are skipped with a note). llama-cpp-python's high-level API has no batched generation, so
llama.cpp batch 16 is recorded as not measured. Rows go to ``benchmarks/results/cpu_decode.csv``
with the CPU model and the git commit.
"""

from __future__ import annotations

import argparse
import datetime
import inspect
import json
import math
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks import resultlog  # noqa: E402

DEFAULT_CSV = REPO / "benchmarks" / "results" / "cpu_decode.csv"
DEFAULT_WORK = REPO / "build" / "bench_cpu_decode"
MODELS = ("smollm2", "llama1b")
OURS = ("float32", "bf16", "int8", "int4", "gguf")
CONVERSION = "conversion/smollm2-135m-instruct@1"
INT4_SCHEME = "int4-g64"  # RTN; SmolLM2's 576 is not a multiple of 128
LLAMA1B = dict(vocab_size=32000, hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
               num_attention_heads=32, num_key_value_heads=8, max_position_embeddings=2048,
               rms_norm_eps=1e-5, rope_theta=500000.0, tie_word_embeddings=True)
PPL_TOKENS = 512
TARGETS = {"int4_vs_llamacpp": 1.0, "int4_vs_float32": 4.0, "batch16_vs_llamacpp_b1": 4.0, "ppl_within": 0.01}
CSV_FIELDS = ["timestamp", "git_commit", "cpu", "cores", "torch", "model", "engine", "variant", "batch", "threads",
              "prompt_tokens", "new_tokens", "prefill_tok_s", "decode_tok_s", "peak_rss_mb", "perplexity",
              "weight_mb", "decode_gb_s", "copy_gb_s", "note"]
PROMPT = ("It was the best of times, it was the worst of times, it was the age of wisdom, it was the age "
          "of foolishness, it was the epoch of belief")
# Public domain: Charles Dickens, A Tale of Two Cities (1859), the opening; and Herman Melville, Moby-Dick (1851).
TEXT = (
    "It was the best of times, it was the worst of times, it was the age of wisdom, it was the age of "
    "foolishness, it was the epoch of belief, it was the epoch of incredulity, it was the season of Light, "
    "it was the season of Darkness, it was the spring of hope, it was the winter of despair, we had "
    "everything before us, we had nothing before us, we were all going direct to Heaven, we were all going "
    "direct the other way - in short, the period was so far like the present period, that some of its "
    "noisiest authorities insisted on its being received, for good or for evil, in the superlative degree "
    "of comparison only. There were a king with a large jaw and a queen with a plain face, on the throne of "
    "England; there were a king with a large jaw and a queen with a fair face, on the throne of France. In "
    "both countries it was clearer than crystal to the lords of the State preserves of loaves and fishes, "
    "that things in general were settled for ever. Call me Ishmael. Some years ago - never mind how long "
    "precisely - having little or no money in my purse, and nothing particular to interest me on shore, I "
    "thought I would sail about a little and see the watery part of the world. It is a way I have of "
    "driving off the spleen and regulating the circulation. Whenever I find myself growing grim about the "
    "mouth; whenever it is a damp, drizzly November in my soul; whenever I find myself involuntarily pausing "
    "before coffin warehouses, and bringing up the rear of every funeral I meet; and especially whenever my "
    "hypos get such an upper hand of me, that it requires a strong moral principle to prevent me from "
    "deliberately stepping into the street, and methodically knocking people's hats off - then, I account "
    "it high time to get to sea as soon as I can."
)


# --- arguments ------------------------------------------------------------------------------


def _ints(text: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of integers") from None
    if not values or any(v <= 0 for v in values):
        raise argparse.ArgumentTypeError("values must be positive integers")
    return values


def _names(allowed: tuple[str, ...]):
    def parse(text: str) -> list[str]:
        values = [x for x in text.split(",") if x]
        bad = [v for v in values if v not in allowed]
        if bad or not values:
            raise argparse.ArgumentTypeError(f"unknown {bad}; choose from {', '.join(allowed)}")
        return values
    return parse


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", type=_names(MODELS), default=["smollm2"], help="smollm2 and/or llama1b (heavy)")
    p.add_argument("--variants", type=_names(OURS), default=list(OURS), help="our engine's variants")
    p.add_argument("--batch", type=_ints, default=[1, 16])
    p.add_argument("--threads", type=_ints, default=[1, 2])
    p.add_argument("--tokens", type=int, default=64, help="decode tokens per request (default 64)")
    p.add_argument("--repeats", type=int, default=3, help="timed runs per point (median)")
    p.add_argument("--quick", action="store_true", help="SmolLM2 only, 2 threads, batch 1")
    p.add_argument("--release", default=None, help="load SmolLM2 from this registered release instead")
    p.add_argument("--llama-python", default=os.environ.get("LLAMA_CPP_PYTHON"),
                   help="interpreter with llama-cpp-python (default $LLAMA_CPP_PYTHON; else no llama.cpp rows)")
    p.add_argument("--no-hf", action="store_true", help="skip transformers' generate")
    p.add_argument("--work", type=Path, default=DEFAULT_WORK, help="where the 1B GGUF is written (about 0.7 GB)")
    p.add_argument("--csv", type=Path, default=DEFAULT_CSV)
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.models, args.threads, args.batch = ["smollm2"], [2], [1]
    if args.tokens < 2 or args.repeats < 1:
        p.error("--tokens must be >= 2 and --repeats >= 1")
    return args


def configurations(args) -> list[dict]:
    """Every (model, engine, variant, batch, threads) point of the run, in the order they are measured."""
    out = []
    for model in args.models:
        for threads in args.threads:
            for batch in args.batch:
                if not args.no_hf and batch == 1:
                    out.append(dict(model=model, engine="transformers", variant="float32", batch=batch,
                                    threads=threads))
                out += [dict(model=model, engine="ours", variant=v, batch=batch, threads=threads)
                        for v in args.variants]
                out.append(dict(model=model, engine="llama.cpp", variant="Q4_1", batch=batch, threads=threads))
    return out


# --- environment ----------------------------------------------------------------------------


def cpu_model() -> str:
    """The CPU's model name and its vector extensions, e.g. "AMD EPYC (avx2)": two machines with
    the same model name can differ several-fold in torch's int4/bf16 ops."""
    from commonforge.machine import machine_info, vector_extensions

    name = machine_info().get("cpu") or platform.processor() or platform.machine()
    have = vector_extensions()
    return f"{name} ({' '.join(have)})" if have else name


def environment() -> dict:
    import torch

    return {"timestamp": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "git_commit": resultlog.git_commit(), "cpu": cpu_model(), "cores": os.cpu_count(),
            "torch": torch.__version__}


def peak_rss_mb() -> float:
    return vm_hwm_mb()


def vm_hwm_mb() -> float:
    """This process's peak resident set in MB (Linux; LLAMA_CHILD runs this function's source too)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    return float("nan")


def perplexity_from_logits(logits, ids: list[int]) -> float:
    """exp(mean NLL of ids[1:] given the logits at positions 0..n-2), in float64 (same for every engine)."""
    import numpy as np

    x = np.asarray(logits, dtype=np.float64)[: len(ids) - 1]
    x = x - x.max(axis=1, keepdims=True)
    logz = np.log(np.exp(x).sum(axis=1))
    nll = logz - x[np.arange(len(ids) - 1), np.asarray(ids[1:])]
    return float(math.exp(nll.mean()))


# --- the models -----------------------------------------------------------------------------


def smollm2_paths(root: Path = REPO):
    """(release, {release path: build file}) of the conversion's outputs, verified as evaluate_conversion does."""
    from pipelines.convert import conversion_manifest, load_conversion
    from pipelines.convert import release_files as conversion_files
    from pipelines.manifest import source_commit
    from registry.schema import Release

    conversion = load_conversion(root, CONVERSION)
    release = Release.from_manifest(conversion_manifest(root, conversion, source_commit(root)))
    return release, {rel: src for rel, src, _ in conversion_files(root, conversion)}


def smollm2_gguf(root: Path = REPO) -> Path:
    from commonforge.settings import Settings
    from pipelines.convert import fetch_checkpoint, load_conversion

    return fetch_checkpoint(load_conversion(root, CONVERSION), root=root, cache=Settings.load(root).source_cache)


def smollm2_tokenizer(root: Path = REPO):
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(tokenizer_file=str(root / "build" / "conversions" / "smollm2-135m-instruct"
                                                      / "tokenizer" / "tokenizer.json"))


def token_ids(vocab: int, root: Path = REPO) -> tuple[list[int], list[int]]:
    """(prompt ids, perplexity ids) from the SmolLM2 tokenizer; ids folded into ``vocab`` for the 1B model."""
    tok = smollm2_tokenizer(root)
    prompt = tok(PROMPT)["input_ids"]
    text = tok(TEXT)["input_ids"][:PPL_TOKENS]
    return [t % vocab for t in prompt], [t % vocab for t in text]


def write_llama_gguf(path: Path, shape: dict, *, seed: int = 0, linear_type: str = "Q4_1") -> Path:
    """A Llama GGUF with seeded random weights (tensor by tensor, so memory stays near the file's size),
    the layout of tests/pipelines/gguf_writer.py (llama.cpp's Q/K row permutation) and a synthetic
    byte-level vocabulary of ``vocab_size`` tokens (enough for llama.cpp to load; text is never
    tokenized: every engine gets token ids)."""
    import numpy as np
    from gguf import GGMLQuantizationType, GGUFWriter
    from gguf.quants import quantize

    from tests.pipelines.gguf_writer import _permute

    h, inter, layers = shape["hidden_size"], shape["intermediate_size"], shape["num_hidden_layers"]
    heads, kv, vocab = shape["num_attention_heads"], shape["num_key_value_heads"], shape["vocab_size"]
    head_dim = h // heads
    byte_tokens = [chr(c) for c in range(33, 127)] + [chr(c) for c in range(161, 173)] + \
        [chr(c) for c in range(174, 256)]
    byte_tokens += [chr(256 + i) for i in range(256 - len(byte_tokens))]  # GPT-2's byte-to-unicode alphabet
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tokens = specials + byte_tokens + ["\u0120t"]
    tokens += [f"<tok{i}>" for i in range(vocab - len(tokens))]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".partial")
    w = GGUFWriter(str(tmp), "llama")
    w.add_name("random 1B-shaped llama (commonforge benchmark)")
    w.add_context_length(shape["max_position_embeddings"])
    w.add_embedding_length(h)
    w.add_block_count(layers)
    w.add_feed_forward_length(inter)
    w.add_head_count(heads)
    w.add_head_count_kv(kv)
    w.add_layer_norm_rms_eps(shape["rms_norm_eps"])
    w.add_rope_freq_base(shape["rope_theta"])
    w.add_rope_dimension_count(head_dim)
    w.add_vocab_size(vocab)
    w.add_file_type(3 if linear_type == "Q4_1" else 2)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_types([3 if t in specials else 1 for t in tokens])
    w.add_token_merges(["\u0120 t"])
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_add_bos_token(False)
    rng = np.random.default_rng(seed)

    def add(name: str, rows: int, cols: int | None, qtype: str | None = None) -> None:
        if cols is None:
            w.add_tensor(name, (1 + 0.05 * rng.standard_normal(rows)).astype(np.float32))
            return
        value = (rng.standard_normal((rows, cols), dtype=np.float32) * (1 / math.sqrt(cols)))
        if ".attn_q." in name:
            value = _permute(value, heads)
        elif ".attn_k." in name:
            value = _permute(value, kv)
        t = GGMLQuantizationType[qtype or linear_type]
        w.add_tensor(name, quantize(value, t), raw_dtype=t)

    add("token_embd.weight", vocab, h, "Q8_0")
    add("output_norm.weight", h, None)
    for i in range(layers):
        add(f"blk.{i}.attn_norm.weight", h, None)
        add(f"blk.{i}.ffn_norm.weight", h, None)
        add(f"blk.{i}.attn_q.weight", heads * head_dim, h)
        add(f"blk.{i}.attn_k.weight", kv * head_dim, h)
        add(f"blk.{i}.attn_v.weight", kv * head_dim, h)
        add(f"blk.{i}.attn_output.weight", h, heads * head_dim)
        add(f"blk.{i}.ffn_gate.weight", inter, h)
        add(f"blk.{i}.ffn_up.weight", inter, h)
        add(f"blk.{i}.ffn_down.weight", h, inter)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    tmp.replace(path)
    return path


def llama1b_gguf(work: Path) -> Path:
    path = work / "llama1b-random-Q4_1.gguf"
    if not path.is_file():
        print(f"writing {path} (random weights, seed 0; once)", flush=True)
        write_llama_gguf(path, LLAMA1B)
    return path


def _gguf_model(path: Path, variant: str):
    """Our model from a GGUF, the way pipelines.convert builds a conversion: transformers' float32
    dequantization, or (variant gguf) the file's own blocks behind BlockQuantLinear in bfloat16."""
    import torch
    from transformers import AutoModelForCausalLM

    from pipelines.convert import block_variant, read_gguf

    model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32)
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is not None:
        quantizer.remove_quantization_config(model)
    if variant != "gguf":
        return model.eval()
    from kernels import load_block_quantized_model
    from serving.loader import _build_skeleton

    config = model.config.to_dict()
    dense = {k: v.detach() for k, v in model.state_dict().items()}
    dense.pop("lm_head.weight", None)
    tensors, cfg = block_variant(read_gguf(path), config, dense)
    del model, dense
    skeleton = _build_skeleton(cfg, torch.device("cpu"), torch.bfloat16)
    load_block_quantized_model(skeleton, tensors, cfg["quantization_config"])
    return skeleton.eval()


def load_ours(model_name: str, variant: str, args):
    """(LoadedModel, vocab size) for one of our variants, on the CPU."""
    import torch

    from benchmarks.bench_decode import _NoText
    from serving.loader import LoadedModel, load_from_files, load_release

    dtype = torch.float32 if variant in ("float32",) else torch.bfloat16
    if model_name == "smollm2":
        kind = "gguf" if variant == "gguf" else None
        dname = "float32" if variant == "float32" else "bfloat16"
        if args.release:
            loaded = load_release(args.release, variant=kind, device="cpu", dtype=dname)
        else:
            release, paths = smollm2_paths()
            loaded = load_from_files(release, paths, variant=kind, device="cpu", dtype=dname)
        model = loaded.model
    else:
        model = _gguf_model(llama1b_gguf(args.work), variant)
        if variant != "gguf":
            model = model.to(dtype)
    if variant in ("int8", "int4"):
        from kernels import quantize_model

        quantize_model(model, "int8" if variant == "int8" else INT4_SCHEME)
    loaded = LoadedModel(release=None, variant=variant, model=model, tokenizer=_NoText(),
                         device=torch.device("cpu"), dtype=dtype)
    return loaded, int(model.config.vocab_size)


# --- measuring (in the child) ---------------------------------------------------------------


def time_engine_runs(engine, prompts: list[list[int]], new_tokens: int, repeats: int) -> tuple[float, float]:
    """(median seconds of a new_tokens run, of a one-token run) with len(prompts) requests at once."""
    import threading

    from benchmarks.bench_decode import median
    from serving.sampling import SamplingParams

    def run(n: int) -> float:
        params = SamplingParams(max_tokens=n, temperature=0, ignore_eos=True)
        events = [threading.Event() for _ in prompts]
        start = time.perf_counter()
        for p, ev in zip(prompts, events):
            engine.submit(p, params, lambda out, ev=ev: out.finished and ev.set())
        for ev in events:
            ev.wait()
        return time.perf_counter() - start

    run(new_tokens)
    return median([run(new_tokens) for _ in range(repeats)]), median([run(1) for _ in range(repeats)])


def time_hf_runs(model, prompt: list[int], new_tokens: int, repeats: int) -> tuple[float, float]:
    import torch

    from benchmarks.bench_decode import median

    ids = torch.tensor([prompt])
    mask = torch.ones_like(ids)

    def run(n: int) -> float:
        start = time.perf_counter()
        with torch.inference_mode():
            model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=n, min_new_tokens=n,
                           do_sample=False, pad_token_id=0)
        return time.perf_counter() - start

    run(new_tokens)
    return median([run(new_tokens) for _ in range(repeats)]), median([run(1) for _ in range(repeats)])


def torch_perplexity(model, ids: list[int]) -> float:
    import torch

    with torch.inference_mode():
        logits = model(torch.tensor([ids])).logits[0].float().numpy()
    return perplexity_from_logits(logits, ids)


def rates(batch: int, prompt_len: int, new_tokens: int, t_full: float, t_one: float) -> tuple[float, float]:
    from benchmarks.bench_decode import decode_rate

    return batch * prompt_len / max(t_one, 1e-9), decode_rate(batch, new_tokens, t_full, t_one)


def child(cfg: dict) -> dict:
    """Measure one configuration of ours or transformers in this (fresh) process."""
    import torch

    from serving.engine import Engine

    torch.set_num_threads(cfg["threads"])
    args = argparse.Namespace(**cfg["args"])
    args.work = Path(args.work)
    loaded, vocab = load_ours(cfg["model"], cfg["variant"], args)
    prompt, text = token_ids(vocab)
    n, batch = cfg["tokens"], cfg["batch"]
    if cfg["engine"] == "transformers":
        t_full, t_one = time_hf_runs(loaded.model, prompt, n, cfg["repeats"])
    else:
        engine = Engine(loaded, max_batch=batch, max_queue=batch, max_len=len(prompt) + n + 8).start()
        try:
            t_full, t_one = time_engine_runs(engine, [prompt] * batch, n, cfg["repeats"])
        finally:
            engine.stop()
    prefill, decode = rates(batch, len(prompt), n, t_full, t_one)
    ppl = torch_perplexity(loaded.model, text)
    return dict(prompt_tokens=len(prompt), prefill_tok_s=prefill, decode_tok_s=decode, perplexity=ppl,
                peak_rss_mb=peak_rss_mb(), weight_mb=weight_bytes_per_step(loaded.model) / 1e6)


def weight_bytes_per_step(model) -> int:
    """Bytes of weights one decode step reads, after the timed runs (so every layer's compute form is
    cached): a quantized layer's prepacked CPU form (``_cpu_cache``) or its dequantized copy
    (``_dequant_cache``) where it computes from one, else its own parameters and buffers; shared
    tensors once; the input embedding not at all (a step reads one row of it) unless lm_head is it."""
    import dataclasses

    import torch

    seen: dict[int, int] = {}
    embed = model.get_input_embeddings().weight
    head = model.get_output_embeddings()
    tied = head is not None and getattr(head, "weight", None) is not None and head.weight.data_ptr() == embed.data_ptr()

    def count(t: torch.Tensor) -> None:
        if t.data_ptr() != embed.data_ptr() or tied:
            seen[t.data_ptr()] = t.numel() * t.element_size()

    for module in model.modules():
        cpu = getattr(module, "_cpu_cache", None)
        dense = getattr(module, "_dequant_cache", None)
        if cpu is not None and cpu[1] is not None:
            forms = [cpu[1]]
            while forms:  # a prepacked form's tensors, and those of the forms it holds (a split int8: two int4)
                form = forms.pop()
                for v in (getattr(form, f.name) for f in dataclasses.fields(form)):
                    if isinstance(v, torch.Tensor):
                        count(v)
                    elif dataclasses.is_dataclass(v) and not isinstance(v, type):
                        forms.append(v)
        elif dense is not None:
            count(dense[1])
        else:
            for t in (*module.parameters(recurse=False), *module.buffers(recurse=False)):
                count(t)
    return sum(seen.values())


def copy_bandwidth(threads: int, mb: int = 1024, repeats: int = 5) -> float:
    """The machine's measured copy bandwidth in GB/s with ``threads`` torch threads (read + write
    counted: 2 x size / time, the best of ``repeats``), the ceiling a decode step can approach."""
    import torch

    torch.set_num_threads(threads)
    src = torch.ones(mb * 1_000_000 // 4, dtype=torch.float32)
    dst = torch.empty_like(src)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        dst.copy_(src)
        best = min(best, time.perf_counter() - start)
    return 2 * src.numel() * 4 / best / 1e9


LLAMA_CHILD = inspect.getsource(vm_hwm_mb) + r"""
import json, math, sys, time
import numpy as np
import llama_cpp
cfg = json.loads(sys.argv[1])
prompt, text, n, reps = cfg["prompt"], cfg["text"], cfg["tokens"], cfg["repeats"]
def median(xs):
    return sorted(xs)[len(xs) // 2]
llm = llama_cpp.Llama(model_path=cfg["gguf"], n_threads=cfg["threads"], n_threads_batch=cfg["threads"],
                      n_ctx=max(len(prompt) + n + 8, len(text) + 8), n_batch=512, logits_all=True, verbose=False)
def run(k):
    llm.reset()
    start = time.perf_counter()
    out = 0
    for tok in llm.generate(prompt, top_k=1, top_p=1.0, temp=0.0, repeat_penalty=1.0, reset=True):
        out += 1
        if out >= k:
            break
    return time.perf_counter() - start
run(n)
full = median([run(n) for _ in range(reps)])
one = median([run(1) for _ in range(reps)])
llm.reset()
llm.eval(text)
x = np.asarray(llm.scores[: len(text) - 1], dtype=np.float64)
x = x - x.max(axis=1, keepdims=True)
nll = np.log(np.exp(x).sum(axis=1)) - x[np.arange(len(text) - 1), np.asarray(text[1:])]
print("RESULT " + json.dumps(dict(t_full=full, t_one=one, perplexity=float(math.exp(nll.mean())),
                                  peak_rss_mb=vm_hwm_mb(),
                                  version=llama_cpp.__version__)))
"""


def run_llamacpp(cfg: dict, args, gguf: Path) -> dict:
    vocab = LLAMA1B["vocab_size"] if cfg["model"] == "llama1b" else 49152
    prompt, text = token_ids(int(vocab))
    payload = dict(gguf=str(gguf), threads=cfg["threads"], tokens=args.tokens, repeats=args.repeats,
                   prompt=prompt, text=text)
    proc = subprocess.run([args.llama_python, "-c", LLAMA_CHILD, json.dumps(payload)], capture_output=True,
                          text=True, timeout=3600)
    result = _result(proc)
    prefill, decode = rates(1, len(prompt), args.tokens, result["t_full"], result["t_one"])
    return dict(prompt_tokens=len(prompt), prefill_tok_s=prefill, decode_tok_s=decode,
                perplexity=result["perplexity"], peak_rss_mb=result["peak_rss_mb"],
                weight_mb=gguf.stat().st_size / 1e6,  # the whole file, input embedding included (an upper bound)
                note=f"llama-cpp-python {result['version']}, greedy generate; prefill timed with the first token")


def _result(proc: subprocess.CompletedProcess) -> dict:
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    tail = (proc.stderr or proc.stdout)[-2000:]
    raise RuntimeError(f"the measuring process failed (exit {proc.returncode}): {tail}")


def run_ours(cfg: dict, args) -> dict:
    payload = dict(cfg, tokens=args.tokens, repeats=args.repeats,
                   args=dict(release=args.release, work=str(args.work)))
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(payload)],
                          capture_output=True, text=True, timeout=3600, cwd=REPO)
    return _result(proc)


# --- the report -----------------------------------------------------------------------------


def note_for(cfg: dict) -> str:
    if cfg["engine"] == "transformers":
        return "model.generate greedy, float32 full model"
    if cfg["engine"] == "ours":
        return {"float32": "full model, float32", "bf16": "full model, bfloat16",
                "int8": "quantize_model int8 RTN, bf16 activations",
                "int4": f"quantize_model {INT4_SCHEME} RTN, bf16 activations",
                "gguf": "the GGUF's own blocks (lossless variant), bf16 activations"}[cfg["variant"]]
    return ""


def format_row(env: dict, cfg: dict, result: dict | None, args, note: str = "", copy_gb_s: float | None = None) -> dict:
    r = dict(result or {})
    if r.get("weight_mb") is not None and r.get("decode_tok_s") is not None:
        r["decode_gb_s"] = r["weight_mb"] / 1e3 * r["decode_tok_s"] / cfg["batch"]  # weights read per step x steps/s
    r["copy_gb_s"] = copy_gb_s

    def f(key, digits=1):
        return f"{r[key]:.{digits}f}" if r.get(key) is not None else ""

    return {**env, "model": cfg["model"], "engine": cfg["engine"], "variant": cfg["variant"], "batch": cfg["batch"],
            "threads": cfg["threads"], "prompt_tokens": r.get("prompt_tokens", ""), "new_tokens": args.tokens,
            "prefill_tok_s": f("prefill_tok_s"), "decode_tok_s": f("decode_tok_s"), "peak_rss_mb": f("peak_rss_mb"),
            "perplexity": f("perplexity", 3), "weight_mb": f("weight_mb"), "decode_gb_s": f("decode_gb_s", 2),
            "copy_gb_s": f("copy_gb_s", 2), "note": note or r.get("note") or note_for(cfg)}


def target_lines(rows: list[dict]) -> list[str]:
    """One line per target of issue 15 that this run's rows can judge (the rest say what is missing)."""
    def get(model, engine, variant, batch, threads, key="decode_tok_s"):
        for r in rows:
            if (r["model"], r["engine"], r["variant"], int(r["batch"]), int(r["threads"])) == \
                    (model, engine, variant, batch, threads) and r[key] != "":
                return float(r[key])
        return None

    lines = []
    for model, threads in sorted({(r["model"], int(r["threads"])) for r in rows}):
        where = f"{model}, {threads} thread{'s' if threads > 1 else ''}"
        f32 = get(model, "ours", "float32", 1, threads)
        lcpp = get(model, "llama.cpp", "Q4_1", 1, threads)
        pl = get(model, "llama.cpp", "Q4_1", 1, threads, "perplexity")
        # "int4": RTN of the float weights; "gguf": the checkpoint's own Q4_x blocks (also int4), judged alike
        for variant, label in (("int4", "int4"), ("gguf", "gguf-blocks int4")):
            if variant == "gguf" and get(model, "ours", "gguf", 1, threads) is None:
                continue
            q4, b16 = get(model, "ours", variant, 1, threads), get(model, "ours", variant, 16, threads)
            checks = [(f"{label} batch-1 decode vs llama.cpp Q4_1", q4, lcpp, TARGETS["int4_vs_llamacpp"]),
                      (f"{label} batch-1 decode vs our float32", q4, f32, TARGETS["int4_vs_float32"]),
                      (f"{label} batch-16 aggregate vs llama.cpp batch 1", b16, lcpp,
                       TARGETS["batch16_vs_llamacpp_b1"])]
            for what, num, den, target in checks:
                if num is None or den is None:
                    lines.append(f"n/a : {what} ({where}): not measured in this run")
                    continue
                ratio = num / den
                lines.append(f"{'PASS' if ratio >= target else 'FAIL'}: {what} = {ratio:.2f}x (target >= {target}x; "
                             f"{where})")
            p4 = get(model, "ours", variant, 1, threads, "perplexity")
            if p4 is None or pl is None:
                lines.append(f"n/a : {label} perplexity vs llama.cpp ({where}): not measured in this run")
            else:
                rel = p4 / pl - 1
                ok = abs(rel) <= TARGETS["ppl_within"] or rel < 0
                lines.append(f"{'PASS' if ok else 'FAIL'}: {label} perplexity {p4:.3f} vs llama.cpp {pl:.3f} "
                             f"({rel:+.2%}; target within {TARGETS['ppl_within']:.0%}; {where})")
    return lines


HEADER = (f"{'model':>8} {'engine':>12} {'variant':>8} {'b':>3} {'t':>2} {'prefill/s':>10} {'decode/s':>9} "
          f"{'rss MB':>8} {'ppl':>8} {'GB/s':>6} {'copy':>6}  note")


def print_table(rows: list[dict]) -> None:
    for r in rows:
        print(f"{r['model']:>8} {r['engine']:>12} {r['variant']:>8} {r['batch']:>3} {r['threads']:>2} "
              f"{r['prefill_tok_s']:>10} {r['decode_tok_s']:>9} {r['peak_rss_mb']:>8} {r['perplexity']:>8} "
              f"{r['decode_gb_s']:>6} {r['copy_gb_s']:>6}  {r['note']}", flush=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        print("RESULT " + json.dumps(child(json.loads(args.child))), flush=True)
        return 0
    env = environment()
    rows = []
    ggufs: dict[str, Path] = {}
    copy = {t: copy_bandwidth(t) for t in sorted(set(args.threads))}
    print("measured copy bandwidth: " + ", ".join(f"{t} thread(s) {v:.1f} GB/s" for t, v in copy.items()), flush=True)
    print(HEADER, flush=True)
    for cfg in configurations(args):
        note = ""
        result = None
        try:
            if cfg["engine"] == "llama.cpp":
                if cfg["batch"] != 1:
                    note = "not measured: llama-cpp-python's high-level API has no batched generation"
                elif not args.llama_python:
                    note = "not measured: no --llama-python (or $LLAMA_CPP_PYTHON) given"
                else:
                    if cfg["model"] not in ggufs:
                        ggufs[cfg["model"]] = smollm2_gguf() if cfg["model"] == "smollm2" else llama1b_gguf(args.work)
                    result = run_llamacpp(cfg, args, ggufs[cfg["model"]])
            else:
                result = run_ours(cfg, args)
        except (RuntimeError, subprocess.TimeoutExpired, OSError) as err:
            note = f"failed: {str(err)[-300:]}"
            print(f"{cfg}: {note}", file=sys.stderr, flush=True)
        row = format_row(env, cfg, result, args, note, copy.get(cfg["threads"]))
        rows.append(row)
        print_table([row])
    resultlog.append_rows(args.csv, CSV_FIELDS, rows)
    print(f"appended {len(rows)} rows to {args.csv} ({env['cpu']}, {env['cores']} cores, commit {env['git_commit']})")
    for line in target_lines(rows):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
