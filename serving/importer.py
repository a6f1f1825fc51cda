"""``commonforge import PATH``: register an existing Hugging Face model directory as a release.

    result = import_model(settings, Path("~/models/my-llama"), name="my-llama", license="Apache-2.0")
    result.release.ref        -> "model/my-llama@1.0.0"  (provenance "imported")

An imported release is a model the forge did not build: its manifest has no recipe, source
commit, lock, environment or datasets, every artifact has stage ``"import"``, and it can never
be marked reproduced. The files go into the store unchanged (so their digests are the ones a
user can compare with wherever the model came from); the release entry and a provenance
record with ``imported_from`` go into ``registry/entries/models/<name>/``.

Everything is checked before anything is written; a refused directory changes nothing:

* pickle weights (``*.bin``, ``*.pt``, ``*.pth``, ``*.ckpt``, ``*.pkl``, ``*.pickle``): loading them
  can run code; only safetensors are imported (even beside safetensors: remove them first);
* custom code: ``auto_map`` / ``trust_remote_code`` in ``config.json``, or any ``*.py`` file;
* symlinks that point outside the directory (a symlink inside it is read as its target), and
  sub-directories (the release is one flat directory, like the ones the forge builds);
* no ``config.json``, no ``model_type`` in it, an architecture transformers does not know, or a
  quantized checkpoint (``quantization_config``: quantized variants are made by the forge);
* no ``tokenizer.json`` (a sentencepiece-only ``tokenizer.model`` must be converted first);
* weights: no ``*.safetensors``; several without ``model.safetensors.index.json``; an index whose
  ``weight_map`` names missing shards, leaves shards out, or disagrees with the tensors a
  shard holds; a header that is malformed or points past the end of its file; tensors that
  do not match the architecture in ``config.json`` (names and shapes, checked on a meta-device
  skeleton, so nothing is allocated);
* files of any other kind (only JSON, safetensors, text, markdown, ``.jinja`` templates and
  ``tokenizer.model`` / licence files are part of a model directory);
* a release of that name and version that exists with different content (never rewritten).

Hidden entries (``.git``, ``.cache``, ``.gitattributes``) are skipped.
"""

from __future__ import annotations

import getpass
import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path

from commonforge import __version__
from commonforge.errors import ForgeError, InputError, NotFoundError
from commonforge.machine import machine_info
from commonforge.settings import Settings
from registry import Registry, Store
from registry.digest import sha256_file
from registry.refs import Ref
from registry.schema import MANIFEST_SCHEMA, Artifact, BuildManifest, ProvenanceRecord, Release, utc_now

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
DATA_SUFFIXES = (".json", ".safetensors", ".txt", ".md", ".jinja")
DATA_NAMES = ("tokenizer.model",)
DOC_PREFIXES = ("license", "notice", "copying", "readme", "use_policy")
INDEX = "model.safetensors.index.json"
MAX_HEADER = 100 << 20  # bytes of a safetensors JSON header


@dataclass
class ImportResult:
    release: Release
    entry: Path | None  # the release entry written; None when an identical release already existed
    provenance: Path | None
    files: list[Path]


def _refuse(message: str, hint: str) -> InputError:
    return InputError(message, hint=hint + "; nothing was imported")


# --- reading the directory ------------------------------------------------------------------


def scan_directory(root: Path) -> dict[str, Path]:
    """The directory's files (name -> real path), refusing anything that must not be imported."""
    if not root.is_dir():
        raise NotFoundError(f"model directory {root}", hint="give the folder holding config.json")
    root = root.resolve()
    files: dict[str, Path] = {}
    pickles: list[str] = []
    code: list[str] = []
    subdirs: list[str] = []
    unknown: list[str] = []
    escaping: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = Path(dirpath).relative_to(root)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            rel = (rel_dir / name).as_posix()
            lower = name.lower()
            if lower.endswith(PICKLE_SUFFIXES):
                pickles.append(rel)
            elif lower.endswith(".py"):
                code.append(rel)
        for d in dirnames:  # symlinked folders are listed but never walked into
            full = Path(dirpath) / d
            if full.is_symlink():
                inside = full.resolve().is_relative_to(root)
                (subdirs if inside else escaping).append((rel_dir / d).as_posix())
        if rel_dir != Path("."):
            subdirs.append(rel_dir.as_posix())
            continue
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            path = root / name
            if path.is_symlink():
                target = path.resolve()
                if not target.is_relative_to(root):
                    escaping.append(f"{name} -> {os.readlink(path)}")
                    continue
                if not target.is_file():
                    unknown.append(name)
                    continue
            lower = name.lower()
            if lower.endswith(PICKLE_SUFFIXES) or lower.endswith(".py"):
                continue
            if lower.endswith(DATA_SUFFIXES) or lower in DATA_NAMES or lower.startswith(DOC_PREFIXES):
                files[name] = path.resolve()
            else:
                unknown.append(name)
    if pickles:
        raise _refuse(f"{root} holds pickle files, which can run code when loaded: {', '.join(pickles)}",
                      "only safetensors weights are imported: convert them (or delete them if safetensors "
                      "copies are there) and import again")
    if code:
        raise _refuse(f"{root} holds Python code: {', '.join(code)}; the forge never runs a model's own code",
                      "only architectures built into transformers can be imported")
    if escaping:
        raise _refuse(f"{root} has symlinks that point outside it: {', '.join(escaping)}",
                      "copy the real files into the directory (e.g. `cp -rL`) and import the copy")
    if subdirs:
        raise _refuse(f"{root} has sub-directories: {', '.join(subdirs)}",
                      "a release is one flat directory: move what the model needs to the top level")
    if unknown:
        raise _refuse(f"{root} holds files that are not part of a model directory: {', '.join(unknown)}",
                      "remove them (weights, configs, tokenizer and licence files are imported)")
    return files


