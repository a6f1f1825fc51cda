"""Choose forge-small's shape: train several shapes for the same wall time, compare bits per byte.

    python benchmarks/sweep_forge_small.py --budget 240

Needs literary-pd prepared (`dvc repro select@forge-small.literary-pd`). Each configuration is
forge-small's recipe with another vocabulary (a tokenizer trained here, on the same training
split) and architecture; the number of steps is
calibrated so each trains for ``--budget`` seconds of an unloaded machine (12 probe steps timed in
CPU seconds per thread, which another process on the machine barely changes; then a fixed
step count, so the run itself stays deterministic), warmup 5% of the steps. Validation loss and bits per byte
are measured on the whole validation split. Results are appended to
benchmarks/results/forge_small_sweep.csv with the machine and git commit.
"""

from __future__ import annotations

import argparse
import platform
import time
from datetime import UTC, datetime

from benchmarks import resultlog
from commonforge import settings
from pipelines import determinism

# name -> (tokenizer vocabulary, architecture). Widths are multiples of 128 so int4-g128 applies.
CONFIGS = {
    "v8192-h128-L8": (8192, dict(hidden_size=128, intermediate_size=384, num_hidden_layers=8,
                                 num_attention_heads=4, num_key_value_heads=2)),
    "v8192-h256-L4": (8192, dict(hidden_size=256, intermediate_size=768, num_hidden_layers=4,
                                 num_attention_heads=8, num_key_value_heads=4)),
    "v4096-h256-L4": (4096, dict(hidden_size=256, intermediate_size=768, num_hidden_layers=4,
                                 num_attention_heads=8, num_key_value_heads=4)),
    "v4096-h128-L6": (4096, dict(hidden_size=128, intermediate_size=384, num_hidden_layers=6,
                                 num_attention_heads=4, num_key_value_heads=2)),
    "v8192-h128-L4": (8192, dict(hidden_size=128, intermediate_size=384, num_hidden_layers=4,
                                 num_attention_heads=4, num_key_value_heads=2)),
    "v4096-h384-L3": (4096, dict(hidden_size=384, intermediate_size=1024, num_hidden_layers=3,
                                 num_attention_heads=6, num_key_value_heads=3)),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", type=float, default=240.0, help="training seconds per configuration")
    parser.add_argument("--only", nargs="*", choices=sorted(CONFIGS), help="run only these configurations")
    args = parser.parse_args()
    root = settings.apply().root
    from pipelines.stage import load_recipe

    recipe = load_recipe(root, "recipe/forge-small@1")
    determinism.pin(recipe.training.threads)


    from pipelines.select import iter_documents
    from pipelines.tokenizer import train_tokenizer
    from pipelines.train import bits_per_byte, llama_config, token_stream, train_model, windows

    determinism.configure_torch(recipe.training.seed, recipe.training.threads)
    t = recipe.training
    data: dict[int, tuple] = {}

    def tokenized(vocab: int):
        if vocab not in data:
            r = recipe.model_copy(update={"tokenizer": recipe.tokenizer.model_copy(update={"vocab_size": vocab})})
            tok = train_tokenizer((d["text"] for d in iter_documents(root, recipe, "train")), r)
            train_stream, _ = token_stream(tok, iter_documents(root, recipe, "train"), 0, 1)
            val_stream, val_bytes = token_stream(tok, iter_documents(root, recipe, "validation"), 0, 1)
            print(f"vocab {vocab}: train {len(train_stream):,} tokens, validation {len(val_stream):,} tokens "
                  f"({val_bytes:,} bytes)")
            data[vocab] = (tok, windows(train_stream, t.seq_len), windows(val_stream, t.seq_len), val_bytes,
                           len(val_stream))
        return data[vocab]
    commit = resultlog.git_commit(root)
    out_path = root / "benchmarks" / "results" / "forge_small_sweep.csv"
    rows = []
    for name, (vocab, arch) in CONFIGS.items():
        if args.only and name not in args.only:
            continue
        tok, train_w, val_w, val_bytes, val_tokens = tokenized(vocab)
        r = recipe.model_copy(update={"architecture": recipe.architecture.model_copy(update=arch),
                                      "tokenizer": recipe.tokenizer.model_copy(update={"vocab_size": vocab})})
        # Calibrate on CPU time, not wall time, so another process on the machine doesn't skew
        # the step counts: seconds per step = CPU seconds per step / threads (12 probe steps).
        probe = r.model_copy(update={"training": t.model_copy(update={"steps": 12, "warmup_steps": 1})})
        cpu0 = time.process_time()
        train_model(probe, llama_config(probe, tok.get_vocab_size()), train_w, val_w[:0])
        per_step = (time.process_time() - cpu0) / t.threads / 12
        steps = max(20, int(args.budget / per_step))
        r = r.model_copy(update={"training": t.model_copy(update={"steps": steps, "warmup_steps": max(1, steps // 20),
                                                                      "eval_every": steps})})
        config = llama_config(r, tok.get_vocab_size())
        cpu0 = time.process_time()
        run = train_model(r, config, train_w, val_w[:0])
        cpu_seconds = time.process_time() - cpu0
        loss, bpb, _ = bits_per_byte(run.model, val_w, t.batch_size, val_bytes, val_tokens)
        params = sum(p.numel() for p in run.model.parameters())
        row = {
            "date": datetime.now(UTC).isoformat(timespec="seconds"), "commit": commit,
            "cpu": platform.processor() or platform.machine(), "threads": t.threads, "config": name,
            "budget_s": args.budget,
            "parameters": params, "steps": steps, "tokens": steps * t.batch_size * t.seq_len,
            "train_seconds": round(run.seconds, 1), "cpu_seconds_per_thread": round(cpu_seconds / t.threads, 1),
            "final_train_loss": run.losses[-1][1],
            "val_loss": round(loss, 4), "val_bits_per_byte": round(bpb, 4),
        }
        rows.append(row)
        print(row, flush=True)
        resultlog.append_rows(out_path, list(row), [row])
    print("\n| config | parameters | steps | train s | val loss | bits/byte |\n|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['config']} | {row['parameters']:,} | {row['steps']} | {row['train_seconds']} | {row['val_loss']} "
              f"| {row['val_bits_per_byte']} |")


if __name__ == "__main__":
    started = time.perf_counter()
    main()
    print(f"sweep took {time.perf_counter() - started:.0f} s")
