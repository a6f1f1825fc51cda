"""Small GGUF files written by the tests themselves with the ``gguf`` package (never a downloaded one).

    path = write_tiny_gguf(tmp_path / "tiny.gguf", linear_type="Q4_1")

A forge-tiny-sized Llama with random weights and a byte-level BPE tokenizer trained on a few
sentences, laid out the way llama.cpp's own converter lays a Hugging Face Llama out (tensor names,
metadata keys, Q/K rows permuted for its rotary layout), so transformers' GGUF loader reads it like a
published file. Returned with the float weights it was made from, for comparisons.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

CHAT_TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
                 "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
TEXT = ("The capital of France is Paris. The quick brown fox jumps over the lazy dog. "
        "Call me Ishmael. Some years ago, never mind how long precisely, I thought I would sail about. ") * 20


@dataclass
class TinyGGUF:
    path: Path
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    vocab: int
    weights: dict[str, np.ndarray]  # GGUF tensor name -> the float32 values before quantizing


def _tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=320, special_tokens=SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator([TEXT], trainer)
    return tok


def _permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's converter's Q/K row order (what transformers undoes when it reads a GGUF)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def write_tiny_gguf(path: Path, *, linear_type: str = "Q4_1", embedding_type: str = "Q8_0", seed: int = 0,
                    hidden: int = 64, layers: int = 2, heads: int = 4, kv_heads: int = 2,
                    intermediate: int = 128, architecture: str = "llama", tied: bool = True,
                    license: str | None = None) -> TinyGGUF:
    import json

    from gguf import GGMLQuantizationType, GGUFWriter
    from gguf.quants import quantize

    tok = _tokenizer()
    data = json.loads(tok.to_str())
    vocab_map: dict[str, int] = data["model"]["vocab"]
    tokens = [t for t, _ in sorted(vocab_map.items(), key=lambda kv: kv[1])]
    merges = [m if isinstance(m, str) else " ".join(m) for m in data["model"]["merges"]]
    rng = np.random.default_rng(seed)
    vocab = len(tokens)

    def rand(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * 0.05).astype(np.float32)

    head_dim = hidden // heads
    weights: dict[str, np.ndarray] = {"token_embd.weight": rand(vocab, hidden),
                                      "output_norm.weight": (1 + rand(hidden)).astype(np.float32)}
    if not tied:
        weights["output.weight"] = rand(vocab, hidden)
    for i in range(layers):
        weights.update({
            f"blk.{i}.attn_norm.weight": (1 + rand(hidden)).astype(np.float32),
            f"blk.{i}.ffn_norm.weight": (1 + rand(hidden)).astype(np.float32),
            f"blk.{i}.attn_q.weight": rand(heads * head_dim, hidden),
            f"blk.{i}.attn_k.weight": rand(kv_heads * head_dim, hidden),
            f"blk.{i}.attn_v.weight": rand(kv_heads * head_dim, hidden),
            f"blk.{i}.attn_output.weight": rand(hidden, heads * head_dim),
            f"blk.{i}.ffn_gate.weight": rand(intermediate, hidden),
            f"blk.{i}.ffn_up.weight": rand(intermediate, hidden),
            f"blk.{i}.ffn_down.weight": rand(hidden, intermediate),
        })
    w = GGUFWriter(str(path), architecture)
    w.add_name("tiny test llama")
    if license is not None:
        w.add_license(license)  # general.license, as a publisher states it
    w.add_context_length(256)
    w.add_embedding_length(hidden)
    w.add_block_count(layers)
    w.add_feed_forward_length(intermediate)
    w.add_head_count(heads)
    w.add_head_count_kv(kv_heads)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_freq_base(10000.0)
    w.add_rope_dimension_count(head_dim)
    w.add_vocab_size(vocab)
    w.add_file_type(3 if linear_type == "Q4_1" else 2 if linear_type == "Q4_0" else 7 if linear_type == "Q8_0" else 0)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_types([3 if t in SPECIALS else 1 for t in tokens])
    w.add_token_merges(merges)
    w.add_bos_token_id(vocab_map["<|im_start|>"])
    w.add_eos_token_id(vocab_map["<|im_end|>"])
    w.add_unk_token_id(vocab_map["<|endoftext|>"])
    w.add_pad_token_id(vocab_map["<|im_end|>"])
    w.add_add_bos_token(False)
    w.add_chat_template(CHAT_TEMPLATE)
    for name, value in weights.items():
        stored = value
        if ".attn_q." in name:
            stored = _permute(value, heads)
        elif ".attn_k." in name:
            stored = _permute(value, kv_heads)
        if value.ndim == 1:
            w.add_tensor(name, stored)
            continue
        qtype = embedding_type if name == "token_embd.weight" else linear_type
        if qtype in ("F32", "F16"):
            w.add_tensor(name, stored.astype(np.float32 if qtype == "F32" else np.float16))
        else:
            t = GGMLQuantizationType[qtype]
            w.add_tensor(name, quantize(stored, t), raw_dtype=t)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return TinyGGUF(path, hidden, layers, heads, kv_heads, vocab, weights)