def read_config(files: dict[str, Path]) -> dict:
    if "config.json" not in files:
        raise _refuse("the directory has no config.json", "is this a Hugging Face model directory?")
    try:
        config = json.loads(files["config.json"].read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError) as err:
        raise _refuse(f"config.json is not valid JSON: {err}", "fix or replace it") from None
    if not isinstance(config, dict):
        raise _refuse("config.json is not a JSON object", "fix or replace it")
    if "auto_map" in config or config.get("trust_remote_code"):
        raise _refuse("config.json asks for custom model code (auto_map); the forge never runs it",
                      "only architectures built into transformers can be imported")
    if "model_type" not in config:
        raise _refuse("config.json has no model_type", "is this a transformers model?")
    if "quantization_config" in config:
        raise _refuse("the checkpoint is already quantized (quantization_config in config.json)",
                      "import the full-precision model; quantized variants are made by the forge")
    return config


def check_tokenizer(files: dict[str, Path]) -> None:
    if "tokenizer.json" not in files:
        hint = ("convert the sentencepiece tokenizer.model to tokenizer.json first "
                "(AutoTokenizer.from_pretrained(...).save_pretrained(...))"
                if "tokenizer.model" in files else "add the model's tokenizer.json")
        raise _refuse("the directory has no tokenizer.json", hint)
    from tokenizers import Tokenizer

    try:
        Tokenizer.from_file(str(files["tokenizer.json"]))
    except Exception as err:  # noqa: BLE001 - whatever the tokenizers library refuses
        raise _refuse(f"tokenizer.json does not load: {err}", "replace it with the model's own") from None
    if "tokenizer_config.json" in files:
        try:
            json.loads(files["tokenizer_config.json"].read_text(encoding="utf-8"))
        except (UnicodeDecodeError, ValueError) as err:
            raise _refuse(f"tokenizer_config.json is not valid JSON: {err}", "fix or replace it") from None


def safetensors_header(path: Path) -> dict[str, dict]:
    """Tensor name -> {dtype, shape, data_offsets}, checked against the file's size."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        raw = f.read(8)
        if len(raw) < 8:
            raise _refuse(f"{path.name} is not a safetensors file (too short)", "replace it")
        (n,) = struct.unpack("<Q", raw)
        if n > MAX_HEADER or 8 + n > size:
            raise _refuse(f"{path.name}: safetensors header of {n} bytes does not fit the file", "replace it")
        try:
            header = json.loads(f.read(n).decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as err:
            raise _refuse(f"{path.name}: the safetensors header is not JSON: {err}", "replace it") from None
    if not isinstance(header, dict):
        raise _refuse(f"{path.name}: the safetensors header is not an object", "replace it")
    header.pop("__metadata__", None)
    data = size - 8 - n
    for name, info in header.items():
        try:
            start, end = info["data_offsets"]
            ok = 0 <= start <= end <= data and isinstance(info["shape"], list) and isinstance(info["dtype"], str)
        except (KeyError, TypeError, ValueError):
            ok = False
        if not ok:
            raise _refuse(f"{path.name}: tensor {name!r} has a malformed entry or points past the end of the file",
                          "the file is truncated or corrupt: download it again")
    return header


def weight_tensors(files: dict[str, Path]) -> dict[str, tuple[str, list[int]]]:
    """Every tensor of the checkpoint: name -> (shard file, shape); shards checked against the index."""
    shards = sorted(n for n in files if n.endswith(".safetensors"))
    if not shards:
        raise _refuse("the directory has no *.safetensors weights", "convert the weights to safetensors")
    tensors: dict[str, tuple[str, list[int]]] = {}
    if INDEX not in files:
        if len(shards) > 1:
            raise _refuse(f"several safetensors files ({', '.join(shards)}) but no {INDEX}",
                          "add the index that maps each tensor to its shard")
        for name, info in safetensors_header(files[shards[0]]).items():
            tensors[name] = (shards[0], info["shape"])
        return tensors
    try:
        index = json.loads(files[INDEX].read_text(encoding="utf-8"))
        weight_map = index["weight_map"]
        assert isinstance(weight_map, dict) and all(isinstance(v, str) for v in weight_map.values())
    except (UnicodeDecodeError, ValueError, KeyError, TypeError, AssertionError):
        raise _refuse(f"{INDEX} is not a valid index (no weight_map of tensor -> file)", "fix or replace it") from None
    named = set(weight_map.values())
    missing = sorted(named - set(shards))
    unlisted = sorted(set(shards) - named)
    if missing or unlisted:
        raise _refuse(f"{INDEX} does not match the shards: "
                      + "; ".join(part for part in [missing and f"missing {', '.join(missing)}",
                                                    unlisted and f"not in the index {', '.join(unlisted)}"] if part),
                      "the download is incomplete or mixes two checkpoints")
    for shard in sorted(named):
        header = safetensors_header(files[shard])
        expected = {t for t, f in weight_map.items() if f == shard}
        if set(header) != expected:
            extra, absent = sorted(set(header) - expected), sorted(expected - set(header))
            raise _refuse(f"{shard} does not hold the tensors {INDEX} says "
                          f"(unexpected {extra[:5]}, missing {absent[:5]})",
                          "the download is incomplete or mixes two checkpoints")
        for name, info in header.items():
            tensors[name] = (shard, info["shape"])
    return tensors


def check_architecture(config: dict, tensors: dict[str, tuple[str, list[int]]]) -> None:
    """The tensors must be exactly what transformers' class for ``model_type`` expects (on the meta device)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = dict(config)
    model_type = cfg.pop("model_type")
    try:
        hf_config = AutoConfig.for_model(model_type, **cfg)
        with torch.device("meta"):
            skeleton = AutoModelForCausalLM.from_config(hf_config, trust_remote_code=False)
    except Exception as err:  # noqa: BLE001 - unknown or unsupported architecture
        raise _refuse(f"transformers cannot build a causal LM from config.json ({model_type}): {err}",
                      "only causal language models built into transformers can be imported") from None
    expected = {k: list(v.shape) for k, v in skeleton.state_dict().items()}
    if getattr(skeleton.config, "tie_word_embeddings", False):
        expected.pop("lm_head.weight", None)
        tensors = {k: v for k, v in tensors.items() if k != "lm_head.weight"}
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    wrong = sorted(k for k in set(expected) & set(tensors) if expected[k] != list(tensors[k][1]))
    if missing or unexpected or wrong:
        raise _refuse(
            "the weights do not match config.json: "
            + "; ".join(part for part in [missing and f"missing {missing[:5]}", unexpected and f"unexpected {unexpected[:5]}",
                                          wrong and f"wrong shape {[(k, tensors[k][1], expected[k]) for k in wrong[:3]]}"]
                        if part),
            "config.json and the weights come from different models")


