"""The CPU decode benchmark's pieces on a tiny model: arguments, the configuration matrix, perplexity,
the random-Llama GGUF writer read back by our engine (float32 and the GGUF's own blocks), the
target lines and the CSV. (The benchmark itself is a script, never run as a test.)"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest
import torch

from tests.helpers import load_script

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_cpu_decode.py"
TINY = dict(vocab_size=320, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=256, rms_norm_eps=1e-5, rope_theta=10000.0)


@pytest.fixture(scope="module")
def bench():
    yield from load_script(SCRIPT)


def test_parse_args_and_matrix(bench):
    args = bench.parse_args([])
    assert (args.models, args.batch, args.threads, args.tokens) == (["smollm2"], [1, 16], [1, 2], 64)
    quick = bench.parse_args(["--quick", "--models", "smollm2,llama1b", "--tokens", "16"])
    assert (quick.models, quick.threads, quick.batch, quick.tokens) == (["smollm2"], [2], [1], 16)
    cfgs = bench.configurations(quick)
    assert [(c["engine"], c["variant"]) for c in cfgs] == [
        ("transformers", "float32"), *[("ours", v) for v in bench.OURS], ("llama.cpp", "Q4_1")]
    full = bench.configurations(bench.parse_args(["--models", "smollm2,llama1b"]))
    assert len(full) == 2 * 2 * (1 + 2 * (len(bench.OURS) + 1))  # transformers at batch 1 only
    for bad in (["--models", "gpt2"], ["--variants", "int3"], ["--batch", "0"], ["--tokens", "1"]):
        with pytest.raises(SystemExit):
            bench.parse_args(bad)


def test_perplexity_matches_cross_entropy(bench):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(12, 50, generator=g)
    ids = torch.randint(0, 50, (12,), generator=g).tolist()
    expected = math.exp(torch.nn.functional.cross_entropy(logits[:-1].double(), torch.tensor(ids[1:])).item())
    assert bench.perplexity_from_logits(logits.numpy(), ids) == pytest.approx(expected, rel=1e-12)


def test_random_llama_gguf_runs_in_our_engine(bench, tmp_path):
    path = bench.write_llama_gguf(tmp_path / "tiny.gguf", TINY)
    dense = bench._gguf_model(path, "float32")
    blocks = bench._gguf_model(path, "gguf")
    assert dense.config.hidden_size == 64 and dense.config.vocab_size == 320
    ids = list(range(5, 45))
    p_dense, p_blocks = bench.torch_perplexity(dense, ids), bench.torch_perplexity(blocks, ids)
    # the block variant is the same weights (bf16 activations): perplexities agree closely
    assert p_blocks == pytest.approx(p_dense, rel=0.05)
    from benchmarks.bench_decode import _NoText
    from serving.engine import Engine
    from serving.loader import LoadedModel

    loaded = LoadedModel(release=None, variant="gguf", model=blocks, tokenizer=_NoText(),
                         device=torch.device("cpu"), dtype=torch.bfloat16)
    with Engine(loaded, max_batch=2, max_queue=2, max_len=64) as engine:
        t_full, t_one = bench.time_engine_runs(engine, [ids[:8]] * 2, 4, 1)
    prefill, decode = bench.rates(2, 8, 4, t_full, t_one)
    assert t_full > 0 and t_one > 0 and prefill > 0 and decode > 0


def test_rows_targets_and_csv(bench, tmp_path):
    env = dict(timestamp="2026-12-02T00:00:00+00:00", git_commit="abc", cpu="Xeon", cores=2, torch="2.13")
    args = bench.parse_args(["--tokens", "16"])
    results = {("ours", "float32", 1): 10.0, ("ours", "int4", 1): 45.0, ("llama.cpp", "Q4_1", 1): 50.0,
               ("ours", "int4", 16): 150.0}
    rows = []
    for (engine, variant, batch), tps in results.items():
        cfg = dict(model="smollm2", engine=engine, variant=variant, batch=batch, threads=2)
        ppl = 30.2 if variant == "int4" else 30.0
        rows.append(bench.format_row(env, cfg, dict(prompt_tokens=30, prefill_tok_s=300.0, decode_tok_s=tps,
                                                    peak_rss_mb=1500.0, perplexity=ppl), args))
    cfg = dict(model="smollm2", engine="llama.cpp", variant="Q4_1", batch=16, threads=2)
    rows.append(bench.format_row(env, cfg, None, args, "not measured: no batched generation"))
    lines = bench.target_lines(rows)
    assert lines[0].startswith("FAIL") and "0.90x" in lines[0]  # 45 / 50
    assert lines[1].startswith("PASS") and "4.50x" in lines[1]  # 45 / 10
    assert lines[2].startswith("FAIL") and "3.00x" in lines[2]  # 150 / 50
    assert lines[3].startswith("PASS") and "+0.67%" in lines[3]
    path = tmp_path / "cpu_decode.csv"
    bench.resultlog.append_rows(path, bench.CSV_FIELDS, rows)
    read = list(csv.DictReader(path.open()))
    assert len(read) == 5 and read[-1]["decode_tok_s"] == "" and read[-1]["note"].startswith("not measured")
    assert read[0]["git_commit"] == "abc" and read[0]["cpu"] == "Xeon"


def test_weight_bytes_follow_the_compute_form_and_bandwidth_is_derived(bench, tmp_path):
    """A decode step of the block variant reads its packed int4 CPU form, far less than float32 weights."""
    path = bench.write_llama_gguf(tmp_path / "tiny.gguf", TINY)
    dense = bench._gguf_model(path, "float32")
    blocks = bench._gguf_model(path, "gguf")
    ids = list(range(5, 45))
    bench.torch_perplexity(blocks, ids)  # warms the layers' compute forms, as the timed runs do
    full, packed = bench.weight_bytes_per_step(dense), bench.weight_bytes_per_step(blocks)
    embed = dense.get_input_embeddings().weight
    linear = sum(m.weight.numel() for m in dense.modules() if isinstance(m, torch.nn.Linear))
    assert full >= linear * 4 and full < linear * 4 + embed.numel() * 4 + 64 * 1024  # tied head: counted once
    assert packed < full / 2
    args = bench.parse_args(["--tokens", "16"])
    cfg = dict(model="llama1b", engine="ours", variant="gguf", batch=2, threads=2)
    row = bench.format_row({}, cfg, dict(decode_tok_s=10.0, weight_mb=100.0), args, copy_gb_s=12.5)
    assert row["decode_gb_s"] == "0.50" and row["copy_gb_s"] == "12.50"  # 100 MB x 10 tok/s / batch 2
    assert bench.copy_bandwidth(1, mb=16, repeats=2) > 0
