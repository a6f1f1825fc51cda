"""Stage ``train`` on forge-tiny's data: the token stream, the schedule, seeded bit-identical training,
and a stage process that pins the recipe's threads whatever its parent says."""

from __future__ import annotations

import json
import math

import pytest

from commonforge.errors import BuildError
from pipelines import train
from pipelines.manifest import model_outputs
from pipelines.select import iter_documents
from tests.pipelines.stage_inputs import (
    RECIPE_REF,
    SMALL_RECIPE,
    check,
    load_recipe,
    run_stage,
    tiny_checkout,
    tokenized,
    torch_threads,
)

SHORT = SMALL_RECIPE["training"]


@pytest.fixture(scope="module")
def checkout(tmp_path_factory):
    """forge-tiny's verified splits and trained tokenizer, the recipe cut to a few small steps."""
    root = tiny_checkout(tmp_path_factory.mktemp("train") / "repo", SMALL_RECIPE)
    check(run_stage(root, "tokenizer"))
    return root


@pytest.fixture(scope="module")
def data(checkout):
    """(recipe, tokenizer, training windows, 16 validation windows)."""
    recipe, tok, train_w, val_w = tokenized(checkout)
    return recipe, tok, train_w, val_w[:16]


def test_each_document_is_framed_by_bos_and_eos_in_split_order(checkout, data):
    recipe, tok, _, _ = data
    docs = list(iter_documents(checkout, recipe, "validation"))[:3]
    stream, n_bytes = train.token_stream(tok, docs, 0, 1)
    ids = stream.tolist()
    assert n_bytes == sum(len(d["text"].encode()) for d in docs)
    assert ids.count(0) == ids.count(1) == 3 and ids[0] == 0 and ids[-1] == 1
    first = ids[1 : ids.index(1)]
    assert tok.decode(first) == docs[0]["text"]
    empty, empty_bytes = train.token_stream(tok, [], 0, 1)
    assert len(empty) == 0 and empty_bytes == 0


def test_windows_overlap_by_one_token_and_drop_the_tail():
    import torch

    w = train.windows(torch.arange(11), 3)
    assert w.tolist() == [[0, 1, 2, 3], [3, 4, 5, 6], [6, 7, 8, 9]]  # token 10 does not fit
    with pytest.raises(BuildError) as err:
        train.windows(torch.arange(3), 3)
    assert "too few" in str(err.value) and "seq_len" in err.value.hint


def test_learning_rate_warms_up_then_decays_to_the_floor(data):
    recipe = data[0]
    t = recipe.training
    assert train.lr_at(0, recipe) == pytest.approx(t.learning_rate / t.warmup_steps)
    assert train.lr_at(t.warmup_steps - 1, recipe) == pytest.approx(t.learning_rate)
    assert train.lr_at(t.steps, recipe) == pytest.approx(t.learning_rate * t.min_lr_ratio)  # cosine, at the end
    middle = (t.warmup_steps + t.steps) // 2
    assert t.learning_rate * t.min_lr_ratio < train.lr_at(middle, recipe) < t.learning_rate
    for schedule, expected in (("constant", t.learning_rate), ("linear", t.learning_rate * t.min_lr_ratio)):
        other = recipe.model_copy(update={"training": t.model_copy(update={"schedule": schedule})})
        assert train.lr_at(t.steps, other) == pytest.approx(expected)


def test_the_model_config_follows_the_recipe(data):
    recipe, tok, _, _ = data
    config = train.llama_config(recipe, tok.get_vocab_size())
    a = recipe.architecture
    assert config.vocab_size == recipe.tokenizer.vocab_size
    assert (config.hidden_size, config.num_hidden_layers, config.num_key_value_heads) == (
        a.hidden_size, a.num_hidden_layers, a.num_key_value_heads)
    assert (config.bos_token_id, config.eos_token_id, config.pad_token_id) == (0, 1, 2)
    assert config.tie_word_embeddings == a.tie_word_embeddings


def _train(recipe, data, tmp_path, name: str):
    _, tok, train_w, val_w = data
    with torch_threads(recipe.training.threads):
        run = train.train_model(recipe, train.llama_config(recipe, tok.get_vocab_size()), train_w, val_w)
    path = tmp_path / name / "model.safetensors"
    train.save_safetensors(train.state_dict_for_save(run.model), path)
    return run, path.read_bytes()


