"""Stage ``train``: a transformers ``LlamaForCausalLM`` trained on CPU, bit for bit reproducibly.

    python -m pipelines.train recipe/forge-small@1

Reads the recipe, the tokenizer and the verified training/validation splits; writes

    build/models/<recipe>/model/       config.json, generation_config.json, model.safetensors
    build/models/<recipe>/train/       loss.csv, val_loss.csv (DVC plots), metrics.json (deterministic),
                                       environment.json (the pinned environment, for the manifest),
                                       run.json (wall time, tokens/s, MLflow run id: differs per run)

Data: every document becomes ``BOS + tokens + EOS``; documents are concatenated in split
order into one stream cut into windows of ``seq_len + 1`` tokens; each epoch visits the
windows in a permutation drawn from a generator seeded with ``seed + epoch``. Nothing here
depends on wall time or on the machine beyond what :mod:`pipelines.determinism` pins.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import platform
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from commonforge import settings as forge_settings
from commonforge.errors import BuildError
from pipelines import determinism
from pipelines.manifest import model_outputs
from pipelines.select import iter_documents
from pipelines.stage import load_recipe, mlflow_experiment, stage_cli
from registry.architecture import transformers_config
from registry.fsutil import atomic_write_bytes
from registry.schema import Recipe

if TYPE_CHECKING:  # transformers loads torch: imported where a model is built, not at import time
    from transformers import LlamaForCausalLM


def llama_config(recipe: Recipe, vocab_size: int):
    from transformers import LlamaConfig

    fields = transformers_config(recipe, vocab_size)
    del fields["model_type"]  # LlamaConfig's own
    return LlamaConfig(**fields)


def token_stream(tokenizer, docs, bos: int, eos: int):
    """All documents as one int64 tensor: BOS doc EOS BOS doc EOS ..."""
    import numpy as np
    import torch

    texts = [d["text"] for d in docs]
    parts = []
    for enc in tokenizer.encode_batch(texts, add_special_tokens=False):
        parts.append(np.asarray([bos, *enc.ids, eos], dtype=np.int64))
    n_bytes = sum(len(t.encode("utf-8")) for t in texts)
    if not parts:
        return torch.zeros(0, dtype=torch.int64), 0
    return torch.from_numpy(np.concatenate(parts)), n_bytes


def windows(stream, seq_len: int):
    """(n, seq_len + 1) windows of the stream, overlapping by one token (the tail that doesn't fit is dropped)."""
    import torch

    n = (len(stream) - 1) // seq_len
    if n <= 0:
        raise BuildError(
            f"{len(stream)} tokens are too few for one window of {seq_len + 1}",
            hint="use a shorter training.seq_len or a larger dataset",
        )
    idx = (seq_len * torch.arange(n)).unsqueeze(1) + torch.arange(seq_len + 1)
    return stream[idx]


def lr_at(step: int, recipe: Recipe) -> float:
    t = recipe.training
    if step < t.warmup_steps:
        return t.learning_rate * (step + 1) / t.warmup_steps
    if t.schedule == "constant":
        return t.learning_rate
    progress = (step - t.warmup_steps) / max(1, t.steps - t.warmup_steps)
    floor = t.learning_rate * t.min_lr_ratio
    if t.schedule == "linear":
        return floor + (t.learning_rate - floor) * (1 - progress)
    return floor + (t.learning_rate - floor) * 0.5 * (1 + math.cos(math.pi * progress))


def evaluate_loss(model, wins, batch_size: int) -> tuple[float, int]:
    """Summed next-token NLL (nats) over ``wins`` and the number of predicted tokens."""
    import torch
    import torch.nn.functional as F

    total, count = 0.0, 0
    model.eval()
    with torch.no_grad():
        for i in range(0, len(wins), batch_size):
            w = wins[i : i + batch_size]
            logits = model(input_ids=w[:, :-1]).logits
            nll = F.cross_entropy(logits.reshape(-1, logits.size(-1)), w[:, 1:].reshape(-1), reduction="sum")
            total += float(nll)
            count += w[:, 1:].numel()
    model.train()
    return total, count


def save_safetensors(state: dict, path: Path) -> None:
    """Stable bytes: contiguous tensors, a single metadata key (docs/determinism.md), atomic rename."""
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{path.name}")
    save_file({k: v.detach().contiguous() for k, v in state.items()}, str(tmp), metadata={"format": "pt"})
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def write_json(path: Path, obj) -> None:
    atomic_write_bytes(path, json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False).encode() + b"\n")


def write_csv(path: Path, header: list[str], rows: list[list]) -> None:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    atomic_write_bytes(path, buf.getvalue().encode())


def state_dict_for_save(model) -> dict:
    state = model.state_dict()
    if model.config.tie_word_embeddings:
        state.pop("lm_head.weight", None)  # shares storage with the embeddings
    return state


