"""The dry-run build check: does a contribution's training start, stay finite and fit a budget?

A new recipe is built the way ``commonforge build`` builds it (``dvc repro`` of its ``train``
stage and the data stages upstream of it), cut to a few optimizer steps; a new dataset is built
under a forge-tiny-sized recipe (forge-tiny@1 with only its dataset swapped). The point is to
find, before a maintainer spends hours on a real build, the contributions that cannot build at
all: a stage that crashes on the new data, a shape the schema let through but the model code
refuses, a learning rate that sends the loss to NaN, a dataset too slow to prepare.

Isolation, because CI and a contributor's own checkout both run it:

* a temporary ``git worktree`` of the checkout's HEAD (removed afterwards, also on failure
  or interrupt), with the entry files overlaid from the checkout so an uncommitted entry is
  checked as it is on disk;
* the cut (steps, warm-up, threads) and a ``params.yaml`` listing only what this build needs
  are written into the worktree only: nothing is committed, nothing in the checkout changes;
* its own DVC cache (a temporary folder; never the checkout's ``.dvc/cache``), its own MLflow
  database, Hugging Face home and store, all under the same temporary folder; pinned sources
  come from the download cache the check is given (``CheckInput.cache``);
* the build (``dvc repro``, data stages included) runs in its own process group under a
  wall-clock budget (option ``budget_s``, default 300 s: five minutes on two cores); past it
  the whole group is killed and the check fails.

What is judged, from the files the train stage writes (``build/models/<recipe>/train/``:
``loss.csv`` has every step's training loss, ``val_loss.csv`` the validation losses,
``metrics.json`` and ``run.json`` the summary): the build finished, every logged loss is
finite, and it stayed within the budget. Options (``CheckInput.options``): ``budget_s``,
``steps`` (default 5), ``dvc_cache`` (a DVC cache folder to share between dry runs, e.g. a CI
cache; the data stages are then restored from DVC's run cache instead of re-run).

A new dataset that a recipe added by the same change trains on is not dry-run on its own: the
recipe's dry run builds it (skipped, "covered by the dry run of recipe/...").
"""

from __future__ import annotations

import collections
import csv
import logging
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml

from commonforge.errors import ForgeError, InputError
from contributions.report import CheckInput, CheckResult, Problem
from pipelines.manifest import model_outputs, read_json
from pipelines.workspace import child_env, git_repo
from registry import Registry
from registry.refs import Ref
from registry.schema import Recipe
from registry.yamlio import save_model

log = logging.getLogger(__name__)

CHECK = "dry-run build"
DEFAULT_BUDGET_S = 300.0  # the budget: five minutes on two cores, data stages included
DEFAULT_STEPS = 5  # optimizer steps of the cut training: enough to see a loss move or blow up
TINY_RECIPE = "recipe/forge-tiny@1"  # the shape a new dataset is dry-run under
DATASET_RECIPE_NAME = "dry-run"  # the recipe written (in the worktree only) for a dataset's dry run
MAX_THREADS = 2  # torch intra-op threads of the dry run: CI runners and this machine have two cores
TAIL_LINES = 40  # lines of the build's output kept for a failure report
KILL_GRACE_S = 5.0  # between SIGTERM and SIGKILL of the build's process group
_STAGE_RE = re.compile(r"Running stage '([^']+)'")


@dataclass(frozen=True)
class DryRunPlan:
    """What one dry run builds: the (cut) recipe as written into the worktree and its DVC target."""

    recipe: Recipe  # the cut recipe, as the train stage will read it
    target: str  # e.g. "train@forge-tiny"
    original_steps: int  # the steps the contribution asks for (the dry run runs recipe.training.steps)


@dataclass
class BuildRun:
    """How the ``dvc repro`` process ended."""

    returncode: int | None  # None: killed at the budget
    seconds: float
    tail: list[str]  # last lines of its output (stdout and stderr, interleaved)
    stages: list[str]  # the stages DVC ran, in order
    pgid: int  # the process group it ran in (gone once this returns)

    @property
    def timed_out(self) -> bool:
        return self.returncode is None


def _covering_recipe(root: Path, dataset_ref: str, added: Any) -> str | None:
    """A recipe the same change adds that trains on ``dataset_ref``: its dry run builds the dataset too."""
    for other in added:
        try:
            parsed = Ref.parse(str(other))
            if parsed.kind == "recipe" and parsed.pinned and dataset_ref in Registry(root).recipe(str(parsed)).datasets:
                return str(parsed)
        except (ForgeError, ValueError):
            continue  # a recipe that does not load gets its own dry run (and schema) verdict
    return None


