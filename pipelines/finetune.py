"""``commonforge finetune BASE --data FILE``: a LoRA fine-tune of any release, private, on this machine.

    result = finetune(settings, "model/forge-tiny@1.0.0", Path("my-chats.jsonl"), name="my-tiny")
    result.release.ref   -> "model/my-tiny@1.0.0"  (provenance "finetuned", private)

The base is resolved and verified through the one loader (a revoked base is refused) and trained
in full precision. The data stays where the user put it: only its sha256 and its file name are
recorded. Training runs in its own process (``python -m pipelines.finetune SPEC``) under the
build's determinism pins, so the same base, data and settings give the same adapter bytes.

The data is one of (decided by its first non-empty line):

* chat JSON lines: ``{"messages": [{"role": "user", "content": ...}, {"role": "assistant", ...}]}``,
  rendered with the base's own chat template; the loss counts the assistant turns only (their
  text and the end-of-turn token after it);
* plain text: one example per non-empty line, the loss on all of it;
* preference pairs (``--preferences``): ``{"prompt": ..., "chosen": ..., "rejected": ...}``, trained
  with trl's DPOTrainer, the base itself (the adapter switched off) as the reference model.

Every ``heldout_every``-th example is held out (never trained on); its bits per byte (or, for
pairs, the margin log p(chosen) - log p(rejected)) are measured on the base and on the fine-tune,
so the user sees whether it learned what they wanted. Examples
longer than ``seq_len`` tokens are cut, and counted.

What is written (all or nothing): the adapter (peft's ``adapter_model.safetensors`` and
``adapter_config.json``, under ``adapter/``) into the user registry's store, with the base's
config and tokenizer files, a release entry (provenance ``finetuned``, ``private: true``), a
provenance record and a ``finetune`` record (loss, held-out bits per byte, time). The loader
merges the adapter onto the verified base when the fine-tune is loaded.

Not built yet (issue 16): full fine-tuning, quantized variants of a fine-tune, lm-eval scores
before and after, the ``finetune`` recipe kind.
"""

from __future__ import annotations

import json
import math
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from commonforge.errors import BuildError, ForgeError, InputError
from registry.schema import LoraSettings, Release

ADAPTER_DIR = "adapter"
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")
STAGE = "finetune"
ROLES = ("system", "user", "assistant")


@dataclass
class Example:
    """One training example: a conversation (chat) or a line of text."""

    line: int  # 1-based line number in the data file
    messages: list[dict] | None = None
    text: str | None = None
    pair: tuple[str, str, str] | None = None  # (prompt, chosen, rejected)


@dataclass
class Data:
    path: Path
    sha256: str
    format: str  # "chat", "text" or "preferences"
    examples: list[Example] = field(default_factory=list)

    def split(self, every: int) -> tuple[list[Example], list[Example]]:
        """(train, held out): every ``every``-th example is held out, none when there are too few."""
        if len(self.examples) < every:
            return list(self.examples), []
        held = [e for i, e in enumerate(self.examples) if i % every == every - 1]
        train = [e for i, e in enumerate(self.examples) if i % every != every - 1]
        return train, held


def _bad(path: Path, line: int, what: str, hint: str) -> InputError:
    return InputError(f"{path}:{line}: {what}", hint=hint)


def read_data(path: Path) -> Data:
    """Parse and check the data file (no torch): JSON lines of chats, or plain text lines."""
    from registry.digest import sha256_file

    path = Path(path).expanduser()
    if not path.is_file():
        raise InputError(f"{path} is not a file", hint="--data names a JSON-lines chat file or a plain text file")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise InputError(f"{path} is not UTF-8 text (byte {err.start})", hint="save the file as UTF-8") from None
    lines = text.splitlines()
    first = next((ln.strip() for ln in lines if ln.strip()), None)
    if first is None:
        raise InputError(f"{path} is empty", hint="put one example per line")
    data = Data(path=path, sha256=sha256_file(path), format="chat" if first.startswith(("{", "[")) else "text")
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        if data.format == "text":
            data.examples.append(Example(number, text=line))
            continue
        example = _json_example(path, number, line)
        kind = "preferences" if example.pair is not None else "chat"
        if not data.examples:
            data.format = kind
        elif kind != data.format:
            raise _bad(path, number, f"a {kind} line in a file of {data.format} lines",
                       "keep chats (--data) and preference pairs (--preferences) in separate files")
        data.examples.append(example)
    return data