@dataclass
class TrainRun:
    model: LlamaForCausalLM
    losses: list  # [step, "loss"] rows of loss.csv
    val_losses: list  # [step, "val_loss"] rows of val_loss.csv
    seconds: float  # wall time of the optimization loop


def train_model(recipe: Recipe, config, train_w, eval_w, *, log=None, max_seconds: float | None = None) -> TrainRun:
    """Initialize a Llama from ``config`` (seeded) and train it on ``train_w`` per the recipe.

    ``train_w``: (n, seq_len + 1) token windows; ``eval_w``: the windows for periodic validation
    loss. ``log(metrics, step)`` receives losses, learning rate and tokens/s. ``max_seconds``
    (sweeps only; never in a build) stops early.
    """
    import torch
    from tqdm import tqdm
    from transformers import LlamaForCausalLM

    t = recipe.training
    torch.manual_seed(t.seed)
    model = LlamaForCausalLM(config)
    model.train()
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": t.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=t.learning_rate, betas=t.betas, eps=t.eps, foreach=False,
    )
    n_windows = len(train_w)
    gen = torch.Generator().manual_seed(t.seed)
    epoch, order, cursor = 0, torch.randperm(n_windows, generator=gen), 0
    losses: list[list] = []
    val_losses: list[list] = []
    tokens_per_step = t.batch_size * t.seq_len
    started = time.perf_counter()
    bar = tqdm(range(t.steps), desc=f"train {recipe.ref}", unit="step", mininterval=1.0)
    for step in bar:
        # --- batch: the next batch_size windows of this epoch's permutation
        idx: list[int] = []
        while len(idx) < t.batch_size:
            if cursor == n_windows:
                epoch += 1
                order = torch.randperm(n_windows, generator=torch.Generator().manual_seed(t.seed + epoch))
                cursor = 0
            take = min(t.batch_size - len(idx), n_windows - cursor)
            idx.extend(order[cursor : cursor + take].tolist())
            cursor += take
        batch = train_w[idx]  # (B, seq_len + 1)
        lr = lr_at(step, recipe)
        for group in opt.param_groups:
            group["lr"] = lr
        logits = model(input_ids=batch[:, :-1]).logits  # (B, T, V)
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)), batch[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if t.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), t.grad_clip, foreach=False)
        opt.step()
        loss_value = loss.detach().item()
        losses.append([step + 1, f"{loss_value:.6f}"])
        elapsed = time.perf_counter() - started
        tps = (step + 1) * tokens_per_step / elapsed
        bar.set_postfix(loss=f"{loss_value:.3f}", tok_s=f"{tps:,.0f}", refresh=False)
        metrics = {"train_loss": loss_value, "lr": lr}
        if (step + 1) % t.eval_every == 0 or step + 1 == t.steps:
            if len(eval_w):
                total, count = evaluate_loss(model, eval_w, t.batch_size)
                val_losses.append([step + 1, f"{total / count:.6f}"])
                metrics["val_loss"] = total / count
            metrics["tokens_per_s"] = tps
        if log is not None and ((step + 1) % 10 == 0 or "val_loss" in metrics):
            log(metrics, step + 1)
        if max_seconds is not None and elapsed > max_seconds:
            break
    bar.close()
    return TrainRun(model, losses, val_losses, time.perf_counter() - started)


def bits_per_byte(model, val_w, batch_size: int, val_bytes: int, val_tokens_total: int) -> tuple[float, float, int]:
    """(loss per token, bits per byte, tokens scored) over the validation windows.

    The windows cover ``count`` of the split's ``val_tokens_total`` tokens; the split's bytes
    are scaled alike, so bits per byte compares across tokenizers.
    """
    if not len(val_w):
        return float("nan"), float("nan"), 0
    total, count = evaluate_loss(model, val_w, batch_size)
    covered_bytes = val_bytes * count / max(1, val_tokens_total - 1)
    return total / count, total / math.log(2) / covered_bytes, count