def check_dry_run(inp: CheckInput) -> CheckResult:
    """Dry-run build of the recipe or dataset ``inp.ref`` names (see the module docstring).

    Passed: the cut build finished with a finite loss at every logged step within the budget.
    Failed: it crashed, diverged or ran out of time (with the last lines of its output).
    Skipped: the entry is not a recipe or dataset, the dry run was switched off
    (``options["dry_run"] is False``), or the entry does not load (the schema check says why).
    Raises InputError only for bad options or a checkout that is not a git repository.
    """
    started = time.perf_counter()
    options = inp.options
    if options.get("dry_run") is False:
        return CheckResult.skipped(CHECK, "the dry-run build is switched off (dry_run: false)")
    ref = Ref.parse(inp.ref)
    if ref.kind not in ("recipe", "dataset"):
        return CheckResult.skipped(CHECK, f"{ref.kind} entries have no dry-run build")
    budget = _positive(options.get("budget_s", DEFAULT_BUDGET_S), "budget_s")
    steps = int(_positive(options.get("steps", DEFAULT_STEPS), "steps"))
    root = Path(inp.root).resolve()
    if ref.kind == "dataset":
        covering = _covering_recipe(root, inp.ref, options.get("added_refs") or ())
        if covering:
            return CheckResult.skipped(CHECK, f"covered by the dry run of {covering}, which this change adds and "
                                              f"which trains on {inp.ref}", covered_by=covering)
    repo = git_repo(root)
    shared_cache = _shared_cache(root, options.get("dvc_cache"))

    tmp = Path(tempfile.mkdtemp(prefix="commonforge-dryrun-"))
    work = tmp / "tree"
    added = False
    try:
        try:
            repo.git.worktree("add", "--detach", str(work), "HEAD")
        except Exception as err:  # noqa: BLE001 - gitpython's GitCommandError, or no HEAD yet
            raise InputError(f"cannot make a worktree of {root}'s HEAD: {err}",
                             hint="the dry run builds a commit: commit the entry (or check a clone with commits)") from None
        added = True
        _overlay_entries(root, work, ref)
        try:
            plan = _plan(work, ref, steps)
        except (ForgeError, ValueError) as err:  # pydantic's ValidationError is a ValueError
            text = (err.message if isinstance(err, ForgeError) else str(err)).replace(f"{work}/", "")
            why = " ".join(line.strip() for line in text.splitlines() if line.strip())[:300]
            return replace(CheckResult.skipped(CHECK, f"not built: {inp.ref} does not load ({why}); "
                                               "the schema check reports it", ref=inp.ref),
                           seconds=time.perf_counter() - started)
        _write_params(work, plan.recipe)
        _configure_dvc(work, shared_cache or tmp / "dvc-cache")
        log.info("dry run of %s: dvc repro %s, %d steps, budget %.0f s (in %s)",
                 inp.ref, plan.target, plan.recipe.training.steps, budget, work)
        run = _run_build(work, plan.target, _build_env(work, tmp, inp.cache), budget)
        result = _judge(work, inp, plan, run, budget)
    finally:
        if added:
            _remove_worktree(root, work)
        shutil.rmtree(tmp, ignore_errors=True)
    return replace(result, seconds=time.perf_counter() - started)


# --- preparing the worktree ---------------------------------------------------------------------


def _positive(value: Any, key: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if not number > 0 or math.isinf(number):
        raise InputError(f"dry-run option {key} must be a positive number, got {value!r}",
                         hint=f"pass e.g. {key}=300")
    return number


def _shared_cache(root: Path, value: Any) -> Path | None:
    """The ``dvc_cache`` option as a folder, refused when it is the checkout's own DVC cache."""
    if value is None:
        return None
    path = Path(value).resolve()
    if path == (root / ".dvc" / "cache").resolve():
        raise InputError(f"dvc_cache {path} is the checkout's own DVC cache",
                         hint="give the dry run a cache folder of its own (it never writes the checkout's)")
    path.mkdir(parents=True, exist_ok=True)
    return path


def _overlay_entries(root: Path, work: Path, ref: Ref) -> None:
    """Copy the entry (and a recipe's dataset entries) from the checkout as they are on disk.

    The worktree is HEAD; a contributor checking before committing has the entry only in the
    working tree. Committed entries are the same bytes, so in CI this changes nothing.
    """
    checkout, tree = Registry(root), Registry(work)
    refs = [ref]
    if ref.kind == "recipe":
        try:
            refs += [Ref.parse(d) for d in checkout.recipe(str(ref)).datasets]
        except ForgeError:
            pass  # the recipe does not load: _plan reports it from the worktree's copy
    for r in refs:
        src = checkout.entry_path(r)
        if src.is_file() and not src.is_symlink():
            dest = tree.entry_path(r)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dest)