def _json_example(path: Path, number: int, line: str) -> Example:
    hint = ('each line is {"messages": [{"role": "user", "content": "..."}, {"role": "assistant", "content": "..."}]}'
            ' or, for preferences, {"prompt": "...", "chosen": "...", "rejected": "..."}')
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as err:
        raise _bad(path, number, f"not valid JSON ({err.msg} at column {err.colno})", hint) from None
    if not isinstance(obj, dict):
        raise _bad(path, number, "a JSON line must be an object", hint)
    if {"prompt", "chosen", "rejected"} & set(obj):
        fields = [obj.get(k) for k in ("prompt", "chosen", "rejected")]
        prompt, chosen, rejected = (v if isinstance(v, str) else "" for v in fields)
        if not (prompt.strip() and chosen.strip() and rejected.strip()):
            raise _bad(path, number, "a preference pair needs a non-empty string prompt, chosen and rejected", hint)
        if chosen.strip() == rejected.strip():
            raise _bad(path, number, "the chosen and the rejected answer are identical: nothing to prefer",
                       "give two different answers, the one you want as chosen")
        return Example(number, pair=(prompt, chosen, rejected))
    messages = obj.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _bad(path, number, "no \"messages\" list", hint)
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ROLES or not isinstance(m.get("content"), str):
            raise _bad(path, number, f"message {i + 1} needs a role ({', '.join(ROLES)}) and a string content", hint)
    if not any(m["role"] == "assistant" and m["content"].strip() for m in messages):
        raise _bad(path, number, "the conversation has no assistant turn: there is nothing to learn from it",
                   "add the answer you want as an assistant message, or drop the line")
    return Example(number, messages=[{"role": m["role"], "content": m["content"]} for m in messages])


# --- the training process (torch from here on) ------------------------------------------------


def encode(tokenizer, example: Example, seq_len: int) -> tuple[list[int], list[bool], bool]:
    """(token ids, which of them the loss counts, whether it was cut to ``seq_len``)."""
    if example.text is not None:
        ids = list(tokenizer(example.text, add_special_tokens=False)["input_ids"])
        if tokenizer.bos_token_id is not None:
            ids = [tokenizer.bos_token_id, *ids]
        mask = [False] + [True] * (len(ids) - 1) if tokenizer.bos_token_id is not None else [True] * len(ids)
    else:
        ids, mask = _encode_chat(tokenizer, example)
    cut = len(ids) > seq_len
    return ids[:seq_len], mask[:seq_len], cut


def _encode_chat(tokenizer, example: Example) -> tuple[list[int], list[bool]]:
    messages = example.messages or []

    def render(msgs: list[dict], prompt: bool) -> str:
        return tokenizer.apply_chat_template(msgs, add_generation_prompt=prompt, tokenize=False)

    full = render(messages, False)
    spans = []  # character spans of the assistant turns (their text and the end-of-turn marker)
    for k, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        start, end = len(render(messages[:k], True)), len(render(messages[: k + 1], False))
        if not full.startswith(render(messages[: k + 1], False)) or end <= start:
            raise BuildError(f"line {example.line}: the chat template does not render the conversation turn "
                             "by turn, so the assistant's part cannot be told apart",
                             hint="fine-tune on plain text lines instead")
        spans.append((start, end))
    enc = tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
    ids = list(enc["input_ids"])
    mask = [any(s <= a < e for s, e in spans) for a, _ in enc["offset_mapping"]]
    return ids, mask


def _batches(encoded: list[tuple[list[int], list[bool]]], settings: LoraSettings, pad_id: int):
    """``settings.steps`` batches, the examples shuffled each epoch by a seeded generator."""
    import torch

    gen = torch.Generator().manual_seed(settings.seed)
    order: list[int] = []
    for _ in range(settings.steps):
        batch: list[tuple[list[int], list[bool]]] = []
        while len(batch) < min(settings.batch_size, len(encoded)):
            if not order:
                order = torch.randperm(len(encoded), generator=gen).tolist()
            batch.append(encoded[order.pop(0)])
        yield _collate(batch, pad_id)


