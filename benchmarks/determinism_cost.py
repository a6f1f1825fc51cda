"""What the determinism pins cost in training speed: forge-small's training step with and without them.

    python benchmarks/determinism_cost.py                 # 3 rounds x 30 steps per mode
    python benchmarks/determinism_cost.py --rounds 5 --steps 40 --recipe recipe/forge-tiny@1

Each measurement is a fresh Python process (the pins are environment variables read when torch
loads, so they can't be switched inside one process), alternating the two modes so a change in
the machine's load hits both alike:

* ``pinned``: exactly what a build stage does: ``pipelines.determinism.pin`` (ATen's CPU
  capability AVX2, MKL's conditional numerical reproducibility ``AVX2,STRICT``, oneDNN/MKL
  instruction caps, threads) and ``configure_torch`` (deterministic algorithms, one inter-op
  thread);
* ``unpinned``: none of that; the parent's environment minus those variables, the same number
  of intra-op threads, torch's default algorithms and ISA (AVX-512 where the CPU has it).

Both train the recipe's architecture (at its vocabulary size) with AdamW on seeded random
token windows of the recipe's batch and sequence length; the first 3 steps are warm-up and not
timed. Rows go to ``benchmarks/results/determinism_cost.csv`` with the CPU, the ISA ATen chose
and the git commit. On a CPU without AVX-512 the ISA pin changes nothing, so the figure there is
the cost of MKL's strict mode and deterministic algorithms only.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import resultlog  # noqa: E402  (the repository is on sys.path from here)

CSV_FIELDS = ["date", "commit", "cpu", "recipe", "steps", "rounds", "mode", "isa", "median_step_s", "tokens_per_s",
              "cost_vs_unpinned"]

CHILD = r"""
import json, os, sys, time
mode, ref, steps = sys.argv[1], sys.argv[2], int(sys.argv[3])
from commonforge import settings
root = settings.apply().root
from pipelines import determinism
from pipelines.stage import load_recipe
recipe = load_recipe(root, ref)
t = recipe.training
if mode == "pinned":
    determinism.pin(t.threads)
import torch
if mode == "pinned":
    determinism.configure_torch(t.seed, t.threads)
else:
    torch.manual_seed(t.seed)
    torch.set_num_threads(t.threads)
from transformers import LlamaForCausalLM
from pipelines.train import llama_config
config = llama_config(recipe, recipe.tokenizer.vocab_size)
model = LlamaForCausalLM(config)
model.train()
opt = torch.optim.AdamW(model.parameters(), lr=t.learning_rate, betas=t.betas, eps=t.eps,
                        weight_decay=t.weight_decay, foreach=False)
gen = torch.Generator().manual_seed(t.seed)
data = torch.randint(4, recipe.tokenizer.vocab_size, (steps + 3, t.batch_size, t.seq_len + 1), generator=gen)
times = []
for i in range(steps + 3):
    started = time.perf_counter()
    batch = data[i]
    loss = model(input_ids=batch[:, :-1], labels=batch[:, 1:]).loss
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), t.grad_clip)
    opt.step()
    opt.zero_grad(set_to_none=True)
    if i >= 3:
        times.append(time.perf_counter() - started)
print(json.dumps({"isa": str(torch.backends.cpu.get_cpu_capability()), "step_s": sorted(times)[len(times) // 2],
                  "tokens_per_s": t.batch_size * t.seq_len * len(times) / sum(times)}))
"""

STRIPPED = ("ATEN_CPU_CAPABILITY", "MKL_CBWR", "MKL_ENABLE_INSTRUCTIONS", "ONEDNN_MAX_CPU_ISA",
            "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def measure(mode: str, ref: str, steps: int) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in STRIPPED}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    done = subprocess.run([sys.executable, "-c", CHILD, mode, ref, str(steps)], cwd=ROOT, env=env,
                          capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"the {mode} run failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", default="recipe/forge-small@1", help="whose architecture and batch to train")
    parser.add_argument("--steps", type=int, default=30, help="timed training steps per run")
    parser.add_argument("--rounds", type=int, default=3, help="runs per mode, alternating")
    parser.add_argument("--csv", type=Path, default=ROOT / "benchmarks" / "results" / "determinism_cost.csv",
                        help="append the rows here")
    args = parser.parse_args(argv)
    if args.steps < 1 or args.rounds < 1:
        parser.error("--steps and --rounds must be at least 1")
    results: dict[str, list[dict]] = {"pinned": [], "unpinned": []}
    for r in range(args.rounds):
        for mode in ("pinned", "unpinned") if r % 2 == 0 else ("unpinned", "pinned"):
            res = measure(mode, args.recipe, args.steps)
            results[mode].append(res)
            print(f"round {r + 1} {mode:>8}: {res['step_s'] * 1000:7.1f} ms/step (median), "
                  f"{res['tokens_per_s']:,.0f} tokens/s, ATen ISA {res['isa']}", flush=True)
    commit = resultlog.git_commit(ROOT)
    cpu = _cpu_name()
    step = {m: statistics.median(x["step_s"] for x in rs) for m, rs in results.items()}
    cost = step["pinned"] / step["unpinned"] - 1
    print(f"pinned {step['pinned'] * 1000:.1f} ms/step vs unpinned {step['unpinned'] * 1000:.1f} ms/step: "
          f"the pins cost {cost:+.1%} ({cpu}; ATen ISA unpinned: {results['unpinned'][0]['isa']})")
    now = datetime.now(UTC).isoformat(timespec="seconds")
    resultlog.append_rows(args.csv, CSV_FIELDS, [
        {"date": now, "commit": commit, "cpu": cpu, "recipe": args.recipe, "steps": args.steps, "rounds": args.rounds,
         "mode": mode, "isa": rs[0]["isa"], "median_step_s": round(step[mode], 4),
         "tokens_per_s": round(statistics.median(x["tokens_per_s"] for x in rs)),
         "cost_vs_unpinned": f"{cost:+.4f}" if mode == "pinned" else ""}
        for mode, rs in results.items()])


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


if __name__ == "__main__":
    main()