# --- registering ----------------------------------------------------------------------------


def plan_import(settings: Settings, path: Path, *, name: str, license: str, version: str = "1.0.0",
                base_model: str | None = None) -> tuple[Release, dict[str, Path]]:
    """Check everything and build the release; writes nothing."""
    files = scan_directory(Path(path).expanduser())
    config = read_config(files)
    check_tokenizer(files)
    tensors = weight_tensors(files)
    check_architecture(config, tensors)
    base = None
    if base_model:
        reg = Registry(settings.root)
        entry = reg.resolve(Ref.parse(base_model, default_kind="model"))
        if not isinstance(entry, Release):
            raise _refuse(f"{base_model} is not a model release", "name the release this model derives from")
        base = entry.ref
    artifacts = [Artifact(path=n, sha256=sha256_file(p), size=p.stat().st_size, stage="import")
                 for n, p in sorted(files.items())]
    try:
        manifest = BuildManifest(schema_version=MANIFEST_SCHEMA, name=name, version=version, provenance="imported",
                                 license=license, artifacts=artifacts, base_model=base)
    except ValueError as err:  # pydantic: bad name, version or licence expression
        raise _refuse(f"cannot describe this import: {err}", "check --name, --version and --license") from None
    return Release.from_manifest(manifest), files


def import_model(settings: Settings, path: Path, *, name: str, license: str, version: str = "1.0.0",
                 base_model: str | None = None, imported_by: str | None = None) -> ImportResult:
    release, files = plan_import(settings, path, name=name, license=license, version=version, base_model=base_model)
    reg = Registry(settings.root)
    existing = reg.entry_path(Ref("model", name, version))
    if existing.exists():
        current = reg.release(f"model/{name}@{version}")
        if current.release_digest != release.release_digest:
            raise ForgeError(f"{current.ref} already exists with digest {current.release_digest}; refusing to "
                             f"write a different release ({release.release_digest}) under the same version",
                             hint="import it under a new --version")
    # The store first (content-addressed: an interruption leaves only unreferenced objects),
    # then the entry, then the record that names it.
    store = Store(settings.store_dir)
    for a in release.manifest.artifacts:
        store.put_file(files[a.path], expected=a.sha256)
    if existing.exists():
        return ImportResult(release, None, None, list(files.values()))
    entry = reg.save_release(release)
    record = ProvenanceRecord(
        release_digest=release.release_digest,
        built_by=imported_by or getpass.getuser(),
        created_at=utc_now(),
        machine=machine_info(), forge_version=__version__, imported_from=str(Path(path).expanduser().resolve()),
    )
    prov = reg.save_record(release, "provenance", record)
    return ImportResult(release, entry, prov, list(files.values()))