def _collate(batch, pad_id: int):
    import torch

    width = max(len(ids) for ids, _ in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), width), -100, dtype=torch.long)
    attn = torch.zeros((len(batch), width), dtype=torch.long)
    for i, (row, mask) in enumerate(batch):
        ids[i, : len(row)] = torch.tensor(row)
        attn[i, : len(row)] = 1
        labels[i, : len(row)] = torch.tensor([t if m else -100 for t, m in zip(row, mask, strict=True)])
    return ids, attn, labels


def bits_per_byte(model, tokenizer, encoded: list[tuple[list[int], list[bool]]]) -> float | None:
    """Bits per UTF-8 byte of the text the loss counts (the assistant turns), summed over ``encoded``."""
    import torch

    nats, nbytes = 0.0, 0
    with torch.no_grad():
        for ids, mask in encoded:
            if len(ids) < 2:
                continue
            x = torch.tensor([ids])
            logp = torch.log_softmax(model(input_ids=x).logits[0, :-1].float(), dim=-1)
            target = x[0, 1:]
            counted = torch.tensor(mask[1:])
            nats -= float(logp.gather(1, target[:, None])[:, 0][counted].sum())
            nbytes += len(tokenizer.decode([t for t, m in zip(ids[1:], mask[1:], strict=True) if m]).encode("utf-8"))
    return nats / (math.log(2) * nbytes) if nbytes else None


def check_targets(model, targets: list[str]) -> None:
    names = {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()}
    missing = [t for t in targets if t not in names]
    if missing:
        linear = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if type(m).__name__ == "Linear"})
        raise InputError(f"LoRA target(s) {', '.join(missing)} are not modules of this model",
                         hint="choose from its linear layers: " + ", ".join(linear))