def _plan(work: Path, ref: Ref, steps: int) -> DryRunPlan:
    """The cut recipe for ``ref``, written over its entry in the worktree (never committed)."""
    reg = Registry(work)
    if ref.kind == "recipe":
        recipe = reg.recipe(str(ref))
        for d in recipe.datasets:
            reg.dataset(d)  # a missing or broken dataset: reported by the schema check, not built
        data = recipe.model_dump(mode="json", exclude_none=True)
    else:
        dataset = reg.dataset(str(ref))
        data = reg.recipe(TINY_RECIPE).model_dump(mode="json", exclude_none=True)
        version = _free_version(reg, DATASET_RECIPE_NAME)
        data.update({
            "name": DATASET_RECIPE_NAME, "version": version, "datasets": [dataset.ref],
            "title": f"dry run of {dataset.ref}",
            "description": f"forge-tiny@1 with {dataset.ref} as its data: the dry-run build of a new dataset.",
        })
    original_steps = int(data["training"]["steps"])
    data["training"] = _cut_training(data["training"], steps)
    cut = Recipe.model_validate(data)
    save_model(cut, reg.entry_path(Ref.parse(cut.ref)))
    return DryRunPlan(cut, f"train@{cut.name}", original_steps)


def _cut_training(training: dict, steps: int) -> dict:
    """A few steps with the recipe's own schedule shape: warm-up shortened, one evaluation at the end.

    Warm-up keeps at most half the cut steps, so the recipe's peak learning rate is reached
    (a divergence from too high a rate shows in a dry run); threads are capped at two.
    """
    out = dict(training)
    n = min(steps, int(training["steps"]))
    out["steps"] = n
    out["warmup_steps"] = min(int(training.get("warmup_steps", 0)), n // 2)
    out["eval_every"] = n
    out["eval_batches"] = 1
    out["threads"] = min(int(training.get("threads", MAX_THREADS)), MAX_THREADS)
    return out


def _free_version(reg: Registry, name: str) -> str:
    versions = [v for v in reg.versions("recipe", name) if v.isdigit()]
    return str(max(map(int, versions), default=0) + 1)


def _write_params(work: Path, recipe: Recipe) -> None:
    """params.yaml with just this recipe and its datasets: DVC then knows no other stage."""
    datasets = [Ref.parse(d) for d in recipe.datasets]
    params = {
        "datasets": {d.name: {"version": _version_value(d.version)} for d in datasets},
        "recipes": {recipe.name: {"version": _version_value(recipe.version)}},
        "training_data": {f"{recipe.name}.{d.name}": {"recipe": recipe.name, "dataset": d.name} for d in datasets},
    }
    (work / "params.yaml").write_text("# written by the dry-run check, in its worktree only\n"
                                      + yaml.safe_dump(params, sort_keys=False), encoding="utf-8")


def _version_value(version: str | None) -> int | str:
    # params.yaml writes whole versions as numbers ({version: 1}); dvc.yaml interpolates either.
    return int(version) if version and version.isdigit() else str(version)


def _configure_dvc(work: Path, cache: Path) -> None:
    """The worktree's DVC cache (.dvc/config.local: untracked, gone with the worktree).

    The local config outranks a user's global one, so no ``cache.dir`` set there applies.
    """
    cache.mkdir(parents=True, exist_ok=True)
    (work / ".dvc" / "config.local").write_text(f"[cache]\n    dir = {cache}\n", encoding="utf-8")


def _build_env(work: Path, tmp: Path, cache: Path | None) -> dict[str, str]:
    """The build's environment: the worktree as root, every state folder under ``tmp``."""
    env = child_env()
    env.update({
        "COMMONFORGE_ROOT": str(work),
        "COMMONFORGE_STORE": str(tmp / "store"),
        "COMMONFORGE_DVC_REMOTE": str(tmp / "dvc-remote"),
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp / 'mlflow.db'}",
        "HF_HOME": str(tmp / "hf"),
        # DVC's per-repository index and locks, otherwise under /var/tmp/dvc and kept forever
        "DVC_SITE_CACHE_DIR": str(tmp / "dvc-site"),
        "PYTHONUNBUFFERED": "1",
        "DVC_NO_ANALYTICS": "1",
        "DVC_NO_UPDATE_CHECK": "1",
    })
    # DVC's own process (hashing, checkout) on the same two cores; the stages pin theirs.
    env.update({var: str(MAX_THREADS) for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS",
                                                   "OPENBLAS_NUM_THREADS", "RAYON_NUM_THREADS")})
    if cache is not None:
        env["COMMONFORGE_CACHE"] = str(Path(cache).resolve())
    return env


