"""Stage ``tokenizer``: a byte-level BPE trained on the recipe's training split.

    python -m pipelines.tokenizer recipe/forge-small@1

Writes ``build/models/<recipe>/tokenizer/``: ``tokenizer.json`` (the `tokenizers` model) and
``tokenizer_config.json`` (what transformers' ``PreTrainedTokenizerFast`` needs, with the chat
template), so the folder loads with ``AutoTokenizer.from_pretrained`` offline.

Special tokens are reserved from the start, with fixed ids right after nothing else:
``<|bos|>``=0, ``<|eos|>``=1, ``<|pad|>``=2, then the chat-turn markers; so a chat fine-tune
never resizes the vocabulary. The tokenizer adds no special tokens by itself: the training
stage puts BOS/EOS around each document, the chat template around each turn.
"""

from __future__ import annotations

import json
from pathlib import Path

from pipelines import determinism
from pipelines.manifest import model_outputs
from pipelines.select import iter_documents
from pipelines.stage import load_recipe, stage_cli
from registry.digest import canonical_json
from registry.fsutil import atomic_write_bytes
from registry.schema import Recipe

# Chat turns: <|role|>content<|end|>, the whole conversation after BOS. Roles map to the
# reserved chat tokens; an unknown role is an error, not a silent fallback.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['role'] not in ['system', 'user', 'assistant'] %}"
    "{{ raise_exception('roles must be system, user or assistant') }}"
    "{% endif %}"
    "{{ '<|' + message['role'] + '|>' + message['content'] + '<|end|>' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}"
)


def train_tokenizer(texts, recipe: Recipe):
    """Train the recipe's byte-level BPE on an iterable of strings (in a fixed order)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    spec = recipe.tokenizer
    tok = Tokenizer(models.BPE(unk_token=None, fuse_unk=False))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=spec.vocab_size,
        min_frequency=spec.min_frequency,
        special_tokens=spec.special_tokens.all(),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=True,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return tok


def tokenizer_config(recipe: Recipe) -> dict:
    sp = recipe.tokenizer.special_tokens
    return {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": sp.bos,
        "eos_token": sp.eos,
        "pad_token": sp.pad,
        "unk_token": None,
        "additional_special_tokens": list(sp.chat),
        "model_max_length": recipe.architecture.max_position_embeddings,
        "clean_up_tokenization_spaces": False,
        "add_bos_token": False,
        "add_eos_token": False,
        "chat_template": CHAT_TEMPLATE,
    }


def main(ref: str, root: Path) -> Path:
    recipe = load_recipe(root, ref)
    determinism.pin(recipe.training.threads)
    texts = (doc["text"] for doc in iter_documents(root, recipe, "train"))
    tok = train_tokenizer(texts, recipe)
    # Reserved tokens must have the ids the docstring promises.
    for i, t in enumerate(recipe.tokenizer.special_tokens.all()):
        assert tok.token_to_id(t) == i, (t, tok.token_to_id(t))
    out = model_outputs(root, recipe).tokenizer
    # tokenizer.json is re-serialized canonically: same merges -> same bytes.
    data = json.loads(tok.to_str())
    atomic_write_bytes(out / "tokenizer.json", json.dumps(data, ensure_ascii=False, sort_keys=True, indent=1).encode())
    atomic_write_bytes(out / "tokenizer_config.json", canonical_json(tokenizer_config(recipe)) + b"\n")
    return out


def cli(argv: list[str] | None = None) -> None:
    stage_cli("tokenizer", __doc__, main, argv)


if __name__ == "__main__":
    cli()