def train(spec: dict) -> dict:
    """The training process: load the verified base, train the adapter, write it to ``spec['out']``."""
    from pipelines import determinism

    settings = LoraSettings.model_validate(spec["settings"])
    determinism.pin(settings.threads)
    determinism.configure_torch(settings.seed, settings.threads)
    from commonforge.settings import Settings
    from serving.loader import load_release

    forge = Settings.load(Path(spec["root"]))
    base = load_release(spec["base"], variant=None, device="cpu", dtype="float32", settings=forge)
    if base.release is None or base.release.release_digest != spec["base_sha256"]:
        raise BuildError(f"{spec['base']} changed while the fine-tune started", hint="run the command again")
    model, tokenizer = base.model, base.tokenizer
    check_targets(model, settings.target_modules)
    data = read_data(Path(spec["data"]))
    if data.sha256 != spec["data_sha256"]:
        raise BuildError(f"{data.path} changed while the fine-tune started", hint="run the command again")
    if data.format != "text" and not getattr(tokenizer, "chat_template", None):
        raise InputError(f"{base.ref} has no chat template, so {data.format} data cannot be rendered for it",
                         hint="fine-tune it on plain text lines instead")
    seq_len = min(settings.seq_len, base.context_length)
    train_ex, held_ex = data.split(settings.heldout_every)
    # The run goes into the user registry's own tracking store (unless MLFLOW_TRACKING_URI names
    # another): a private fine-tune's run does not belong in a checkout's history.
    from commonforge.settings import user_root

    tracker = _Tracker(Settings.load(user_root()), spec, settings)
    out = Path(spec["out"])
    model.eval()
    if data.format == "preferences":
        record = _dpo(model, tokenizer, train_ex, held_ex, settings, seq_len, tracker, out.parent / "trl")
    else:
        record = _sft(model, tokenizer, train_ex, held_ex, settings, seq_len, tracker)
    model = record.pop("model")
    write_adapter(model, out, spec["base"])
    record.update({"data_file": data.path.name, "steps": settings.steps,
                   "environment": determinism.environment(settings.threads)})
    metrics = {k: v for k, v in record.items() if k.startswith(("heldout_bpb", "preference_margin"))}
    record["mlflow_run_id"] = tracker.finish(metrics)
    (out / "finetune.json").write_text(json.dumps(record, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    from pipelines.stage import record_imports

    record_imports(out / "env.json", STAGE)
    return record


def _lora(settings: LoraSettings):
    from peft import LoraConfig

    return LoraConfig(r=settings.rank, lora_alpha=settings.alpha, target_modules=list(settings.target_modules),
                      lora_dropout=0.0, bias="none", task_type="CAUSAL_LM")


def _over_budget(settings: LoraSettings, started: float, step: int) -> None:
    if time.perf_counter() - started > settings.time_budget_s:
        raise BuildError(f"step {step} of {settings.steps} passed the time budget of {settings.time_budget_s} s; "
                         "nothing was written", hint="fewer --steps, a smaller --batch-size or a larger --time-budget")


def _diverged(value: float, step: int) -> None:
    if not math.isfinite(value):
        raise BuildError(f"the loss is {value} at step {step}: training diverged, nothing was written",
                         hint="lower --learning-rate or --rank and run again")


def _sft(model, tokenizer, train_ex: list[Example], held_ex: list[Example], settings: LoraSettings, seq_len: int,
         tracker) -> dict:
    """Supervised LoRA training on chats or text: our own loop (the loss masked to what is learned)."""
    import torch
    from peft import get_peft_model
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    train_enc: list[tuple[list[int], list[bool]]] = []
    held_enc: list[tuple[list[int], list[bool]]] = []
    truncated = 0
    for examples, into in ((train_ex, train_enc), (held_ex, held_enc)):
        for ex in examples:
            ids, mask, cut = encode(tokenizer, ex, seq_len)
            truncated += cut
            if any(mask[1:]):
                into.append((ids, mask))
    if truncated:
        print(f"WARNING: {truncated} example(s) longer than {seq_len} tokens were cut to {seq_len}", file=sys.stderr)
    if not train_enc:
        raise InputError(f"no example has text left to learn from after cutting to {seq_len} tokens",
                         hint="use shorter examples, or a larger --seq-len")
    bpb_base = bits_per_byte(model, tokenizer, held_enc)
    torch.manual_seed(settings.seed)  # LoRA's A matrices are drawn from torch's generator
    with warnings.catch_warnings():  # transformers' own deprecation notice, raised inside peft
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        model = get_peft_model(model, _lora(settings))
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=settings.learning_rate, weight_decay=0.0)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    losses: list[float] = []
    started = time.perf_counter()
    with Progress(TextColumn("finetune"), BarColumn(), TextColumn("{task.completed}/{task.total} steps"),
                  TextColumn("loss {task.fields[loss]}"), TimeElapsedColumn(), transient=True,
                  disable=not sys.stderr.isatty()) as bar:
        task = bar.add_task("train", total=settings.steps, loss="-")
        for step, (ids, attn, labels) in enumerate(_batches(train_enc, settings, pad), start=1):
            loss = model(input_ids=ids, attention_mask=attn, labels=labels).loss
            value = float(loss.detach())
            _diverged(value, step)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(value)
            tracker.log({"loss": value}, step)
            bar.update(task, advance=1, loss=f"{value:.3f}")
            _over_budget(settings, started, step)
    seconds = time.perf_counter() - started
    model.eval()
    return {"model": model, "train_examples": len(train_enc), "heldout_examples": len(held_enc),
            "truncated_examples": truncated, "seconds": round(seconds, 3), "loss_first": losses[0],
            "loss_last": losses[-1], "heldout_bpb_base": bpb_base,
            "heldout_bpb_finetuned": bits_per_byte(model, tokenizer, held_enc)}


def response_logp(model, tokenizer, prompt: str, answer: str, seq_len: int) -> float:
    """log p(answer | prompt) under the chat template: the assistant turn and its end-of-turn token."""
    import torch

    ids, mask, _ = encode(tokenizer, Example(0, messages=[{"role": "user", "content": prompt},
                                                          {"role": "assistant", "content": answer}]), seq_len)
    x = torch.tensor([ids])
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=x).logits[0, :-1].float(), dim=-1)
    picked = logp.gather(1, x[0, 1:, None])[:, 0]
    return float(picked[torch.tensor(mask[1:])].sum())


def preference_margin(model, tokenizer, pairs: list[Example], seq_len: int) -> float:
    """The mean of log p(chosen) - log p(rejected) over ``pairs``: DPO should raise it."""
    total = 0.0
    for ex in pairs:
        assert ex.pair is not None, "preference_margin takes preference pairs"
        prompt, chosen, rejected = ex.pair
        total += (response_logp(model, tokenizer, prompt, chosen, seq_len)
                  - response_logp(model, tokenizer, prompt, rejected, seq_len))
    return total / len(pairs)


