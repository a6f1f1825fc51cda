"""Stage ``tokenizer`` on forge-tiny's data: reserved ids, canonical bytes, a folder transformers loads."""

from __future__ import annotations

import json
import shutil

import pytest

from commonforge.errors import InputError, IntegrityError, NotFoundError
from pipelines import tokenizer
from pipelines.manifest import model_outputs
from pipelines.select import iter_documents
from tests.pipelines.stage_inputs import RECIPE_REF, check, load_recipe, run_stage, tiny_checkout

FILES = ("tokenizer.json", "tokenizer_config.json")


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The checkout after the stage ran twice; the first run's bytes kept aside."""
    root = tiny_checkout(tmp_path_factory.mktemp("tokenizer") / "repo")
    check(run_stage(root, "tokenizer"))
    out = model_outputs(root, load_recipe(root)).tokenizer
    first = {name: (out / name).read_bytes() for name in FILES}
    for name in FILES:
        (out / name).unlink()
    check(run_stage(root, "tokenizer", env={"RAYON_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}))
    return root, out, first


def test_trained_twice_it_is_byte_identical_whatever_the_parent_environment(built):
    _, out, first = built
    assert {name: (out / name).read_bytes() for name in FILES} == first
    # Canonical serialization: sorted keys, so the same merges give the same bytes.
    data = json.loads(first["tokenizer.json"])
    assert list(data) == sorted(data)


def test_special_tokens_are_reserved_at_fixed_ids(built):
    from tokenizers import Tokenizer

    root, out, _ = built
    recipe = load_recipe(root)
    tok = Tokenizer.from_file(str(out / "tokenizer.json"))
    reserved = recipe.tokenizer.special_tokens.all()
    assert [tok.token_to_id(t) for t in reserved] == list(range(len(reserved)))
    assert reserved[:3] == ["<|bos|>", "<|eos|>", "<|pad|>"]
    assert tok.get_vocab_size() == recipe.tokenizer.vocab_size
    # A marker in the text is one token; plain text gets no special token added by the tokenizer.
    ids = tok.encode("<|user|>Call me Ishmael.<|end|>").ids
    assert ids[0] == reserved.index("<|user|>") and ids[-1] == reserved.index("<|end|>")
    assert not set(tok.encode("Call me Ishmael.").ids) & set(range(len(reserved)))


def test_byte_level_round_trip_is_lossless(built):
    from tokenizers import Tokenizer

    _, out, _ = built
    tok = Tokenizer.from_file(str(out / "tokenizer.json"))
    text = "Whaling\tvoyage — naïve “quotes”, 1790s, emoji 🐋 and  two  spaces\n"
    assert tok.decode(tok.encode(text).ids, skip_special_tokens=False) == text


def test_transformers_loads_the_folder_offline_with_the_chat_template(built):
    import jinja2
    from transformers import AutoTokenizer

    root, out, _ = built
    hf = AutoTokenizer.from_pretrained(str(out), local_files_only=True)
    assert (hf.bos_token_id, hf.eos_token_id, hf.pad_token_id) == (0, 1, 2)
    assert hf("Call me Ishmael.")["input_ids"][0] != hf.bos_token_id  # BOS comes from the trainer
    assert hf.model_max_length == load_recipe(root).architecture.max_position_embeddings
    chat = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello"}]
    assert hf.apply_chat_template(chat, tokenize=False, add_generation_prompt=True) == (
        "<|bos|><|system|>Be brief.<|end|><|user|>Hello<|end|><|assistant|>")
    with pytest.raises(jinja2.TemplateError, match="roles must be"):
        hf.apply_chat_template([{"role": "robot", "content": "beep"}], tokenize=False)


def test_a_smaller_vocabulary_keeps_the_reserved_ids(built):
    root, _, _ = built
    recipe = load_recipe(root)
    small = recipe.model_copy(update={"tokenizer": recipe.tokenizer.model_copy(update={"vocab_size": 400})})
    texts = [doc["text"] for doc in iter_documents(root, recipe, "validation")]
    tok = tokenizer.train_tokenizer(texts, small)
    assert tok.get_vocab_size() == 400
    assert [tok.token_to_id(t) for t in small.tokenizer.special_tokens.all()] == list(range(7))
    assert tokenizer.train_tokenizer(texts, small).to_str() == tok.to_str()


def test_a_ref_that_is_not_a_recipe_is_refused_with_a_hint(built):
    root, _, _ = built
    with pytest.raises(InputError) as err:
        tokenizer.main("dataset/tiny-local@1", root)
    assert "not a recipe" in str(err.value) and err.value.hint
    with pytest.raises(NotFoundError) as err:
        tokenizer.main("recipe/forge-tiyn@1", root)
    assert "forge-tiny" in str(err.value)  # suggested


def test_a_changed_training_split_stops_the_stage(built, tmp_path):
    root, _, _ = built
    copy = tmp_path / "repo"
    shutil.copytree(root, copy)
    split = copy / "build" / "datasets" / "tiny-local" / "splits" / "train.jsonl"
    split.write_bytes(split.read_bytes() + b"\n")
    result = run_stage(copy, "tokenizer", RECIPE_REF)
    assert result.returncode == IntegrityError.exit_code  # verification failed
    assert "train.jsonl" in result.stderr and "hint:" in result.stderr
    assert "Traceback" not in result.stderr