def _remove_worktree(root: Path, work: Path) -> None:
    try:
        git_repo(root).git.worktree("remove", "--force", str(work))
    except Exception:  # noqa: BLE001 - fall back to deleting the folder and pruning the record
        shutil.rmtree(work, ignore_errors=True)
        subprocess.run(["git", "worktree", "prune"], cwd=root, capture_output=True, check=False)


# --- running the build ----------------------------------------------------------------------------


def _run_build(work: Path, target: str, env: dict[str, str], budget: float) -> BuildRun:
    """``dvc repro TARGET`` in its own process group; the group is killed at the budget."""
    cmd = [sys.executable, "-m", "dvc", "repro", target]
    tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
    stages: list[str] = []
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, errors="replace", start_new_session=True)
    pgid = proc.pid  # start_new_session: the leader's pid is the group's id

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            line = line.rstrip("\n")
            # tqdm redraws with carriage returns: keep the last state of the line
            tail.append(line.rsplit("\r", 1)[-1])
            log.debug("dry run [%5.1f s] %s", time.perf_counter() - started, tail[-1])
            m = _STAGE_RE.search(line)
            if m:
                stages.append(m.group(1))
                log.info("dry run: stage %s (%.0f s in)", m.group(1), time.perf_counter() - started)

    reader = threading.Thread(target=read, name="dry-run-output", daemon=True)
    reader.start()
    returncode: int | None
    try:
        returncode = proc.wait(timeout=budget)
    except subprocess.TimeoutExpired:
        returncode = None
        log.info("dry run: over the budget of %.0f s; stopping the build", budget)
    finally:
        # Also after a normal exit: nothing the build started may outlive the check.
        _kill_group(pgid, proc)
    reader.join(timeout=KILL_GRACE_S)
    return BuildRun(returncode, time.perf_counter() - started, list(tail), stages, pgid)


def _kill_group(pgid: int, proc: subprocess.Popen) -> None:
    """SIGTERM the build's process group, then SIGKILL what is left after a grace period.

    Returns once the leader is reaped and no member of the group is still running.
    """
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            break  # the group is gone
        deadline = time.monotonic() + KILL_GRACE_S
        while time.monotonic() < deadline:
            if proc.poll() is not None and not _group_alive(pgid):
                break
            time.sleep(0.05)
        else:
            continue  # still running: the next, harder signal
        break
    proc.wait()


def _group_alive(pgid: int) -> bool:
    """Whether a process of the group still runs (zombies waiting for their reaper do not count).

    Linux: from /proc, since a killed stage's zombie still belongs to the group until PID 1
    reaps it. Elsewhere: whether the group can be signalled at all.
    """
    proc_dir = Path("/proc")
    if not (proc_dir / "self" / "stat").is_file():
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    for stat in proc_dir.glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()  # after "pid (comm)": state ppid pgrp ...
        except OSError:
            continue  # exited while we looked
        if len(fields) > 2 and fields[2] == str(pgid) and fields[0] != "Z":
            return True
    return False


# --- judging it -----------------------------------------------------------------------------------