def _dpo(model, tokenizer, train_ex: list[Example], held_ex: list[Example], settings: LoraSettings, seq_len: int,
         tracker, scratch: Path) -> dict:
    """Direct preference optimization with trl's DPOTrainer on a LoRA adapter (the reference model is
    the base itself: the adapter switched off)."""
    import torch
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import DPOConfig, DPOTrainer

    measured, split = (held_ex, "held-out") if held_ex else (train_ex, "training")
    margin_base = preference_margin(model, tokenizer, measured, seq_len)
    truncated = 0
    for ex in train_ex:
        assert ex.pair is not None
        longest = max(len(encode(tokenizer, Example(ex.line, messages=[{"role": "user", "content": ex.pair[0]},
                                                                       {"role": "assistant", "content": a}]),
                                 seq_len)[0]) for a in ex.pair[1:])
        truncated += longest >= seq_len
    if truncated:
        print(f"WARNING: {truncated} pair(s) reach {seq_len} tokens and are cut to {seq_len}", file=sys.stderr)
    rows = [{"prompt": [{"role": "user", "content": ex.pair[0]}],
             "chosen": [{"role": "assistant", "content": ex.pair[1]}],
             "rejected": [{"role": "assistant", "content": ex.pair[2]}]} for ex in train_ex if ex.pair is not None]
    losses: list[float] = []
    started = time.perf_counter()

    class Watch(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                value = float(logs["loss"])
                _diverged(value, state.global_step)
                losses.append(value)
                tracker.log({"loss": value, "margin": float(logs.get("rewards/margins", 0.0))}, state.global_step)

        def on_step_end(self, args, state, control, **kwargs):
            _over_budget(settings, started, state.global_step)

    config = DPOConfig(output_dir=str(scratch), per_device_train_batch_size=min(settings.batch_size, len(rows)),
                       max_steps=settings.steps, learning_rate=settings.learning_rate, beta=settings.beta,
                       max_length=seq_len, seed=settings.seed, data_seed=settings.seed, report_to="none",
                       save_strategy="no", logging_steps=1, use_cpu=True, dataloader_num_workers=0,
                       disable_tqdm=not sys.stderr.isatty())
    torch.manual_seed(settings.seed)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        trainer = DPOTrainer(model=model, args=config, train_dataset=Dataset.from_list(rows), processing_class=tokenizer,
                             peft_config=_lora(settings), callbacks=[Watch()])
        trainer.train()
    seconds = time.perf_counter() - started
    tuned = trainer.model
    tuned.eval()
    return {"model": tuned, "train_examples": len(rows), "heldout_examples": len(held_ex),
            "truncated_examples": truncated, "seconds": round(seconds, 3), "loss_first": losses[0],
            "loss_last": losses[-1], "preference_margin_base": margin_base,
            "preference_margin_finetuned": preference_margin(tuned, tokenizer, measured, seq_len),
            "margin_split": split}


def write_adapter(model, out: Path, base_ref: str) -> None:
    """peft's adapter files, with a config whose bytes depend on nothing but the settings."""
    from safetensors.torch import save_file

    adapter = out / ADAPTER_DIR
    adapter.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(adapter), safe_serialization=True)
    cfg_path = adapter / "adapter_config.json"
    cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    cfg["base_model_name_or_path"] = base_ref
    cfg["target_modules"] = sorted(cfg.get("target_modules") or [])
    cfg_path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    # Re-save the tensors in sorted order with fixed metadata: the same bytes in every process.
    from safetensors.torch import load_file

    weights = load_file(str(adapter / "adapter_model.safetensors"))
    save_file({k: weights[k].contiguous() for k in sorted(weights)}, str(adapter / "adapter_model.safetensors"),
              metadata={"format": "pt"})
    extra = [p.name for p in adapter.iterdir() if p.name not in ADAPTER_FILES]
    for name in extra:
        (adapter / name).unlink()