def test_training_lowers_the_loss_and_the_same_seed_gives_the_same_bytes(data, tmp_path):
    recipe = data[0]
    first, weights = _train(recipe, data, tmp_path, "a")
    losses = [float(loss) for _, loss in first.losses]
    uniform = math.log(recipe.tokenizer.vocab_size)
    assert [step for step, _ in first.losses] == list(range(1, SHORT["steps"] + 1))
    assert losses[0] > uniform - 0.3  # starts near uniform
    assert sum(losses[-3:]) / 3 < losses[0] - 0.4
    (step_a, val_a), (step_b, val_b) = first.val_losses
    assert (step_a, step_b) == (SHORT["eval_every"], SHORT["steps"]) and float(val_b) < float(val_a) < uniform - 0.3
    print(f"train loss {losses[0]:.3f} -> {losses[-1]:.3f}; validation {val_a} -> {val_b}")

    again, same = _train(recipe, data, tmp_path, "b")
    assert again.losses == first.losses and same == weights


def test_the_seed_decides_the_initialization_and_the_data_order(data, tmp_path):
    recipe = data[0]
    two = recipe.model_copy(update={"training": recipe.training.model_copy(update={"steps": 2})})
    reseeded = two.model_copy(update={"training": two.training.model_copy(update={"seed": two.training.seed + 1})})
    assert _train(two, data, tmp_path, "a")[1] != _train(reseeded, data, tmp_path, "b")[1]


def test_tied_embeddings_are_saved_once(data):
    import torch
    from transformers import LlamaForCausalLM

    recipe, tok, _, _ = data
    tied = recipe.model_copy(update={"architecture": recipe.architecture.model_copy(update={"tie_word_embeddings": True})})
    torch.manual_seed(0)
    model = LlamaForCausalLM(train.llama_config(tied, tok.get_vocab_size()))
    state = train.state_dict_for_save(model)
    assert "lm_head.weight" not in state and "model.embed_tokens.weight" in state


def test_the_stage_refuses_to_run_after_torch_was_imported(checkout):
    import torch  # noqa: F401  (as in this test process: the pins could no longer take effect)

    with pytest.raises(BuildError) as err:
        train.main(RECIPE_REF, checkout)
    assert "torch" in str(err.value) and "pin" in err.value.hint


# The stage's process, then what it left pinned: run as DVC would, from a parent environment
# that asks for other threads and another CPU path.
_PROBE = """
import json, os, sys
from commonforge import settings
from pipelines import train
train.main(sys.argv[1], settings.apply().root)
import torch
print(json.dumps({"threads": torch.get_num_threads(), "interop": torch.get_num_interop_threads(),
                  "deterministic": torch.are_deterministic_algorithms_enabled(),
                  "env": {k: os.environ[k] for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "RAYON_NUM_THREADS",
                                                     "ATEN_CPU_CAPABILITY", "MKL_CBWR")}}))
"""


@pytest.mark.slow
def test_the_stage_pins_the_recipes_threads_and_writes_the_model(checkout):
    parent = {"OMP_NUM_THREADS": "3", "MKL_NUM_THREADS": "3", "RAYON_NUM_THREADS": "5", "ATEN_CPU_CAPABILITY": "default"}
    result = check(run_stage(checkout, "train", env=parent, code=_PROBE.replace("sys.argv[1]", repr(RECIPE_REF))))
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    threads = load_recipe(checkout).training.threads
    assert (seen["threads"], seen["interop"], seen["deterministic"]) == (threads, 1, True)
    assert seen["env"] == {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
                           "RAYON_NUM_THREADS": str(threads), "ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AVX2,STRICT"}

    out = model_outputs(checkout, load_recipe(checkout))
    config = json.loads(out.config.read_text())
    assert config["vocab_size"] == 1024 and config["dtype"] == "float32"
    assert out.weights.stat().st_size > 0
    metrics = json.loads(out.train_metrics.read_text())
    assert metrics["steps"] == SHORT["steps"] and metrics["val_bits_per_byte"] > 0
    assert out.loss_csv.read_text().splitlines()[0] == "step,train_loss"
    assert len(out.loss_csv.read_text().splitlines()) == SHORT["steps"] + 1
    assert json.loads(out.environment.read_text())["determinism"]["threads"] == str(threads)
