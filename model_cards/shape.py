"""A Llama-family model's shape, and its parameter count by part, from ``config.json``.

The one parameter count of the project: the model card and the explorer both read it.

The counts follow transformers' ``LlamaForCausalLM`` exactly (no biases unless the config
asks for them), so the total equals ``sum(p.numel() for p in model.parameters())``: with tied
embeddings the lm_head shares the embedding matrix and adds nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from registry.architecture import transformers_config
from registry.schema import Recipe


@dataclass(frozen=True)
class ModelShape:
    vocab_size: int
    hidden_size: int  # the residual stream's width
    intermediate_size: int  # the MLP's inner width
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    max_position_embeddings: int  # context length, tokens
    tie_word_embeddings: bool
    rope_theta: float | None = None
    rms_norm_eps: float | None = None
    attention_bias: bool = False
    mlp_bias: bool = False
    architecture: str = "LlamaForCausalLM"
    dtype: str | None = None  # of the stored weights, e.g. "float32"

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> ModelShape:
        """From a transformers ``config.json`` dict (KeyError names a missing field)."""
        heads = int(config["num_attention_heads"])
        hidden = int(config["hidden_size"])
        archs = config.get("architectures") or ["LlamaForCausalLM"]
        return cls(
            vocab_size=int(config["vocab_size"]),
            hidden_size=hidden,
            intermediate_size=int(config["intermediate_size"]),
            num_hidden_layers=int(config["num_hidden_layers"]),
            num_attention_heads=heads,
            num_key_value_heads=int(config.get("num_key_value_heads") or heads),
            head_dim=int(config.get("head_dim") or hidden // heads),
            max_position_embeddings=int(config["max_position_embeddings"]),
            tie_word_embeddings=bool(config.get("tie_word_embeddings", False)),
            rope_theta=config.get("rope_theta") or (config.get("rope_parameters") or {}).get("rope_theta"),
            rms_norm_eps=config.get("rms_norm_eps"),
            attention_bias=bool(config.get("attention_bias", False)),
            mlp_bias=bool(config.get("mlp_bias", False)),
            architecture=str(archs[0]),
            dtype=config.get("dtype") or config.get("torch_dtype"),
        )

    @classmethod
    def from_recipe(cls, recipe: Recipe, vocab_size: int | None = None) -> ModelShape:
        """From a recipe alone: the vocabulary is the tokenizer's target size unless given."""
        return cls.from_config(transformers_config(recipe, vocab_size))

    # --- parameters by part (each a count of scalars) ---------------------------------------

    @property
    def embeddings(self) -> int:
        return self.vocab_size * self.hidden_size  # (V, d)

    @property
    def attention(self) -> int:
        # Per layer: q (d -> H*hd), k and v (d -> KV*hd each), o (H*hd -> d); biases if configured.
        q = self.num_attention_heads * self.head_dim
        kv = self.num_key_value_heads * self.head_dim
        weights = self.hidden_size * (q + 2 * kv) + q * self.hidden_size
        biases = (q + 2 * kv + self.hidden_size) if self.attention_bias else 0
        return self.num_hidden_layers * (weights + biases)

    @property
    def mlp(self) -> int:
        # Per layer: gate and up (d -> ff), down (ff -> d): SwiGLU.
        weights = 3 * self.hidden_size * self.intermediate_size
        biases = (2 * self.intermediate_size + self.hidden_size) if self.mlp_bias else 0
        return self.num_hidden_layers * (weights + biases)

    @property
    def norms(self) -> int:
        # Two RMSNorm weight vectors per layer (before attention, before the MLP), one final.
        return (2 * self.num_hidden_layers + 1) * self.hidden_size

    @property
    def per_layer(self) -> int:
        """One decoder layer: its attention, its MLP and its two norms."""
        return (self.attention + self.mlp) // self.num_hidden_layers + 2 * self.hidden_size

    @property
    def lm_head(self) -> int:
        return 0 if self.tie_word_embeddings else self.vocab_size * self.hidden_size

    @property
    def total(self) -> int:
        return self.embeddings + self.attention + self.mlp + self.norms + self.lm_head

    def parts(self) -> list[tuple[str, int]]:
        return [
            ("embeddings", self.embeddings),
            ("attention", self.attention),
            ("MLP", self.mlp),
            ("norms", self.norms),
            ("lm_head", self.lm_head),
        ]