class _Tracker:
    """The fine-tune's MLflow run in the registry's own tracking store: settings and losses, never data."""

    def __init__(self, forge, spec: dict, settings: LoraSettings) -> None:
        from pipelines import determinism
        from pipelines.stage import mlflow_experiment

        with determinism.untracked_imports():
            import mlflow

            self.mlflow = mlflow
            self.run = mlflow.start_run(experiment_id=mlflow_experiment(forge, f"finetune/{spec['name']}"),
                                        run_name=f"model/{spec['name']}@{spec['version']}")
            mlflow.log_params({f"lora.{k}": v for k, v in settings.model_dump().items()}
                              | {"base": spec["base"], "base_sha256": spec["base_sha256"],
                                 "data_sha256": spec["data_sha256"]})
            mlflow.set_tags({"commonforge.private": "true"})

    def log(self, metrics: dict, step: int) -> None:
        from pipelines import determinism

        with determinism.untracked_imports():
            self.mlflow.log_metrics(metrics, step=step)

    def finish(self, metrics: dict) -> str:
        from pipelines import determinism

        with determinism.untracked_imports():
            self.mlflow.log_metrics({k: v for k, v in metrics.items() if v is not None})
            self.mlflow.end_run()
        return str(self.run.info.run_id)


# --- the command: check, train in a child process, write the private release -----------------


@dataclass
class FinetuneResult:
    release: Release
    root: Path  # the user registry it was written to
    record: dict


