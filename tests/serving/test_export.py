"""``commonforge export``: a release out of the forge, loaded by other people's code, untouched.

forge-tiny (built once per run) is exported, by the command for full precision and in process for
its quantized variants, and the result is loaded by transformers' ``from_pretrained``, lm-eval's
``hf`` model (HFLM) and transformers' GGUF reader; each must compute what our loader computes
(float32 on the CPU, same weights: logits agree to float rounding). The OpenSSF Model Signing
signature is checked by the ``model-signing`` project's own verifier (its Python API and its
``model_signing verify key`` command). vLLM is not installed here: serving/export.py's docstring
argues from its loader why it reads the same directory.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from commonforge.errors import ForgeError, InputError, IntegrityError, VerificationError
from registry.digest import sha256_file
from serving.export import SIGNATURE, export_release, verify_signature
from tests.helpers import VENV_BIN, cli
from tests.serving.conftest import REF
from tests.trust.conftest import forge, trust_forge  # noqa: F401  (fixtures: maintainers' keys, a governed forge)

TEXT = "Call me Ishmael. Some years ago, never mind how long precisely, having little money"


@pytest.fixture(scope="module")
def exported(tiny_forge, tmp_path_factory) -> Path:
    """``commonforge export forge-tiny DIR --gguf`` for real, in the tiny forge."""
    dest = tmp_path_factory.mktemp("export") / "forge-tiny"
    result = cli("export", REF, str(dest), "--gguf", cwd=tiny_forge.root, env=tiny_forge.env, timeout=300)
    assert result.returncode == 0, result.stderr
    assert f"exported {REF} (full, draft) to {dest}: 5 files verified" in result.stdout
    return dest


def _ids(loaded):
    import torch

    return torch.tensor([loaded.tokenizer(TEXT)["input_ids"]])


def _logits(model, ids):
    import torch

    with torch.no_grad():
        return model(ids).logits


def _transformers(directory: Path, **kwargs):
    import torch
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(directory), local_files_only=True, dtype=torch.float32,
                                                **kwargs).eval()


def test_export_holds_the_manifests_bytes_the_card_and_the_chat_template(exported, tiny_loaded, tiny_forge):
    release = tiny_loaded.release
    names = {"config.json", "model.safetensors", "generation_config.json", "tokenizer.json", "tokenizer_config.json"}
    for a in release.manifest.artifacts:
        if a.variant is None:
            assert sha256_file(exported / a.path) == a.sha256, a.path
    assert names == {a.path for a in release.manifest.artifacts if a.variant is None}
    assert sorted(p.name for p in exported.iterdir()) == sorted(
        names | {"README.md", "chat_template.jinja", "loss.png", "forge-tiny.gguf"})
    card = tiny_forge.root / "model_cards" / "published" / "forge-tiny" / "1.0.0" / "README.md"
    assert (exported / "README.md").read_bytes() == card.read_bytes()
    template = json.loads((exported / "tokenizer_config.json").read_text())["chat_template"]
    assert (exported / "chat_template.jinja").read_text() == template
    assert not [p for p in exported.parent.iterdir() if p.name.startswith(".tmp-export")]


def test_transformers_loads_the_export_and_computes_our_logits(exported, tiny_loaded):
    from transformers import AutoTokenizer

    ids = _ids(tiny_loaded)
    ours = _logits(tiny_loaded.model, ids)
    theirs = _logits(_transformers(exported), ids)
    import torch

    torch.testing.assert_close(theirs, ours, atol=1e-5, rtol=1e-5)
    tokenizer = AutoTokenizer.from_pretrained(str(exported), local_files_only=True)
    assert tokenizer(TEXT)["input_ids"] == tiny_loaded.tokenizer(TEXT)["input_ids"]
    chat = [{"role": "user", "content": "Who is Ishmael?"}]
    assert tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True) == \
        tiny_loaded.tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)


def test_lm_eval_hf_model_loads_the_export_and_scores_as_we_do(exported, tiny_loaded):
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    from commonforge.settings import apply_privacy
    from evals.adapter import ForgeLM

    apply_privacy()  # offline Hugging Face in this process
    hflm = HFLM(pretrained=str(exported), device="cpu", batch_size=1, dtype="float32")
    hflm.model.generation_config.max_new_tokens = None  # the release's chat default (see tests/evals/test_adapter)

    def request():
        return [Instance("loglikelihood", {}, ("Call me Ishmael. Some years ago,", " never mind how long"), idx=0)]

    (theirs, theirs_greedy), = hflm.loglikelihood(request())
    (ours, ours_greedy), = ForgeLM(tiny_loaded, batch_size=1).loglikelihood(request())
    assert theirs < 0 and abs(theirs - ours) <= 1e-4 + 1e-5 * abs(ours), (theirs, ours)
    assert theirs_greedy == ours_greedy


def test_the_gguf_is_llamas_layout_and_reads_back_as_our_model(exported, tiny_loaded):
    """transformers' GGUF reader (integrations/ggml.py: names, metadata, the reverse q/k permutation,
    the gpt2 tokenizer) rebuilds the exact model; llama.cpp itself runs in the benchmark environment only."""
    import gguf
    from transformers import AutoTokenizer

    reader = gguf.GGUFReader(str(exported / "forge-tiny.gguf"))
    arch = reader.fields["general.architecture"]
    assert bytes(arch.parts[arch.data[0]]).decode() == "llama"
    names = {t.name for t in reader.tensors}
    assert {"token_embd.weight", "output_norm.weight", "blk.0.attn_q.weight", "blk.0.ffn_gate.weight"} <= names
    ids = _ids(tiny_loaded)
    model = _transformers(exported, gguf_file="forge-tiny.gguf")
    import torch

    torch.testing.assert_close(_logits(model, ids), _logits(tiny_loaded.model, ids), atol=1e-5, rtol=1e-5)
    tokenizer = AutoTokenizer.from_pretrained(str(exported), gguf_file="forge-tiny.gguf", local_files_only=True)
    assert tokenizer(TEXT)["input_ids"] == tiny_loaded.tokenizer(TEXT)["input_ids"]
    template = reader.fields["tokenizer.chat_template"]
    assert bytes(template.parts[template.data[0]]).decode() == (exported / "chat_template.jinja").read_text()


def test_the_gguf_carries_a_chat_template_kept_in_its_own_file(exported, tmp_path):
    """A converted release keeps its template in chat_template.jinja, not in tokenizer_config.json:
    llama.cpp reads tokenizer.chat_template, so the GGUF must still carry it."""
    import gguf

    from serving.export import write_gguf

    folder = tmp_path / "converted"
    shutil.copytree(exported, folder)
    config = json.loads((folder / "tokenizer_config.json").read_text())
    template = config.pop("chat_template")
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    (folder / "chat_template.jinja").write_text(template)
    out = write_gguf(folder, tmp_path / "converted.gguf", name="forge-tiny", version="1.0.0", license="CC0-1.0")
    field = gguf.GGUFReader(str(out)).fields["tokenizer.chat_template"]
    assert bytes(field.parts[field.data[0]]).decode() == template


@pytest.mark.parametrize("variant", ["int8", "int4-g32"])
def test_a_quantized_variant_exports_as_compressed_tensors_that_transformers_loads(variant, tiny_settings, tmp_path):
    """Our symmetric int4 and int8 variants are compressed-tensors pack-quantized (kernels/formats.py):
    transformers dequantizes them and must compute what our QuantLinear computes."""
    from serving.loader import load_release

    result = export_release(REF, tmp_path / variant, variant=variant, settings=tiny_settings)
    release = load_release(REF, variant=variant, device="cpu", settings=tiny_settings)
    for a in release.release.manifest.artifacts:
        if a.variant == variant:
            assert sha256_file(tmp_path / variant / a.path.rsplit("/", 1)[-1]) == a.sha256
    config = json.loads((tmp_path / variant / "config.json").read_text())
    assert config["quantization_config"]["quant_method"] == "compressed-tensors" and result.variant == variant
    ids = _ids(release)
    import torch

    torch.testing.assert_close(_logits(_transformers(tmp_path / variant), ids), _logits(release.model, ids),
                               atol=1e-5, rtol=1e-5)


def _store_copy(tiny_settings, tmp_path):
    import dataclasses

    store = tmp_path / "store"
    shutil.copytree(tiny_settings.store_dir, store)
    return dataclasses.replace(tiny_settings, store_dir=store)


def test_a_tampered_store_object_is_refused_and_nothing_is_written(tiny_settings, tiny_loaded, tmp_path):
    settings = _store_copy(tiny_settings, tmp_path)
    weights = next(a for a in tiny_loaded.release.manifest.artifacts if a.path == "model.safetensors")
    blob = settings.store_dir / "sha256" / weights.sha256[:2] / weights.sha256[2:4] / weights.sha256
    os.chmod(blob, 0o644)
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0x01  # one bit of one weight
    blob.write_bytes(bytes(data))
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(IntegrityError, match=r"model/forge-tiny@1.0.0:model.safetensors"):
        export_release(REF, out / "forge-tiny", settings=settings)
    assert list(out.iterdir()) == []  # neither the directory nor a staging folder


def test_a_non_empty_directory_is_replaced_only_with_force(tiny_settings, tmp_path):
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "precious.txt").write_text("mine")
    with pytest.raises(InputError, match="exists and is not empty"):
        export_release(REF, dest, variant="int8", settings=tiny_settings)
    assert [p.name for p in dest.iterdir()] == ["precious.txt"]
    export_release(REF, dest, variant="int8", settings=tiny_settings, force=True)
    assert not (dest / "precious.txt").exists() and (dest / "model.safetensors").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dest"]


def test_a_signed_export_passes_model_signings_verifier_and_tampering_does_not(tiny_settings, trust_forge, tmp_path):  # noqa: F811
    """Signed with a maintainer's P-256 key (ann's, a founding maintainer of the trust tests' policy)."""
    from model_signing import verifying

    ann = trust_forge.keys["ann"]
    public = tmp_path / "ann.pub"
    public.write_text(ann.public_key)
    dest = tmp_path / "signed"
    result = export_release(REF, dest, variant="int8", settings=tiny_settings, sign="ann",
                            keys_dir=trust_forge.keys_dir)
    assert result.signature == dest / SIGNATURE and result.signed_by == ann.keyid
    verifying.Config().use_elliptic_key_verifier(public_key=public).verify(dest, dest / SIGNATURE)
    run = subprocess.run([str(VENV_BIN / "model_signing"), "verify", "key", str(dest), "--signature",
                          str(dest / SIGNATURE), "--public_key", str(public)], capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0 and "Verification succeeded" in run.stdout, run.stdout + run.stderr

    config = dest / "config.json"
    original = config.read_bytes()
    config.write_bytes(original[:10] + bytes([original[10] ^ 0x20]) + original[11:])  # one byte of one file
    with pytest.raises(ValueError, match="Signature mismatch"):
        verify_signature(dest, public)
    run = subprocess.run([str(VENV_BIN / "model_signing"), "verify", "key", str(dest), "--signature",
                          str(dest / SIGNATURE), "--public_key", str(public)], capture_output=True, text=True,
                         timeout=120)
    assert run.returncode != 0 and "Verification succeeded" not in run.stdout
    config.write_bytes(original)
    verify_signature(dest, public)
    (dest / "extra.safetensors").write_bytes(b"\0" * 16)  # a file added
    with pytest.raises(ValueError, match="Extra files found in model 'signed': extra.safetensors"):
        verify_signature(dest, public)
    (dest / "extra.safetensors").unlink()
    other = tmp_path / "dan.pub"  # another key's signature does not verify
    other.write_text(trust_forge.keys["dan"].public_key)
    with pytest.raises(ValueError):
        verify_signature(dest, other)


def test_signing_refuses_an_ed25519_key_and_a_wrong_passphrase_before_writing(tiny_settings, trust_forge,  # noqa: F811
                                                                              tmp_path):
    from trust.keys import generate

    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(InputError, match="is ed25519; OpenSSF Model Signing's key method signs with ECDSA keys only"):
        export_release(REF, out / "a", settings=tiny_settings, sign="cat", keys_dir=trust_forge.keys_dir)
    keys = tmp_path / "keys"
    pat = generate(keys, "Pat", "Acme", "ecdsa", passphrase=b"correct horse")
    with pytest.raises(InputError, match="is passphrase-protected"):
        export_release(REF, out / "b", settings=tiny_settings, sign="Pat", keys_dir=keys)
    with pytest.raises(InputError, match="cannot open the private key"):
        export_release(REF, out / "c", settings=tiny_settings, sign="Pat", keys_dir=keys, passphrase=b"wrong")
    assert list(out.iterdir()) == []
    export_release(REF, out / "d", variant="int8", settings=tiny_settings, sign="Pat", keys_dir=keys,
                   passphrase=b"correct horse")
    public = tmp_path / "pat.pub"
    public.write_text(pat.public_key)
    verify_signature(out / "d", public)


def test_an_export_signature_is_no_statement_the_forge_reads(tiny_forge, trust_forge, tmp_path):  # noqa: F811
    """Signing an export writes model.sig into the export only: the release's statements, and so its
    status, are what they were (trust reads registry/entries/.../statements, never an export)."""
    from tests.helpers import forge_env

    root = tmp_path / "forge"
    shutil.copytree(tiny_forge.root, root, symlinks=True)
    env = forge_env(tmp_path, COMMONFORGE_STORE=str(tiny_forge.state / "store"))
    before = cli("status", REF, cwd=root, env=env, timeout=120)
    files_before = sorted(str(p.relative_to(root)) for p in (root / "registry").rglob("*") if p.is_file())
    result = cli("export", REF, str(tmp_path / "out"), "--variant", "int8", "--sign", "ann", "--keys-dir",
                 str(trust_forge.keys_dir), cwd=root, env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    assert f"signed with key {trust_forge.keys['ann'].keyid}" in result.stdout
    assert (tmp_path / "out" / SIGNATURE).is_file()
    assert sorted(str(p.relative_to(root)) for p in (root / "registry").rglob("*") if p.is_file()) == files_before
    after = cli("status", REF, cwd=root, env=env, timeout=120)
    assert before.returncode == after.returncode and after.stdout == before.stdout


def test_an_edited_card_is_refused_and_a_missing_one_becomes_a_note(tiny_forge, tiny_settings, tmp_path):
    """README.md is the card its record hashes; without a card the export still happens, saying so."""
    import dataclasses

    from commonforge.settings import Settings

    root = tmp_path / "forge"
    shutil.copytree(tiny_forge.root, root, symlinks=True, ignore=shutil.ignore_patterns("build", ".git", ".dvc"))
    settings = dataclasses.replace(Settings.load(root), store_dir=tiny_settings.store_dir)
    card = root / "model_cards" / "published" / "forge-tiny" / "1.0.0" / "README.md"
    card.write_text(card.read_text().replace("forge-tiny", "forge-tiny (better than GPT-5)", 1))
    with pytest.raises(IntegrityError, match="model card model_cards/published/forge-tiny/1.0.0/README.md"):
        export_release(REF, tmp_path / "edited", variant="int8", settings=settings)
    assert not (tmp_path / "edited").exists()
    (root / "registry" / "entries" / "models" / "forge-tiny" / "1.0.0.card.yaml").unlink()
    result = export_release(REF, tmp_path / "plain", variant="int8", settings=settings)
    assert result.card is None
    assert "This release has no rendered model card" in (tmp_path / "plain" / "README.md").read_text()


def test_a_revoked_release_is_not_exported_unless_insisted(forge, tmp_path):  # noqa: F811
    from commonforge.settings import Settings
    from trust.statements import RevocationPredicate

    for who in ("bob", "cat"):
        forge.sign(who, "revocation", "published", RevocationPredicate(
            signed_at="2026-11-01T00:00:00Z", reason="The training data turned out to include a non-free text.",
            severity="critical"))
    out = tmp_path / "out"
    with pytest.raises(VerificationError, match="model/sample@1.0.0 is revoked"):
        export_release("model/sample@1.0.0", out, settings=Settings.load(forge.root))
    # Allowed, it gets past the status to the release itself (a sample without weights): the refusal was the status's.
    with pytest.raises(ForgeError, match="has no config.json"):
        export_release("model/sample@1.0.0", out, settings=Settings.load(forge.root), allow_revoked=True)
    assert not out.exists()


def test_export_refusals_name_the_fix(tiny_forge, tmp_path):
    result = cli("export", REF, str(tmp_path / "x"), "--variant", "int8", "--gguf", cwd=tiny_forge.root,
                 env=tiny_forge.env, timeout=120)
    assert result.returncode == 2 and "--gguf writes the full-precision weights" in result.stderr
    result = cli("export", REF, str(tmp_path / "x"), "--variant", "int3", cwd=tiny_forge.root, env=tiny_forge.env,
                 timeout=120)
    assert result.returncode == 2 and "has no variant 'int3'" in result.stderr and "available: full" in result.stderr
    assert not (tmp_path / "x").exists()