class _Tracker:
    """MLflow logging for one run (params, losses, tokens/s, environment).

    What MLflow imports depends on the tracking backend, not on the bits, so every call into it
    runs under ``determinism.untracked_imports`` and stays out of the stage's record.
    """

    def __init__(self, recipe: Recipe, settings, env: dict) -> None:
        with determinism.untracked_imports():
            import mlflow

            self.mlflow = mlflow
            self.run = mlflow.start_run(experiment_id=mlflow_experiment(settings, recipe), run_name=recipe.ref)
            self._start(recipe, env)

    def _start(self, recipe: Recipe, env: dict) -> None:
        mlflow = self.mlflow
        flat = {f"architecture.{k}": v for k, v in recipe.architecture.model_dump().items()}
        flat.update({f"training.{k}": v for k, v in recipe.training.model_dump().items()})
        flat.update({"recipe": recipe.ref, "recipe_sha256": recipe.digest, "tokenizer.vocab_size": recipe.tokenizer.vocab_size})
        mlflow.log_params(flat)
        # The libraries loaded so far (the manifest pins all the stage imports, from env/train.json).
        tags = {f"env.{k}": v for k, v in determinism.imported_distributions().items()}
        tags["env.python"] = env["python"]
        tags.update({f"determinism.{k}": v for k, v in env["determinism"].items()})
        tags.update({"host": socket.gethostname(), "cpu": platform.processor() or platform.machine()})
        mlflow.set_tags(tags)

    def log(self, metrics: dict, step: int) -> None:
        with determinism.untracked_imports():
            self.mlflow.log_metrics(metrics, step=step)

    def finish(self, artifacts: list[Path]) -> str:
        with determinism.untracked_imports():
            for p in artifacts:
                self.mlflow.log_artifact(str(p))
            self.mlflow.end_run()
        return self.run.info.run_id


def main(ref: str, root: Path) -> Path:
    recipe = load_recipe(root, ref)
    t = recipe.training
    determinism.pin(t.threads)
    settings = forge_settings.Settings.load(root)

    from tokenizers import Tokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    determinism.configure_torch(t.seed, t.threads)
    env = determinism.environment(t.threads)

    out = model_outputs(root, recipe)
    tok_path = out.tokenizer / "tokenizer.json"
    tokenizer = Tokenizer.from_file(str(tok_path))
    bos, eos = 0, 1
    train_stream, _ = token_stream(tokenizer, iter_documents(root, recipe, "train"), bos, eos)
    val_stream, val_bytes = token_stream(tokenizer, iter_documents(root, recipe, "validation"), bos, eos)
    train_w = windows(train_stream, t.seq_len)
    val_w = windows(val_stream, t.seq_len) if len(val_stream) > t.seq_len else train_w[:0]
    # Tokens of the validation windows' targets, and their share of the split's bytes, for bits/byte.
    val_tokens_total = len(val_stream)

    config = llama_config(recipe, tokenizer.get_vocab_size())
    tracker = _Tracker(recipe, settings, env)
    run = train_model(recipe, config, train_w, val_w[: t.eval_batches * t.batch_size], log=tracker.log)
    model, losses, val_losses, train_seconds = run.model, run.losses, run.val_losses, run.seconds
    n_params = sum(p.numel() for p in model.parameters())
    tokens_per_step = t.batch_size * t.seq_len
    n_windows = len(train_w)

    # --- final validation over the whole split: loss per token and bits per byte
    val_loss, val_bpb, count = bits_per_byte(model, val_w, t.batch_size, val_bytes, val_tokens_total)

    model_out, train_out = out.model, out.train
    save_safetensors(state_dict_for_save(model), out.weights)
    cfg = config.to_dict()
    cfg["dtype"] = "float32"
    write_json(model_out / "config.json", cfg)
    write_json(model_out / "generation_config.json", {
        "bos_token_id": 0, "eos_token_id": 1, "pad_token_id": 2, "do_sample": False, "max_new_tokens": 256,
    })
    write_csv(train_out / "loss.csv", ["step", "train_loss"], losses)
    write_csv(train_out / "val_loss.csv", ["step", "val_loss"], val_losses)
    metrics = {
        "parameters": n_params,
        "steps": t.steps,
        "tokens_trained": t.steps * tokens_per_step,
        "epochs": round(t.steps * t.batch_size / n_windows, 4),
        "final_train_loss": float(losses[-1][1]),
        "val_loss": round(val_loss, 6),
        "val_bits_per_byte": round(val_bpb, 6),
        "val_tokens": count,
    }
    write_json(train_out / "metrics.json", metrics)
    write_json(out.environment, env)
    tracker.log({"final_val_loss": val_loss, "val_bits_per_byte": val_bpb}, t.steps)
    run_id = tracker.finish([train_out / "loss.csv", train_out / "metrics.json"])
    write_json(out.run_info, {
        "mlflow_run_id": run_id,
        "train_seconds": round(train_seconds, 2),
        "tokens_per_second": round(t.steps * tokens_per_step / train_seconds, 1),
        "cpu_capability": determinism.cpu_capability(),
        "time_budget_s": t.time_budget_s,
        "over_budget": train_seconds > t.time_budget_s,
    })
    if train_seconds > t.time_budget_s:
        print(f"WARNING: training took {train_seconds:.0f} s, over the recipe's budget of {t.time_budget_s} s")
    return model_out


def cli(argv: list[str] | None = None) -> None:
    stage_cli("train", __doc__, main, argv)


if __name__ == "__main__":
    cli()
