"""forge-tiny's stage inputs in a temporary checkout, for the unit tests of the model stages.

:func:`tiny_checkout` makes a minimal checkout (pyproject.toml, dataset tiny-local@1 with its
committed texts, recipe forge-tiny@1, optionally changed) and runs ``fetch``, ``prepare`` and
``select`` in it for real, so the tokenizer, train and quantize stages read verified splits
exactly as in a build. :func:`run_stage` runs a stage as DVC does, ``python -m pipelines.<stage>``
in its own process: the stages pin threads and CPU paths before torch is imported, which a test
process that already imported torch cannot do.
"""

from __future__ import annotations

import contextlib
import copy
import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from tests.helpers import REPO, forge_env, write_yaml

RECIPE_REF = "recipe/forge-tiny@1"
DATASET_REF = "dataset/tiny-local@1"
# forge-tiny cut down for unit tests (seconds on a busy 2-core machine), still long enough for
# the loss to fall well below ln(vocab); group size 32 still divides every linear layer. One
# thread: on a loaded machine, two spinning OpenMP threads per process cost more than they give.
SMALL_RECIPE = {
    "training": {"steps": 12, "warmup_steps": 2, "eval_every": 6, "batch_size": 4, "seq_len": 32,
                 "learning_rate": 0.01, "threads": 1},
    "architecture": {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 1},
}
_RECIPE_FILE = Path("registry/entries/recipes/forge-tiny/1.yaml")


def _merge(base: dict, changes: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in changes.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def tiny_checkout(root: Path, recipe_changes: dict | None = None) -> Path:
    """A checkout at ``root`` where forge-tiny's data stages ran; ``recipe_changes`` are merged
    into its recipe (e.g. fewer training steps). The process environment is left as it was."""
    for rel in ("registry/entries/datasets/tiny-local", "registry/local_sources/tiny-local"):
        shutil.copytree(REPO / rel, root / rel)
    recipe = yaml.safe_load((REPO / _RECIPE_FILE).read_text(encoding="utf-8"))
    write_yaml(root / _RECIPE_FILE, _merge(recipe, recipe_changes or {}))
    (root / "pyproject.toml").write_text("")
    from pipelines import fetch, prepare, select

    saved = dict(os.environ)
    try:
        os.environ["COMMONFORGE_CACHE"] = str(root.parent / "cache")
        os.environ["HF_HOME"] = str(root.parent / "hf")
        fetch.main(DATASET_REF, root)
        prepare.main(DATASET_REF, root)
        select.main("forge-tiny", "tiny-local", root)
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return root


def load_recipe(root: Path):
    from pipelines.stage import load_recipe as load

    return load(root, RECIPE_REF)


def tokenized(root: Path):
    """(recipe, tokenizer, training windows, validation windows) as the train stage builds them,
    once the tokenizer stage ran in ``root``."""
    from tokenizers import Tokenizer

    from pipelines import train
    from pipelines.manifest import model_outputs
    from pipelines.select import iter_documents

    recipe = load_recipe(root)
    tok = Tokenizer.from_file(str(model_outputs(root, recipe).tokenizer / "tokenizer.json"))
    stream, _ = train.token_stream(tok, iter_documents(root, recipe, "train"), 0, 1)
    val, _ = train.token_stream(tok, iter_documents(root, recipe, "validation"), 0, 1)
    seq = recipe.training.seq_len
    return recipe, tok, train.windows(stream, seq), train.windows(val, seq)


@contextlib.contextmanager
def torch_threads(threads: int):
    """Train in this process with the recipe's thread count, as the stage would; restored after."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def run_stage(root: Path, stage: str, *args: str, env: dict[str, str] | None = None,
              code: str | None = None) -> subprocess.CompletedProcess:
    """``python -m pipelines.<stage> recipe/forge-tiny@1`` in ``root``, isolated under its parent.

    With ``code``, runs that Python instead (the stage called from a script, to look at the
    process afterwards).
    """
    argv = [sys.executable, "-c", code] if code else [sys.executable, "-m", f"pipelines.{stage}", *(args or (RECIPE_REF,))]
    return subprocess.run(argv, cwd=root, env={**forge_env(root.parent), **(env or {})},
                          capture_output=True, text=True, timeout=600)


def check(result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert result.returncode == 0, f"exit {result.returncode}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result
