"""Take a release out of the forge: a plain Hugging Face directory that other tools load untouched.

    result = export_release("model/forge-tiny@1.0.0", Path("out/forge-tiny"), variant="int8")

The directory holds exactly the files the loader would load (:func:`serving.loader.variant_artifacts`:
``config.json``, the safetensors weights, the tokenizer, ``generation_config.json``), each copied
from the store and hashed while it is copied, so what lands in the directory is what the release's
manifest names, byte for byte; beside them:

* ``chat_template.jinja``: the template of ``tokenizer_config.json`` in a file of its own, the
  layout newer transformers, vLLM and llama.cpp's converter look for (the same text);
* ``README.md``: the release's rendered model card (the bytes its :class:`~registry.schema.CardRecord`
  names, re-hashed; the images it links beside it), or a short note that there is none;
* with ``gguf=True``, ``<name>.gguf``: the full-precision weights for llama.cpp (:func:`write_gguf`);
* with ``sign=KEYID``, ``model.sig``: an OpenSSF Model Signing signature (a Sigstore bundle made with
  the ``model-signing`` package's key method) over every other file, by a maintainer's ECDSA P-256
  key. It is for whoever receives the directory; the forge's trust never reads it (a release's
  status comes from the statements beside its registry entry, never from an export).

The release resolves as it does for serving (:func:`trust.status.for_use`: a revoked release is
refused unless ``allow_revoked``). Nothing is written until everything is verified: the directory
is assembled in a temporary folder beside ``dest`` and renamed into place at the end, so a
tampered store object, a wrong passphrase or a crash leaves no directory (and an existing one, with
``force``, unchanged).

Why vLLM loads the result as it is: its loader reads ``config.json`` (``architectures:
LlamaForCausalLM``, a model class built into vLLM), iterates the ``*.safetensors`` files (or the
shard index), and, for a quantized variant, picks the ``compressed-tensors`` quantization method
from ``config.json``'s ``quantization_config`` (``pack-quantized`` int4 groups and int8 channels are
its W4A16 / W8A16 schemes); the tokenizer and chat template come from the same directory through
transformers' ``AutoTokenizer``. Those are exactly the files written here, with no custom code.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from commonforge.errors import InputError, IntegrityError
from commonforge.settings import Settings
from registry import Store
from registry.digest import CHUNK, sha256_file
from registry.schema import Artifact, Release
from serving.loader import FULL, variant_artifacts

SIGNATURE = "model.sig"
CHAT_TEMPLATE_FILE = "chat_template.jinja"
CARD_FILE = "README.md"
# Files of a card's folder the card may show (its plots); copied beside README.md when it links them.
_CARD_LINK = re.compile(r"\]\(([A-Za-z0-9._-]+\.(?:png|svg|jpg|jpeg|gif))\)")


@dataclass
class Exported:
    """What :func:`export_release` wrote, for the CLI to report and tests to check."""

    ref: str
    variant: str
    directory: Path
    status: str  # the release's verified status (trust.status) when it was exported
    files: dict[str, str] = field(default_factory=dict)  # release file copied -> its sha256 (the manifest's)
    card: str | None = None  # the card's path in the registry, None when the release has none
    gguf: Path | None = None
    signature: Path | None = None
    signed_by: str | None = None  # keyid


def export_release(
    ref: str | Release,
    dest: Path,
    *,
    variant: str | None = None,
    settings: Settings | None = None,
    allow_revoked: bool = False,
    force: bool = False,
    gguf: bool = False,
    gguf_dtype: str = "f32",
    sign: str | None = None,
    keys_dir: Path | None = None,
    passphrase: bytes | None = None,
) -> Exported:
    """Write release ``ref`` (or its quantized ``variant``) to ``dest`` as a Hugging Face model directory.

    ``dest`` must not exist or be empty, unless ``force`` (then it is replaced, whole, at the end).
    ``sign`` names a key (keyid, prefix or name) in ``keys_dir`` (default: the user's key directory).
    """
    from trust.status import for_use

    settings = settings or Settings.load()
    dest = Path(dest).expanduser().absolute()
    _check_destination(dest, force, settings.root)
    if gguf and variant not in (None, FULL):
        raise InputError(
            f"--gguf writes the full-precision weights, not the {variant} variant",
            hint="export without --variant to get a GGUF; llama.cpp quantizes it with its own llama-quantize",
        )
    if gguf_dtype not in ("f32", "f16"):
        raise InputError(f"unknown GGUF dtype {gguf_dtype!r}", hint="choose f32 or f16")
    key = _signing_key(sign, keys_dir, passphrase) if sign else None  # refuse a bad key before any copying

    release, status = for_use(settings.root, ref, allow_revoked=allow_revoked)
    if release.manifest.provenance == "finetuned":
        raise InputError(f"{release.ref} is a fine-tune: an adapter on {release.manifest.base_model}, with no "
                         "weights of its own to copy; exporting it (merged, or as a peft adapter directory) is not "
                         "built yet", hint=f"export the base ({release.manifest.base_model}) instead")
    artifacts = variant_artifacts(release, variant)
    layer = settings.layer(status.root)  # a pulled release lives in the user registry, with its own store
    store = Store(layer.store_dir)
    result = Exported(release.ref, variant or FULL, dest, status.status)

    dest.parent.mkdir(parents=True, exist_ok=True)
    # dest's name is kept inside the staging folder: model-signing records the folder's name as the subject.
    holder = Path(tempfile.mkdtemp(prefix=f".tmp-export-{dest.name}.", dir=dest.parent))
    try:
        staged = holder / dest.name
        staged.mkdir()
        for name, artifact in sorted(artifacts.items()):
            _copy_verified(store, release, artifact, staged / name)
            result.files[name] = artifact.sha256
        _write_chat_template(staged)
        result.card = _write_card(layer.root, release, staged, variant or FULL)
        if gguf:
            result.gguf = write_gguf(staged, staged / f"{release.name}.gguf", name=release.name,
                                     version=release.version, license=release.manifest.license, dtype=gguf_dtype)
        if key is not None:
            result.signature = _sign(staged, key)
            result.signed_by = key.keyid
        _replace(staged, dest, holder)
    finally:
        shutil.rmtree(holder, ignore_errors=True)
    if result.gguf is not None:
        result.gguf = dest / result.gguf.name
    if result.signature is not None:
        result.signature = dest / SIGNATURE
    return result


# --- the destination ------------------------------------------------------------------------


def _check_destination(dest: Path, force: bool, root: Path) -> None:
    if dest.exists() and not dest.is_dir():
        raise InputError(f"{dest} exists and is not a directory", hint="name a new directory to export into")
    if dest.is_dir() and any(dest.iterdir()):
        if not force:
            raise InputError(f"{dest} exists and is not empty",
                             hint="name a new directory, or pass --force to replace it (its files are deleted)")
        resolved, repo = dest.resolve(), Path(root).resolve()
        if (resolved / ".git").exists() or resolved == repo or resolved in repo.parents:
            raise InputError(f"refusing to replace {dest}: it holds a git repository or this forge",
                             hint="export into a directory of its own")


def _replace(staged: Path, dest: Path, holder: Path) -> None:
    """Put the finished directory at ``dest``; an existing one (``force``) is moved aside first, then deleted."""
    from registry.fsutil import fsync_dir

    if dest.exists():
        os.rename(dest, holder / ".replaced")  # same folder: atomic, and restored below if the next rename fails
        try:
            os.rename(staged, dest)
        except OSError:
            os.rename(holder / ".replaced", dest)
            raise
    else:
        os.rename(staged, dest)
    fsync_dir(dest.parent)


# --- the release's files --------------------------------------------------------------------


def _copy_verified(store: Store, release: Release, artifact: Artifact, target: Path) -> None:
    """Copy the store object, hashing the bytes as they are written: what lands is what the manifest names.

    :meth:`registry.Store.path` re-hashes the object first (a corrupt object is refused naming the
    file); hashing the copy again closes the window between that check and the copy.
    """
    what = f"{release.ref}:{artifact.path}"
    source = store.path(artifact.sha256, what=what)
    target.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    with open(source, "rb") as src, open(target, "wb") as out:
        while chunk := src.read(CHUNK):
            digest.update(chunk)
            out.write(chunk)
        out.flush()
        os.fsync(out.fileno())
    if digest.hexdigest() != artifact.sha256:
        raise IntegrityError(f"{what} ({source}, changed while it was copied)", artifact.sha256, digest.hexdigest())


def _write_chat_template(staged: Path) -> None:
    """``chat_template.jinja`` from ``tokenizer_config.json`` when the release has no such file."""
    config_path = staged / "tokenizer_config.json"
    if (staged / CHAT_TEMPLATE_FILE).exists() or not config_path.is_file():
        return
    template = json.loads(config_path.read_text(encoding="utf-8")).get("chat_template")
    if isinstance(template, str) and template:
        (staged / CHAT_TEMPLATE_FILE).write_text(template, encoding="utf-8")


def _write_card(root: Path, release: Release, staged: Path, variant: str) -> str | None:
    """The rendered card as README.md (verified against its record), or a note that there is none."""
    from registry import Registry

    record = Registry(root).card(release)
    card = root / record.path if record is not None else None
    if record is None or card is None or not card.is_file():
        note = (f"# {release.name} {release.version}\n\n"
                f"Exported by commonforge from `{release.ref}` ({variant}). This release has no rendered model "
                f"card{' (its card record names a missing file)' if record is not None else ''}; "
                f"`commonforge card {release.ref}` renders one in the forge.\n\n"
                f"License: {release.manifest.license}.\n")
        (staged / CARD_FILE).write_text(note, encoding="utf-8")
        return None
    actual = sha256_file(card)
    if actual != record.sha256:
        raise IntegrityError(f"the model card {record.path}", record.sha256, actual,
                             hint=f"the card was edited after it was rendered: `commonforge card {release.ref}` "
                                  "renders it again")
    text = card.read_bytes()
    (staged / CARD_FILE).write_bytes(text)
    for link in sorted(set(_CARD_LINK.findall(text.decode("utf-8", errors="replace")))):
        image = card.parent / link
        if image.is_file() and not image.is_symlink():
            shutil.copyfile(image, staged / link)
    return record.path


# --- signing (OpenSSF Model Signing, key method) ------------------------------------------


@dataclass(frozen=True)
class _Key:
    keyid: str
    path: Path
    passphrase: bytes | None


def _signing_key(selector: str, keys_dir: Path | None, passphrase: bytes | None) -> _Key:
    """The maintainer's P-256 key, opened once here so a wrong passphrase stops the export before it starts."""
    from commonforge import settings as settings_mod
    from trust.keys import find_key, load_signer

    directory = Path(keys_dir) if keys_dir is not None else settings_mod.keys_dir()
    info = find_key(directory, selector)
    if info.keytype != "ecdsa":
        raise InputError(
            f"key {info.keyid[:16]} ({info.name}) is {info.keytype}; OpenSSF Model Signing's key method signs "
            "with ECDSA keys only",
            hint="sign with a P-256 key (`commonforge keys generate` makes one by default)",
        )
    load_signer(directory, info.keyid, passphrase)  # the passphrase opens it, the key is the one described
    return _Key(info.keyid, directory / f"{info.keyid}.pem", passphrase if info.encrypted else None)


def signing_hashing_config() -> Any:
    """How the directory is hashed for the signature: every file but the signature itself."""
    from model_signing import hashing

    return hashing.Config().set_ignored_paths(paths=[SIGNATURE], ignore_git_paths=True)


def _sign(directory: Path, key: _Key) -> Path:
    from model_signing import signing

    signature = directory / SIGNATURE
    # model-signing hands the password to cryptography's load_pem_private_key, which takes bytes
    # (its annotation says str).
    password: Any = key.passphrase
    config = signing.Config().use_elliptic_key_signer(private_key=key.path, password=password)
    config.set_hashing_config(signing_hashing_config()).sign(directory, signature)
    return signature


def verify_signature(directory: Path, public_key_pem: Path) -> None:
    """model-signing's own verifier on an export (raises ``ValueError`` on any mismatch); for users and tests."""
    from model_signing import verifying

    verifying.Config().use_elliptic_key_verifier(public_key=public_key_pem).verify(
        Path(directory), Path(directory) / SIGNATURE)


# --- GGUF (llama.cpp) ------------------------------------------------------------------------


def _permute_rotary(weight: Any, heads: int) -> Any:
    """Reorder q/k rows from transformers' rotary layout (halves) to llama.cpp's (interleaved pairs).

    The inverse of transformers' ``integrations/ggml.py`` reverse permutation, the same as
    llama.cpp's ``convert_hf_to_gguf.py`` ``LlamaModel.permute``.
    """
    rows = weight.shape[0]
    return weight.reshape(heads, 2, rows // heads // 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


def _tensor_names(layers: int) -> Iterator[tuple[str, str]]:
    yield "model.embed_tokens.weight", "token_embd.weight"
    yield "model.norm.weight", "output_norm.weight"
    yield "lm_head.weight", "output.weight"
    for i in range(layers):
        prefix, blk = f"model.layers.{i}.", f"blk.{i}."
        for ours, theirs in (("input_layernorm", "attn_norm"), ("self_attn.q_proj", "attn_q"),
                             ("self_attn.k_proj", "attn_k"), ("self_attn.v_proj", "attn_v"),
                             ("self_attn.o_proj", "attn_output"), ("post_attention_layernorm", "ffn_norm"),
                             ("mlp.gate_proj", "ffn_gate"), ("mlp.up_proj", "ffn_up"),
                             ("mlp.down_proj", "ffn_down")):
            yield f"{prefix}{ours}.weight", f"{blk}{theirs}.weight"


def write_gguf(folder: Path, target: Path, *, name: str, version: str, license: str, dtype: str = "f32") -> Path:
    """A llama.cpp GGUF of the full-precision Llama in ``folder`` (already verified), F32 or F16.

    Tensor names, metadata keys and the q/k row order are llama.cpp's ``llama`` architecture; the
    tokenizer is the byte-level BPE as llama.cpp's ``gpt2`` tokenizer model (tokens, merges, types)
    with the chat template. 1-D tensors (norms) stay F32 as llama.cpp's converter keeps them.
    """
    import gguf
    import numpy as np
    from safetensors.numpy import load_file

    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    if config.get("model_type") != "llama" or "quantization_config" in config:
        raise InputError(f"GGUF export writes full-precision Llama models; this one is {config.get('model_type')!r}",
                         hint="export without --gguf")
    if not (folder / "model.safetensors").is_file():
        raise InputError("GGUF export reads one model.safetensors; this release is sharded", hint="export without --gguf")
    tensors = load_file(str(folder / "model.safetensors"))
    heads, kv_heads = int(config["num_attention_heads"]), int(config.get("num_key_value_heads") or
                                                               config["num_attention_heads"])
    hidden, layers = int(config["hidden_size"]), int(config["num_hidden_layers"])
    head_dim = int(config.get("head_dim") or hidden // heads)
    float_type = np.float32 if dtype == "f32" else np.float16

    writer = gguf.GGUFWriter(str(target), "llama")
    writer.add_type(gguf.GGUFType.MODEL)
    writer.add_name(name)
    writer.add_version(version)
    writer.add_license(license)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32 if dtype == "f32" else gguf.LlamaFileType.MOSTLY_F16)
    writer.add_context_length(int(config["max_position_embeddings"]))
    writer.add_embedding_length(hidden)
    writer.add_block_count(layers)
    writer.add_feed_forward_length(int(config["intermediate_size"]))
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_rope_dimension_count(head_dim)
    writer.add_rope_freq_base(float(config.get("rope_theta", 10000.0)))
    writer.add_layer_norm_rms_eps(float(config["rms_norm_eps"]))
    writer.add_vocab_size(int(config["vocab_size"]))
    _add_tokenizer(writer, folder, int(config["vocab_size"]))

    tied = bool(config.get("tie_word_embeddings", False))
    for ours, theirs in _tensor_names(layers):
        if ours == "lm_head.weight" and (tied or ours not in tensors):
            continue  # llama.cpp uses token_embd for the output when there is no output tensor
        if ours not in tensors:
            raise InputError(f"the weights have no {ours}", hint="the release is not a plain Llama; export without --gguf")
        array = tensors.pop(ours)
        if theirs.endswith("attn_q.weight"):
            array = _permute_rotary(array, heads)
        elif theirs.endswith("attn_k.weight"):
            array = _permute_rotary(array, kv_heads)
        array = array.astype(np.float32 if array.ndim == 1 else float_type)
        writer.add_tensor(theirs, np.ascontiguousarray(array))
    tensors.pop("lm_head.weight", None)
    leftover = sorted(k for k in tensors if not k.endswith("rotary_emb.inv_freq"))
    if leftover:
        raise InputError(f"the weights hold tensors a llama GGUF has no place for: {leftover[:5]}",
                         hint="export without --gguf")
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return target


def _add_tokenizer(writer: Any, folder: Path, vocab_size: int) -> None:
    import gguf

    data = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))
    model = data.get("model", {})
    if model.get("type") != "BPE":
        raise InputError(f"GGUF export knows byte-level BPE tokenizers; this one is {model.get('type')!r}",
                         hint="export without --gguf")
    vocab: dict[str, int] = dict(model["vocab"])
    special = {t["content"]: int(t["id"]) for t in data.get("added_tokens", []) if t.get("special")}
    vocab.update(special)
    by_id = {i: t for t, i in vocab.items()}
    tokens, types = [], []
    for i in range(vocab_size):  # the embedding may be larger than the vocabulary: pad as llama.cpp does
        token = by_id.get(i)
        if token is None:
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
        else:
            tokens.append(token)
            types.append(gguf.TokenType.CONTROL if token in special else gguf.TokenType.NORMAL)
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("gpt-2")  # ByteLevel(use_regex=True): GPT-2's split regex
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    tok_config = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8")) \
        if (folder / "tokenizer_config.json").is_file() else {}

    def token_id(key: str) -> int | None:
        value = tok_config.get(key)
        value = value.get("content") if isinstance(value, dict) else value
        return vocab.get(value) if isinstance(value, str) else None

    for key, add in (("bos_token", writer.add_bos_token_id), ("eos_token", writer.add_eos_token_id),
                     ("pad_token", writer.add_pad_token_id)):
        found = token_id(key)
        if found is not None:
            add(found)
    writer.add_add_bos_token(bool(tok_config.get("add_bos_token", False)))
    template = tok_config.get("chat_template")
    if not (isinstance(template, str) and template) and (folder / CHAT_TEMPLATE_FILE).is_file():
        template = (folder / CHAT_TEMPLATE_FILE).read_text(encoding="utf-8")  # converted releases keep it apart
    if isinstance(template, str) and template:
        writer.add_chat_template(template)