def _judge(work: Path, inp: CheckInput, plan: DryRunPlan, run: BuildRun, budget: float) -> CheckResult:
    recipe = plan.recipe
    details: dict[str, Any] = {
        "ref": inp.ref, "recipe": recipe.ref, "target": plan.target, "steps_planned": recipe.training.steps,
        "recipe_steps": plan.original_steps, "budget_s": budget, "build_seconds": round(run.seconds, 1),
        "stages": run.stages, "worktree": str(work),  # removed by the time the result is read
    }
    tail = "\n".join(run.tail[-15:])
    if run.timed_out:
        details.update(output_tail=run.tail, killed=True, process_group=run.pgid)
        return CheckResult.failed(CHECK, f"over budget: stopped after {run.seconds:.0f} s (budget {budget:.0f} s)", [
            Problem(f"the dry-run build of {inp.ref} ({recipe.training.steps} steps) ran past its budget of "
                    f"{budget:.0f} s and was stopped; last stage: {run.stages[-1] if run.stages else 'none started'}"
                    f"\n{tail}",
                    fix="make it cheaper to build: a smaller dataset or shape, or fewer tokens per step",
                    path=inp.path),
        ], **details)
    if run.returncode != 0:
        details["output_tail"] = run.tail
        return CheckResult.failed(CHECK, f"the build failed (exit {run.returncode})", [
            Problem(f"`dvc repro {plan.target}` of {inp.ref} failed with exit code {run.returncode} "
                    f"in stage {run.stages[-1] if run.stages else '(none)'}:\n{tail}",
                    fix="reproduce it with `commonforge build` on the entry and fix what the stage's error names",
                    path=inp.path),
        ], **details)

    train = model_outputs(work, recipe).train
    losses = _read_losses(train / "loss.csv", "train_loss")
    val_losses = _read_losses(train / "val_loss.csv", "val_loss")
    metrics = read_json(train / "metrics.json") or {}
    run_info = read_json(train / "run.json") or {}
    details.update(
        steps=len(losses),
        final_loss=losses[-1][1] if losses and math.isfinite(losses[-1][1]) else None,
        val_loss=val_losses[-1][1] if val_losses and math.isfinite(val_losses[-1][1]) else None,
        train_seconds=run_info.get("train_seconds"),
        parameters=metrics.get("parameters"),
        loss_curve=_curve(losses),
        val_loss_curve=_curve(val_losses),
    )
    if not losses:
        details["output_tail"] = run.tail
        return CheckResult.failed(CHECK, "no training loss was recorded", [
            Problem(f"the train stage of {inp.ref} finished but {train / 'loss.csv'} holds no steps",
                    fix="this is a bug in the forge's train stage, not in the contribution: report it",
                    path=inp.path),
        ], **details)
    bad = [(step, value) for step, value in [*losses, *val_losses] if not math.isfinite(value)]
    if bad:
        step, value = bad[0]
        lr = recipe.training.learning_rate
        return CheckResult.failed(CHECK, f"training diverged: loss {value} at step {step}", [
            Problem(f"training diverged: the loss is {value} at step {step} of the dry run of {inp.ref} "
                    f"({len(bad)} non-finite of {len(losses) + len(val_losses)} logged losses; "
                    f"learning_rate {lr:g})",
                    fix="lower training.learning_rate, or add warm-up (training.warmup_steps) and clipping "
                        "(training.grad_clip)",
                    path=inp.path),
        ], **details)
    if len(losses) != recipe.training.steps:
        details["output_tail"] = run.tail
        return CheckResult.failed(CHECK, f"{len(losses)} of {recipe.training.steps} steps recorded", [
            Problem(f"the train stage of {inp.ref} recorded {len(losses)} steps, {recipe.training.steps} were run",
                    fix="this is a bug in the forge's train stage: report it", path=inp.path),
        ], **details)
    final = losses[-1][1]
    return CheckResult.passed(
        CHECK, f"{len(losses)} steps, final loss {final:.3f}, built in {run.seconds:.0f} s (budget {budget:.0f} s)",
        **details)


def _read_losses(path: Path, column: str) -> list[tuple[int, float]]:
    """(step, loss) rows of a train-stage CSV; a missing file is no rows, "nan"/"inf" parse as such."""
    if not path.is_file():
        return []
    rows = []
    with open(path, newline="", encoding="utf-8") as f:
        for i, row in enumerate(csv.DictReader(f), start=1):
            step = int(row["step"]) if (row.get("step") or "").isdigit() else i
            try:
                rows.append((step, float(row.get(column) or "nan")))
            except ValueError:
                rows.append((step, math.nan))  # an unreadable loss is not a finite one
    return rows


def _curve(rows: list[tuple[int, float]]) -> list[list[Any]]:
    """[step, loss] pairs for the JSON report (which has no NaN or infinity: those become strings)."""
    return [[step, round(v, 6) if math.isfinite(v) else str(v)] for step, v in rows]
