"""Stage ``quantize``: the recipe's quantized variants of the trained model, and their perplexity.

    python -m pipelines.quantize recipe/forge-small@1

For each variant in the recipe (e.g. int4-g128 with GPTQ, int8 with round-to-nearest) writes
``build/models/<recipe>/variants/<variant>/{model.safetensors,config.json}`` in
compressed-tensors' pack-quantized layout (config.json carries the ``quantization_config``
that transformers and vLLM read; see :mod:`kernels.formats`), and
``build/models/<recipe>/quantize.json``: loss, perplexity and bits per byte on the whole
validation split for the full model and every variant, and, where the recipe has both a GPTQ
and a round-to-nearest variant of the same format, the share of RTN's perplexity gap GPTQ
recovers.

Calibration (GPTQ) uses ``calibration_samples`` windows of ``calibration_seq_len`` tokens from
the training split, chosen by a generator seeded with the recipe's seed.
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

from commonforge.errors import BuildError
from pipelines import determinism
from pipelines.manifest import model_outputs
from pipelines.select import iter_documents
from pipelines.stage import load_recipe, stage_cli
from registry.schema import QuantVariant, Recipe


def scheme_for(variant: QuantVariant):
    from kernels import QuantScheme

    return QuantScheme(name=variant.name, bits=variant.bits, group_size=variant.group_size,
                       symmetric=variant.symmetric, method=variant.method)


def load_trained(root: Path, recipe: Recipe):
    """The trained full-precision model from build/models/<recipe>/model (safetensors only)."""
    from safetensors.torch import load_file
    from transformers import LlamaConfig, LlamaForCausalLM

    folder = model_outputs(root, recipe).model
    config = LlamaConfig.from_dict(json.loads((folder / "config.json").read_text(encoding="utf-8")))
    model = LlamaForCausalLM(config)
    state = load_file(str(folder / "model.safetensors"))
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or [k for k in missing if not (k == "lm_head.weight" and config.tie_word_embeddings)]:
        raise BuildError(f"{folder}/model.safetensors does not match its config: missing {missing}, "
                         f"unexpected {unexpected}", hint=f"re-run the train stage for {recipe.name}")
    model.tie_weights()
    model.eval()
    return model


def calibration_batches(train_w, variant: QuantVariant, seed: int):
    """``calibration_samples`` token windows of ``calibration_seq_len`` from the training split."""
    import torch

    flat = train_w[:, :-1].reshape(-1)
    n = len(flat) // variant.calibration_seq_len
    windows = flat[: n * variant.calibration_seq_len].reshape(n, variant.calibration_seq_len)
    pick = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[: variant.calibration_samples]
    chosen = windows[pick.sort().values]
    return [chosen[i : i + 8] for i in range(0, len(chosen), 8)]


def main(ref: str, root: Path) -> Path:
    recipe = load_recipe(root, ref)
    t = recipe.training
    determinism.pin(t.threads)

    from tokenizers import Tokenizer

    from kernels import quantize_model, save_compressed_tensors
    from pipelines.train import bits_per_byte, token_stream, windows, write_json

    determinism.configure_torch(t.seed, t.threads)
    out = model_outputs(root, recipe)
    tokenizer = Tokenizer.from_file(str(out.tokenizer / "tokenizer.json"))
    train_stream, _ = token_stream(tokenizer, iter_documents(root, recipe, "train"), 0, 1)
    val_stream, val_bytes = token_stream(tokenizer, iter_documents(root, recipe, "validation"), 0, 1)
    train_w = windows(train_stream, t.seq_len)
    val_w = windows(val_stream, t.seq_len)

    full = load_trained(root, recipe)
    out.variants.mkdir(parents=True, exist_ok=True)  # a DVC output even without variants
    results: dict[str, dict] = {}

    def score(model) -> dict:
        loss, bpb, tokens = bits_per_byte(model, val_w, t.batch_size, val_bytes, len(val_stream))
        return {"val_loss": round(loss, 6), "perplexity": round(math.exp(loss), 4),
                "bits_per_byte": round(bpb, 6), "tokens": tokens}

    results["full"] = score(full)
    print(f"full precision: {results['full']}")
    for variant in recipe.quantization:
        model = copy.deepcopy(full)
        calib = calibration_batches(train_w, variant, t.seed) if variant.method == "gptq" else None
        quantize_model(model, scheme_for(variant), calib)
        save_compressed_tensors(model, out.variant(variant.name))
        results[variant.name] = score(model) | {"method": variant.method, "bits": variant.bits,
                                                "group_size": variant.group_size}
        print(f"{variant.name}: {results[variant.name]}")
    summary: dict = {"variants": results}
    # GPTQ vs round-to-nearest of the same format: the share of the perplexity gap recovered.
    for v in recipe.quantization:
        for w in recipe.quantization:
            if (v.method, w.method) == ("gptq", "rtn") and (v.bits, v.group_size, v.symmetric) == (
                w.bits, w.group_size, w.symmetric):
                gap = results[w.name]["perplexity"] - results["full"]["perplexity"]
                got = results[w.name]["perplexity"] - results[v.name]["perplexity"]
                summary.setdefault("gap_recovered", {})[v.name] = round(got / gap, 4) if gap > 0 else None
    write_json(out.quantize_summary, summary)
    return out.variants


def cli(argv: list[str] | None = None) -> None:
    stage_cli("quantize", __doc__, main, argv)


if __name__ == "__main__":
    cli()