def finetune(forge, base: str, data_path: Path, *, name: str | None = None, version: str = "1.0.0",
             settings: LoraSettings | None = None, allow_revoked: bool = False,
             preferences: bool | None = None) -> FinetuneResult:
    """Check everything, train in a child process, then write the private release into the user
    registry (store first, the entry last: an interruption leaves only unreferenced blobs)."""
    import getpass
    import shutil
    import subprocess
    import tempfile

    from commonforge import __version__
    from commonforge import settings as forge_settings
    from commonforge.machine import machine_info
    from pipelines.manifest import lock_pins, locked_environment
    from pipelines.workspace import child_env
    from registry import Registry, Store
    from registry.digest import sha256_file
    from registry.refs import Ref
    from registry.schema import (
        MANIFEST_SCHEMA,
        Artifact,
        BuildManifest,
        FinetunePin,
        FinetuneRecord,
        ProvenanceRecord,
        utc_now,
    )
    from trust.status import for_use

    settings = settings or LoraSettings()
    data = read_data(data_path)  # bad data fails here, before anything loads
    if preferences is not None and preferences != (data.format == "preferences"):
        raise InputError(f"{data.path} holds {data.format} lines, but was given as "
                         f"{'--preferences' if preferences else '--data'}",
                         hint="--data takes chats or text lines, --preferences prompt/chosen/rejected pairs")
    base_release, status = for_use(forge.root, base, allow_revoked=allow_revoked)
    if base_release.manifest.provenance == "finetuned":
        raise InputError(f"{base_release.ref} is itself a fine-tune; fine-tuning a fine-tune is not supported yet",
                         hint=f"fine-tune its base, {base_release.manifest.base_model}, on the combined data")
    name = name or f"{base_release.name}-{_slug(data.path.stem)}"
    user = forge_settings.user_root()
    reg = Registry(user)
    try:
        ref = Ref.parse(f"model/{name}@{version}")
    except ForgeError as err:
        raise InputError(f"cannot name the fine-tune model/{name}@{version}: {err}", hint="choose --name") from None
    base_files = {a.path: a for a in base_release.manifest.artifacts
                  if a.variant is None and "/" not in a.path and a.path in (*_SHARED, "config.json")}
    base_store = Store(forge.layer(status.root).store_dir)
    for a in base_files.values():
        base_store.path(a.sha256, what=f"{base_release.ref}:{a.path}")  # verified before any training
    (user / ".forge").mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="finetune-", dir=user / ".forge"))
    try:
        spec = {"root": str(forge.root), "base": base_release.ref, "base_sha256": base_release.release_digest,
                "data": str(data.path), "data_sha256": data.sha256, "settings": settings.model_dump(mode="json"),
                "name": name, "version": version, "out": str(work / "out")}
        (work / "spec.json").write_text(json.dumps(spec), encoding="utf-8")
        proc = subprocess.run([sys.executable, "-m", "pipelines.finetune", str(work / "spec.json")],
                              cwd=forge.root, env=child_env())
        if proc.returncode != 0:
            # the child's exit code says whose fault it was: 2 is bad input (kept), anything else a failure
            error = InputError if proc.returncode == InputError.exit_code else BuildError
            raise error(f"fine-tuning {base_release.ref} failed (exit code {proc.returncode}); nothing was written",
                        hint="read the message above; fix the cause and run the command again")
        out = work / "out"
        record = json.loads((out / "finetune.json").read_text(encoding="utf-8"))
        environment = None
        if (forge.root / "requirements.lock").is_file() and lock_pins(forge.root):
            environment = locked_environment(forge.root, record["environment"], [out / "env.json"])
        artifacts = [Artifact(path=a.path, sha256=a.sha256, size=a.size, stage=STAGE) for a in base_files.values()]
        adapter = {f"{ADAPTER_DIR}/{n}": out / ADAPTER_DIR / n for n in ADAPTER_FILES}
        artifacts += [Artifact(path=rel, sha256=sha256_file(p), size=p.stat().st_size, stage=STAGE)
                      for rel, p in adapter.items()]
        manifest = BuildManifest(
            schema_version=MANIFEST_SCHEMA, name=name, version=version, provenance="finetuned",
            license=base_release.manifest.license, base_model=base_release.ref, private=True,
            finetune=FinetunePin(base_sha256=base_release.release_digest, method="lora",
                                 objective="dpo" if data.format == "preferences" else "sft",
                                 data_sha256=data.sha256, data_format=data.format, settings=settings),
            environment=environment, artifacts=sorted(artifacts, key=lambda a: a.path))
        release = Release.from_manifest(manifest)
        existing = reg.entry_path(ref)
        if existing.exists():
            current = reg.release(str(ref))
            if current.release_digest != release.release_digest:
                raise InputError(f"{current.ref} already exists with digest {current.release_digest}, and this "
                                 f"fine-tune came out as {release.release_digest}",
                                 hint="give it a new --version (a release is never rewritten)")
        _ensure_bootstrap(user, status.root or forge.root)
        store = Store(user / ".forge" / "store")
        for a in base_files.values():
            store.put_file(base_store.path(a.sha256, what=f"{base_release.ref}:{a.path}"), expected=a.sha256)
        for rel, p in adapter.items():
            store.put_file(p, expected=manifest.artifact(rel).sha256)
        if not existing.exists():
            reg.save_release(release)
            reg.save_record(release, "provenance", ProvenanceRecord(
                release_digest=release.release_digest, built_by=getpass.getuser(), created_at=utc_now(),
                machine=machine_info(), stage_seconds={STAGE: record["seconds"]},
                mlflow_run_id=record.get("mlflow_run_id"), forge_version=__version__))
        reg.save_record(release, "finetune", FinetuneRecord(
            release_digest=release.release_digest, trained_at=utc_now(),
            **{k: record[k] for k in FinetuneRecord.model_fields if k in record}))
        return FinetuneResult(release, user, record)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _ensure_bootstrap(user: Path, base_root: Path) -> None:
    """A user registry made by a fine-tune (not by a pull) starts under the bootstrap policy of the
    registry its base came from: every release in it is then a draft, as a private one must be."""
    from registry.fsutil import atomic_write_bytes

    target = user / "registry" / "governance" / "policy" / "0.yaml"
    source = Path(base_root) / "registry" / "governance" / "policy" / "0.yaml"
    if not target.exists() and source.is_file():
        atomic_write_bytes(target, source.read_bytes())


_SHARED = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "generation_config.json",
           "special_tokens_map.json")


def _slug(stem: str) -> str:
    import re

    slug = re.sub(r"[^a-z0-9]+", "-", stem.lower()).strip("-")
    return slug[:40] or "ft"


def cli(argv: list[str] | None = None) -> None:
    """``python -m pipelines.finetune SPEC.json``: the training process (started by :func:`finetune`)."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m pipelines.finetune", description=cli.__doc__)
    parser.add_argument("spec", help="the JSON file describing the fine-tune (written by `commonforge finetune`)")
    args = parser.parse_args(argv)
    from commonforge import settings

    settings.apply_privacy()
    spec = json.loads(Path(args.spec).read_text(encoding="utf-8"))
    try:
        record = train(spec)
    except ForgeError as err:
        print(f"finetune failed: {err}", file=sys.stderr)
        sys.exit(err.exit_code)
    print(f"trained {record['steps']} steps in {record['seconds']:.1f} s: loss {record['loss_first']:.3f} -> "
          f"{record['loss_last']:.3f}", file=sys.stderr)


if __name__ == "__main__":
    cli()
