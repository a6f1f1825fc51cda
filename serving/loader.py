"""The release loader: a registry ref in, a verified, runnable model out.

    loaded = load_release("model/forge-small@1.0.0", variant="int4-g128")
    loaded.model(input_ids)  ·  loaded.tokenizer  ·  loaded.release  ·  loaded.device

Every consumer of a model (evaluation, the explorer's "try it" box, the server, the chat CLI)
goes through here, so the rules hold everywhere:

* every file the model is built from is re-hashed against the release's manifest first
  (:meth:`registry.Store.path` refuses a mismatch, naming file, expected and actual digest);
* weights are read from safetensors only: a manifest naming a pickle format is refused;
* the architecture comes from ``config.json`` through transformers' own classes, never with
  ``trust_remote_code`` (a config that asks for custom code is refused);
* quantized variants are rebuilt with :class:`kernels.QuantLinear` (Triton kernels on a GPU,
  plain torch on the CPU) from their compressed-tensors tensors, or with
  :class:`kernels.BlockQuantLinear` from GGUF blocks (``quant_method: gguf-blocks``).

The loader lives in ``serving`` (not ``kernels``): kernels know tensors and modules, never releases.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from commonforge.errors import InputError
from commonforge.settings import Settings
from registry import Store
from registry.schema import Artifact, Release

FULL = "full"
GGUF_BLOCKS = "gguf-blocks"  # kernels.gguf_blocks.QUANT_METHOD (not imported: kernels loads torch)
# Weight formats that unpickle (and so can run code) when loaded: never loaded here.
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja")
# Root-level files every variant shares (the tokenizer and the generation defaults).
SHARED_FILES = (*TOKENIZER_FILES, "generation_config.json")
SHARD_INDEX = "model.safetensors.index.json"


@dataclass
class LoadedModel:
    # None only for a model built in memory, never loaded from the registry (the decode
    # benchmark's random-weight Llama): nothing can serve it, see serving.api.Served.of.
    release: Release | None
    variant: str  # "full" or a quantized variant's name
    model: Any  # a transformers PreTrainedModel in eval mode
    tokenizer: Any  # a transformers PreTrainedTokenizerFast
    device: Any  # torch.device
    dtype: Any  # torch.dtype of activations
    files: dict[str, Path] = field(default_factory=dict)  # release path -> verified store path
    # The release's verified status when it was loaded (trust.status), None for files not in a
    # registry (load_from_files) or a model built in memory.
    status: Any = None

    @property
    def ref(self) -> str:
        return self.release.ref if self.release is not None else "(a model built in memory, not a release)"

    @property
    def context_length(self) -> int:
        return int(getattr(self.model.config, "max_position_embeddings", 2048))

    def tokenizer_folder(self, dest: Path) -> Path:
        """Lay the tokenizer files out under ``dest`` (for tools that want a path, e.g. lm-eval)."""
        import os
        import shutil

        dest.mkdir(parents=True, exist_ok=True)
        for name in TOKENIZER_FILES:
            if name in self.files and not (dest / name).exists():
                try:
                    os.link(self.files[name], dest / name)
                except OSError:
                    shutil.copyfile(self.files[name], dest / name)
        return dest


def variant_artifacts(release: Release, variant: str | None) -> dict[str, Artifact]:
    """The artifacts a variant is built from, keyed by their file name inside the variant.

    The shared files (tokenizer, chat template, generation defaults) come from the release's
    top level; the weights and config.json from the top level for ``full``, from
    ``variants/<name>/`` for a quantized variant. Weights are one ``model.safetensors`` or
    shards listed by ``model.safetensors.index.json``.
    """
    m = release.manifest
    name = variant or FULL
    if m.provenance == "finetuned":
        # an adapter on its base (see _load_finetune): its own files are the adapter, config and tokenizer
        if name != FULL:
            raise InputError(f"{release.ref} is a fine-tune and has no variant {name!r} (only full)",
                             hint="quantized variants of fine-tunes are not built yet; load it without --variant")
        return {a.path: a for a in m.artifacts}
    available = [FULL, *m.variants()]
    if name not in available:
        raise InputError(
            f"{release.ref} has no variant {name!r}",
            hint="available: " + ", ".join(available),
        )
    chosen: dict[str, Artifact] = {}
    for a in m.artifacts:
        top_level = a.variant is None and "/" not in a.path
        if top_level and a.path in SHARED_FILES:
            chosen[a.path] = a
        elif name == FULL and top_level:
            chosen[a.path] = a
        elif name != FULL and a.variant == name:
            chosen[a.path.rsplit("/", 1)[-1]] = a
    for a in chosen.values():
        if a.path.lower().endswith(PICKLE_SUFFIXES):
            raise InputError(
                f"{release.ref}: {a.path} is a pickle checkpoint; pickle weights are never loaded",
                hint="convert the weights to safetensors and import them again",
            )
    weights = "model.safetensors" if "model.safetensors" in chosen else SHARD_INDEX
    for needed in ("config.json", weights, "tokenizer.json"):
        if needed not in chosen:
            raise InputError(f"{release.ref} ({name}) has no {needed}", hint="the release is incomplete")
    return chosen


def _load_weights(files: dict[str, Path], device) -> dict:
    """All tensors: one safetensors file, or every shard an index names (each verified already)."""
    from safetensors.torch import load_file

    if "model.safetensors" in files:
        return load_file(str(files["model.safetensors"]), device=str(device))
    index = json.loads(files[SHARD_INDEX].read_text(encoding="utf-8"))
    tensors: dict = {}
    for shard in sorted(set(index.get("weight_map", {}).values())):
        if shard not in files:
            raise InputError(f"the shard index names {shard}, which the release does not list",
                             hint="the release is incomplete; re-import it")
        tensors.update(load_file(str(files[shard]), device=str(device)))
    missing = sorted(set(index.get("weight_map", {})) - set(tensors))
    if missing:
        raise InputError(f"the shards lack tensors the index names: {missing[:5]}", hint="re-import the model")
    return tensors


def choose_device(device: str | None = "auto"):
    import torch

    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device {device} asked for, but no CUDA GPU is available", hint="use --device cpu")
    return dev


def _read_config(path: Path, where: str) -> dict:
    config = json.loads(path.read_text(encoding="utf-8"))
    if "auto_map" in config or config.get("trust_remote_code"):
        raise InputError(
            f"{where}: config.json asks for custom model code (auto_map); it is never run",
            hint="only architectures built into transformers can be loaded",
        )
    if "model_type" not in config:
        raise InputError(f"{where}: config.json has no model_type", hint="is this a transformers model?")
    return config


def _build_skeleton(config: dict, device, dtype):
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg_dict = {k: v for k, v in config.items() if k != "quantization_config"}
    model_type = cfg_dict.pop("model_type")
    hf_config = AutoConfig.for_model(model_type, **cfg_dict)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(hf_config, trust_remote_code=False, dtype=dtype)
    return model


def _load_tokenizer(files: dict[str, Path]):
    from transformers import PreTrainedTokenizerFast

    def token(value):
        # Token definitions may be plain strings or {"content": ..., "lstrip": ...} objects.
        if isinstance(value, dict):
            return value.get("content")
        if isinstance(value, list):
            return [token(v) for v in value]
        return value

    kwargs: dict = {}
    if "tokenizer_config.json" in files:
        cfg = json.loads(files["tokenizer_config.json"].read_text(encoding="utf-8"))
        for key in ("bos_token", "eos_token", "pad_token", "unk_token", "additional_special_tokens"):
            if cfg.get(key) is not None:
                kwargs[key] = token(cfg[key])
        for key in ("model_max_length", "chat_template", "clean_up_tokenization_spaces"):
            if cfg.get(key) is not None:
                kwargs[key] = cfg[key]
    if "chat_template.jinja" in files:  # newer directories keep the template in its own file
        kwargs["chat_template"] = files["chat_template.jinja"].read_text(encoding="utf-8")
    return PreTrainedTokenizerFast(tokenizer_file=str(files["tokenizer.json"]), **kwargs)


def load_release(
    ref: str | Release,
    *,
    variant: str | None = None,
    device: str | None = "auto",
    dtype: str | None = None,
    settings: Settings | None = None,
    allow_revoked: bool = False,
) -> LoadedModel:
    """Verify and load a registered release (or one of its quantized variants) from the store.

    The ref resolves by verified status (``trust.status.for_use``: a bare name is the newest
    published release, else the newest draft); a revoked release is refused unless
    ``allow_revoked``. The status is kept on the result for whoever shows it.
    """
    from trust.status import for_use

    settings = settings or Settings.load()
    release, status = for_use(settings.root, ref, allow_revoked=allow_revoked)
    if release.manifest.provenance == "finetuned":
        loaded = _load_finetune(release, status, variant, device, dtype, settings)
        loaded.status = status
        return loaded
    artifacts = variant_artifacts(release, variant)
    store = Store(settings.layer(status.root).store_dir)  # a pulled release: the user registry's store
    # Verify everything before anything is parsed.
    files = {key: store.path(a.sha256, what=f"{release.ref}:{a.path}") for key, a in artifacts.items()}
    loaded = _load(release, variant, files, device, dtype)
    loaded.status = status
    return loaded


ADAPTER_FILES = ("adapter/adapter_config.json", "adapter/adapter_model.safetensors")


def _load_finetune(release: Release, status, variant: str | None, device, dtype, settings: Settings) -> LoadedModel:
    """A LoRA fine-tune: its verified base (exactly the digest it was trained on, not revoked),
    with the verified adapter merged into it by peft."""
    import tempfile
    import warnings

    from commonforge.errors import IntegrityError

    m = release.manifest
    variant_artifacts(release, variant)  # refuses a quantized variant
    if m.base_model is None or m.finetune is None:
        raise InputError(f"{release.ref} names no base model", hint="the release is inconsistent")
    base = load_release(m.base_model, variant=None, device=device, dtype=dtype, settings=settings)
    if base.release is None or base.release.release_digest != m.finetune.base_sha256:
        raise IntegrityError(m.base_model, m.finetune.base_sha256,
                             base.release.release_digest if base.release is not None else "(none)")
    store = Store(settings.layer(status.root).store_dir)
    files = {a.path: store.path(a.sha256, what=f"{release.ref}:{a.path}") for a in m.artifacts}
    missing = [f for f in ADAPTER_FILES if f not in files]
    if missing:
        raise InputError(f"{release.ref} lacks {', '.join(missing)}", hint="the release is incomplete")
    from peft import PeftModel

    with tempfile.TemporaryDirectory(prefix="commonforge-adapter-") as tmp:
        for rel in ADAPTER_FILES:  # peft reads a directory; the files are the verified store copies
            (Path(tmp) / rel.split("/", 1)[1]).symlink_to(files[rel])
        with warnings.catch_warnings():  # transformers' own deprecation notice, raised inside peft
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
            model = PeftModel.from_pretrained(base.model, tmp, is_trainable=False).merge_and_unload()
    model.eval()
    shared = {k: v for k, v in files.items() if "/" not in k}
    return LoadedModel(release, FULL, model, _load_tokenizer(shared), base.device, base.dtype, shared)


def load_from_files(
    release: Release,
    paths: dict[str, Path],
    *,
    variant: str | None = None,
    device: str | None = "auto",
    dtype: str | None = None,
) -> LoadedModel:
    """Load a release whose files are not (yet) in the store, e.g. a build directory.

    ``paths`` maps each artifact's path in the release (``"model.safetensors"``,
    ``"variants/int8/config.json"``, ...) to a file; each is verified against the manifest.
    """
    from commonforge.errors import IntegrityError
    from registry.digest import sha256_file

    files = {}
    for key, a in variant_artifacts(release, variant).items():
        if a.path not in paths:
            raise InputError(f"no file given for {a.path}")
        actual = sha256_file(paths[a.path])
        if actual != a.sha256:
            raise IntegrityError(str(paths[a.path]), a.sha256, actual)
        files[key] = paths[a.path]
    return _load(release, variant, files, device, dtype)


def _load(release: Release, variant: str | None, files: dict[str, Path], device, dtype) -> LoadedModel:
    import torch

    artifacts = variant_artifacts(release, variant)
    dev = choose_device(device)
    config = _read_config(files["config.json"], f"{release.ref}:{artifacts['config.json'].path}")
    gguf_blocks = (config.get("quantization_config") or {}).get("quant_method") == GGUF_BLOCKS
    if dtype is None:
        # float32 on the CPU keeps evaluations bit-reproducible; a gguf-blocks variant (a GGUF import)
        # runs in bfloat16 there instead: torch's int4 CPU op (kernels.cpu_matmul), several times faster
        torch_dtype = torch.float16 if dev.type != "cpu" else torch.bfloat16 if gguf_blocks else torch.float32
    else:
        torch_dtype = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[dtype]
    model = _build_skeleton(config, dev, torch_dtype)
    tensors = _load_weights(files, dev)
    name = variant or FULL
    if name == FULL:
        missing, unexpected = model.load_state_dict(tensors, strict=False)
        tied = getattr(model.config, "tie_word_embeddings", False)
        missing = [k for k in missing if not (tied and k == "lm_head.weight")]
        if missing or unexpected:
            raise InputError(
                f"{release.ref}: the weights do not match config.json "
                f"(missing {missing[:5]}, unexpected {unexpected[:5]})",
                hint="the release is inconsistent; rebuild or re-import it",
            )
        if tied:
            model.tie_weights()
    else:
        from kernels import KernelError, load_block_quantized_model, load_quantized_model

        load = load_block_quantized_model if gguf_blocks else load_quantized_model
        try:
            load(model, tensors, config["quantization_config"])
        except KernelError as err:
            raise InputError(f"{release.ref} ({name}): {err}", hint="the variant's files are inconsistent") from None
    model.eval()
    tokenizer = _load_tokenizer(files)
    return LoadedModel(release, name, model, tokenizer, dev, torch_dtype, files)
