"""A recipe's architecture as a transformers config: the fields ``config.json`` gets from it.

    fields = transformers_config(recipe, vocab_size=4096)
    LlamaConfig(**fields)                    # what the train stage builds (pipelines.train)
    ModelShape.from_config(fields)           # what a card or the explorer counts (model_cards.shape)

One mapping for the three readers of a recipe's shape: the train stage, which writes
``config.json``; the model card, and the explorer, which show a release whose ``config.json``
is not at hand. Plain values only: no transformers import here, so ``import registry`` stays
light; the caller that needs the transformers object builds it.
"""

from __future__ import annotations

from typing import Any

from registry.schema import Recipe

# The tokenizer stage reserves the special tokens first, in this order (pipelines.tokenizer):
# BOS, EOS, PAD get ids 0, 1, 2 in every tokenizer the forge trains.
BOS_ID, EOS_ID, PAD_ID = 0, 1, 2


def transformers_config(recipe: Recipe, vocab_size: int | None = None) -> dict[str, Any]:
    """The config fields of the recipe's decoder; the vocabulary is the tokenizer's target size unless given.

    The trained tokenizer can come out smaller than its target, so the train stage passes the
    real size; a reader without the tokenizer gets the target.
    """
    a = recipe.architecture
    return {
        "model_type": a.family,
        "architectures": ["LlamaForCausalLM"],
        "vocab_size": vocab_size or recipe.tokenizer.vocab_size,
        "hidden_size": a.hidden_size,
        "intermediate_size": a.intermediate_size,
        "num_hidden_layers": a.num_hidden_layers,
        "num_attention_heads": a.num_attention_heads,
        "num_key_value_heads": a.num_key_value_heads,
        "max_position_embeddings": a.max_position_embeddings,
        "rope_theta": a.rope_theta,
        "rms_norm_eps": a.rms_norm_eps,
        "tie_word_embeddings": a.tie_word_embeddings,
        "bos_token_id": BOS_ID,
        "eos_token_id": EOS_ID,
        "pad_token_id": PAD_ID,
    }
