"""``commonforge finetune``: a LoRA fine-tune of forge-tiny on a small chat file, for real (peft,
the loader, the user registry), and the bad input it must refuse without writing anything."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from commonforge.errors import InputError
from pipelines.finetune import read_data

ANSWER = "Arr, matey! {q}, says the pirate."
QUESTIONS = ["What is the sea?", "Who wrote the book?", "Where is the ship?", "What do you see?",
             "Tell me of the whale.", "What is a storm?", "Who is the captain?", "Why sail?",
             "What is the harbour?", "Where does the wind go?"]
STEPS = ("--steps", "40", "--learning-rate", "0.005", "--batch-size", "4")


def chat_file(path: Path, n: int = 20) -> Path:
    with path.open("w", encoding="utf-8") as f:
        for i in range(n):
            q = QUESTIONS[i % len(QUESTIONS)]
            f.write(json.dumps({"messages": [{"role": "user", "content": q},
                                             {"role": "assistant", "content": ANSWER.format(q=q.lower().rstrip("?."))}]})
                    + "\n")
    return path


def run(forge, user: Path, *args: str):
    return forge.cli("finetune", *args, env={**forge.env, "COMMONFORGE_USER_REGISTRY": str(user)}, timeout=600)


@pytest.fixture(scope="module")
def pirate(tiny_forge, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("finetune")
    data = chat_file(tmp / "pirate-chats.jsonl")
    user = tmp / "user-a"
    result = run(tiny_forge, user, "forge-tiny", "--data", str(data), "--name", "tiny-pirate", *STEPS)
    assert result.returncode == 0, result.stderr[-3000:]
    return tmp, data, user, result


def _entry(user: Path) -> dict:
    import yaml

    return yaml.safe_load((user / "registry/entries/models/tiny-pirate/1.0.0.yaml").read_text())


def test_the_adapter_is_identical_in_two_processes_and_the_held_out_loss_drops(tiny_forge, pirate):
    import yaml

    from registry.store import Store

    tmp, data, user, first = pirate
    again = run(tiny_forge, tmp / "user-b", "forge-tiny", "--data", str(data), "--name", "tiny-pirate", *STEPS)
    assert again.returncode == 0, again.stderr[-3000:]
    a, b = _entry(user), _entry(tmp / "user-b")
    assert a["release_digest"] == b["release_digest"]
    adapters = {x["path"]: x["sha256"] for x in a["manifest"]["artifacts"] if x["path"].startswith("adapter/")}
    assert set(adapters) == {"adapter/adapter_config.json", "adapter/adapter_model.safetensors"}
    for digest in adapters.values():  # the bytes themselves, in both stores
        assert Store(user / ".forge/store").path(digest).read_bytes() == \
            Store(tmp / "user-b/.forge/store").path(digest).read_bytes()
    m = a["manifest"]
    assert m["provenance"] == "finetuned" and m["private"] is True and m["base_model"] == "model/forge-tiny@1.0.0"
    assert m["finetune"]["data_format"] == "chat" and m["finetune"]["settings"]["steps"] == 40
    record = yaml.safe_load((user / "registry/entries/models/tiny-pirate/1.0.0.finetune.yaml").read_text())
    assert record["train_examples"] == 16 and record["heldout_examples"] == 4
    assert record["heldout_bpb_finetuned"] < record["heldout_bpb_base"]
    assert record["loss_last"] < record["loss_first"]
    assert "held-out (4 examples) bits per byte: base" in first.stdout
    # the data stays where the user put it: its name and digest only
    assert data.read_text() not in json.dumps(a) and "pirate-chats.jsonl" == record["data_file"]
    assert str(tmp) not in (user / "registry/entries/models/tiny-pirate/1.0.0.yaml").read_text()


def test_the_fine_tune_is_listed_as_private_shown_with_its_lineage_and_generates(tiny_forge, pirate):
    _, _, user, _ = pirate
    env = {**tiny_forge.env, "COMMONFORGE_USER_REGISTRY": str(user)}
    listed = tiny_forge.cli("list", "models", env=env)
    assert listed.returncode == 0, listed.stderr
    row = next(line for line in listed.stdout.splitlines() if "tiny-pirate" in line)
    assert "private" in row and "user registry" in row
    assert "private" not in next(line for line in listed.stdout.splitlines() if "model/forge-tiny@" in line)
    shown = tiny_forge.cli("show", "tiny-pirate", env=env)
    assert shown.returncode == 0, shown.stderr
    assert "FINETUNED (lora, sft) from model/forge-tiny@1.0.0" in shown.stdout and "PRIVATE" in shown.stdout
    assert "held-out bits per byte" in shown.stdout
    out = tiny_forge.cli("generate", "tiny-pirate", "Who is the captain?", "--max-tokens", "8", "--seed", "3",
                         "--temperature", "0", env=env)
    assert out.returncode == 0, out.stderr
    assert "8 tokens" in out.stderr and "through the chat template" in out.stderr
    # lm-eval through the same loader: read from the user registry's layer and store, not the checkout's
    scored = tiny_forge.cli("eval", "tiny-pirate", "--tasks", "arc_easy", "--limit", "4", env=env)
    assert scored.returncode == 0, scored.stderr[-2000:]
    assert "arc_easy" in scored.stdout and "acc_norm" in scored.stdout
    # no weights of its own to export yet: refused clearly, nothing written
    exported = tiny_forge.cli("export", "tiny-pirate", str(user.parent / "export"), env=env)
    assert exported.returncode == 2 and "exporting it (merged, or as a peft adapter directory) is not built yet" \
        in exported.stderr
    assert not (user.parent / "export").exists()
    # nor is it rebuilt by anyone without the data
    rebuilt = tiny_forge.cli("reproduce", "tiny-pirate", env=env)
    assert rebuilt.returncode == 2 and "is a private fine-tune" in rebuilt.stderr


def test_the_loader_merges_the_adapter_onto_the_verified_base(tiny_forge, pirate):
    import dataclasses
    import os

    import torch

    from commonforge.settings import Settings
    from serving.loader import load_release

    _, _, user, _ = pirate
    settings = dataclasses.replace(Settings.load(tiny_forge.root), store_dir=(tiny_forge.state / "store").resolve())
    saved = os.environ.get("COMMONFORGE_USER_REGISTRY")
    os.environ["COMMONFORGE_USER_REGISTRY"] = str(user)
    try:
        tuned = load_release("tiny-pirate", device="cpu", settings=settings)
        base = load_release("model/forge-tiny@1.0.0", device="cpu", settings=settings)
        with pytest.raises(InputError, match="has no variant 'int8'"):
            load_release("tiny-pirate", variant="int8", device="cpu", settings=settings)
        assert tuned.status.layer == "user registry"  # (the layer is named from the variable)
    finally:
        if saved is None:
            os.environ.pop("COMMONFORGE_USER_REGISTRY", None)
        else:
            os.environ["COMMONFORGE_USER_REGISTRY"] = saved
    assert tuned.ref == "model/tiny-pirate@1.0.0"
    names = [n for n, _ in tuned.model.named_modules()]
    assert not any("lora" in n for n in names), "the adapter is merged, not wrapped"
    ids = torch.tensor([tuned.tokenizer("Who is the captain?")["input_ids"]])
    with torch.no_grad():
        a, b = tuned.model(ids).logits, base.model(ids).logits
    assert a.shape == b.shape and not torch.equal(a, b)
    # only the adapted projections moved; everything else is the base's, bit for bit
    tuned_sd, base_sd = tuned.model.state_dict(), base.model.state_dict()
    changed = sorted(k for k in base_sd if not torch.equal(base_sd[k], tuned_sd[k]))
    assert changed and all(k.endswith(("q_proj.weight", "v_proj.weight")) for k in changed)


def test_the_fine_tune_is_served_through_the_openai_client_beside_its_base(tiny_forge, pirate, tmp_path):
    import openai

    from tests.serving.conftest import start_server, stop_server

    _, _, user, _ = pirate
    env = {**tiny_forge.env, "COMMONFORGE_USER_REGISTRY": str(user)}
    tuned = start_server(tiny_forge, tmp_path / "tuned", "--max-batch", "2", env=env, model="tiny-pirate")
    base = start_server(tiny_forge, tmp_path / "base", "--max-batch", "2", env=env)
    try:
        answers = {}
        for srv in (tuned, base):
            client = openai.OpenAI(base_url=srv.url, api_key="unused", max_retries=0, timeout=60)
            reply = client.chat.completions.create(model=srv.model, messages=[{"role": "user", "content": "Why sail?"}],
                                                   max_tokens=12, temperature=0)
            answers[srv.model] = reply.choices[0].message.content
        assert set(answers) == {"tiny-pirate@1.0.0", "forge-tiny@1.0.0"}
    finally:
        stop_server(tuned)
        stop_server(base)


def test_a_peer_never_offers_a_private_fine_tune(pirate):
    import httpx

    from registry.schema import Release
    from tests.sharing.test_peer import start, stop
    from trust import keys as trust_keys
    from trust import status as trust_status

    tmp, _, user, _ = pirate
    entry = _entry(user)
    adapter = next(a["sha256"] for a in entry["manifest"]["artifacts"] if a["path"].endswith(".safetensors"))
    peer = start(user, user / ".forge/store", None)
    try:
        index = httpx.get(f"{peer.base}/v1/index").json()["files"]
        assert not any("tiny-pirate" in f["path"] for f in index)
        assert any(f["path"].endswith("policy/0.yaml") for f in index)  # the peer itself works
        for path in ("registry/entries/models/tiny-pirate/1.0.0.yaml",
                     "registry/entries/models/tiny-pirate/1.0.0.finetune.yaml"):
            assert httpx.get(f"{peer.base}/v1/files/{path}").status_code == 404
        assert httpx.get(f"{peer.base}/v1/blobs/{adapter}").status_code == 404
    finally:
        stop(peer)
    # nor is it ever signed for (a statement goes into the log and travels with the release)
    trust_keys.generate(tmp / "keys", "ann", "Acme", "ecdsa", None)
    signer, info = trust_keys.load_signer(tmp / "keys", "ann", None)
    release = Release.model_validate(entry)
    with pytest.raises(InputError, match="is private"):
        trust_status.attest_build(user, release, signer, info)
    assert not (user / "registry/entries/models/tiny-pirate/1.0.0.statements").exists()


def test_a_lora_target_that_is_not_in_the_model_is_refused_naming_the_real_ones(tiny_forge, pirate):
    tmp, data, _, _ = pirate
    user = tmp / "user-bad-target"
    result = run(tiny_forge, user, "forge-tiny", "--data", str(data), "--targets", "q_proj,attn_c", "--steps", "2")
    assert result.returncode == 2, result.stderr
    assert "LoRA target(s) attn_c are not modules of this model" in result.stderr and "o_proj" in result.stderr
    assert not (user / "registry/entries").exists()


def test_a_diverging_run_stops_with_its_step_and_writes_nothing(tiny_forge, pirate):
    tmp, data, _, _ = pirate
    user = tmp / "user-nan"
    result = run(tiny_forge, user, "forge-tiny", "--data", str(data), "--learning-rate", "1e12", "--steps", "30",
                 "--rank", "64", "--alpha", "100000")
    assert result.returncode != 0
    assert "training diverged, nothing was written" in result.stderr and "at step" in result.stderr
    assert not (user / "registry/entries").exists()


def test_examples_longer_than_the_context_are_cut_and_counted(tiny_forge, pirate):
    tmp, _, _, _ = pirate
    long = tmp / "long.txt"
    long.write_text("\n".join(["the whale and the sea " * 40] * 3 + ["a short line of text"] * 3) + "\n")
    user = tmp / "user-long"
    result = run(tiny_forge, user, "forge-tiny", "--data", str(long), "--seq-len", "32", "--steps", "2")
    assert result.returncode == 0, result.stderr
    assert "3 example(s) longer than 32 tokens were cut to 32" in result.stderr
    assert "3 example(s) were cut to --seq-len 32" in result.stdout


# --- bad data: refused before anything loads or is written ------------------------------------


@pytest.mark.parametrize(("lines", "message"), [
    (['{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}', '{"messages": ['],
     "pirate.jsonl:2: not valid JSON"),
    (['{"messages": [{"role": "user", "content": "hi"}]}'], "pirate.jsonl:1: the conversation has no assistant turn"),
    (['{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "   "}]}'],
     "has no assistant turn"),
    (['{"messages": [{"role": "wizard", "content": "hi"}, {"role": "assistant", "content": "yo"}]}'],
     "message 1 needs a role"),
    (['{"messages": "hello"}'], 'no "messages" list'),
    (['["a", "list"]'], "a JSON line must be an object"),
    (['{"prompt": "p", "chosen": "Yes.", "rejected": " Yes. "}'], "the chosen and the rejected answer are identical"),
    (['{"prompt": "p", "chosen": "a"}'], "needs a non-empty string prompt, chosen and rejected"),
    (['{"prompt": "p", "chosen": "a", "rejected": "b"}',
      '{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}'],
     "pirate.jsonl:2: a chat line in a file of preferences lines"),
    (["", "   "], "is empty"),
])
def test_bad_data_is_refused_with_its_line(tmp_path, lines, message):
    path = tmp_path / "pirate.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(InputError, match=message.replace("[", r"\[").replace("(", r"\(")):
        read_data(path)


def test_data_that_is_not_utf8_or_missing_is_refused(tmp_path):
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("caf\xe9 au lait\n".encode("latin-1"))
    with pytest.raises(InputError, match="is not UTF-8"):
        read_data(bad)
    with pytest.raises(InputError, match="is not a file"):
        read_data(tmp_path / "nothing.jsonl")


def test_plain_text_lines_and_the_held_out_split(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("\n".join(f"line {i}" for i in range(12)) + "\n\n")
    data = read_data(path)
    assert data.format == "text" and len(data.examples) == 12
    train, held = data.split(5)
    assert [e.text for e in held] == ["line 4", "line 9"] and len(train) == 10
    few = read_data(chat_file(tmp_path / "few.jsonl", n=3))
    assert few.format == "chat" and few.split(5) == (few.examples, [])


def test_the_loss_counts_the_assistant_turns_only(tiny_forge):
    import dataclasses

    from commonforge.settings import Settings
    from pipelines.finetune import Example, encode
    from serving.loader import load_release

    settings = dataclasses.replace(Settings.load(tiny_forge.root), store_dir=(tiny_forge.state / "store").resolve())
    tok = load_release("model/forge-tiny@1.0.0", device="cpu", settings=settings).tokenizer
    ex = Example(1, messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Why sail?"},
                              {"role": "assistant", "content": "For the whale."}, {"role": "user", "content": "And?"},
                              {"role": "assistant", "content": "The sea."}])
    ids, mask, cut = encode(tok, ex, 256)
    assert not cut and len(ids) == len(mask)
    learned = tok.decode([t for t, m in zip(ids, mask, strict=True) if m])
    assert learned == "For the whale.<|end|>The sea.<|end|>"
    ids, mask, cut = encode(tok, ex, 10)
    assert cut and len(ids) == 10


def test_the_schema_refuses_a_finetuned_release_that_is_not_private_or_names_no_base():
    from pydantic import ValidationError

    from registry.schema import MANIFEST_SCHEMA, Artifact, BuildManifest, FinetunePin, LoraSettings

    pin = FinetunePin(base_sha256="a" * 64, method="lora", objective="sft", data_sha256="b" * 64, data_format="text",
                      settings=LoraSettings())
    common = dict(schema_version=MANIFEST_SCHEMA, name="t", version="1.0.0", license="MIT",
                  artifacts=[Artifact(path="adapter/adapter_model.safetensors", sha256="c" * 64, size=1, stage="finetune")])
    ok = BuildManifest(**common, provenance="finetuned", base_model="model/b@1.0.0", private=True, finetune=pin)
    assert ok.private is True
    for bad, why in [(dict(provenance="finetuned", base_model="model/b@1.0.0", finetune=pin), "is private"),
                     (dict(provenance="finetuned", private=True, finetune=pin), "names its base_model"),
                     (dict(provenance="finetuned", base_model="model/b@1.0.0", private=True), "names its fine-tune"),
                     (dict(provenance="imported", finetune=pin), "names its fine-tune")]:
        with pytest.raises(ValidationError, match=why):
            BuildManifest(**common, **bad)
    # an ordinary release's digest is unchanged by the new fields (they are left out when unset)
    plain = BuildManifest(**common, provenance="imported")
    assert "private" not in plain.model_dump(mode="json", exclude_none=True)


HELPFUL = ["Will you help me?", "Can you aid me?", "Help me, please.", "Could you assist me?", "Do you help people?",
           "Please help.", "I need a hand.", "Can I ask you something?", "Are you able to help?", "Help?"]


def preference_file(path: Path) -> Path:
    with path.open("w", encoding="utf-8") as f:
        for q in HELPFUL:
            f.write(json.dumps({"prompt": q, "chosen": "Yes, gladly. What do you need?",
                                "rejected": "No. Go away."}) + "\n")
    return path


def test_dpo_on_a_handful_of_pairs_moves_the_margin_toward_the_chosen_answers(tiny_forge, pirate):
    """trl's DPOTrainer on a LoRA adapter: log p(chosen) - log p(rejected) on the held-out pairs rises,
    and a second process gives the same adapter."""
    import yaml

    tmp = pirate[0]
    prefs = preference_file(tmp / "kind.jsonl")
    digests = []
    for user in (tmp / "user-dpo-a", tmp / "user-dpo-b"):
        result = run(tiny_forge, user, "forge-tiny", "--preferences", str(prefs), "--name", "tiny-kind",
                     "--steps", "12", "--learning-rate", "0.005", "--batch-size", "2")
        assert result.returncode == 0, result.stderr[-3000:]
        entry = yaml.safe_load((user / "registry/entries/models/tiny-kind/1.0.0.yaml").read_text())
        digests.append(entry["release_digest"])
    assert digests[0] == digests[1]
    assert entry["manifest"]["finetune"]["objective"] == "dpo"
    assert entry["manifest"]["finetune"]["data_format"] == "preferences"
    record = yaml.safe_load((tmp / "user-dpo-b/registry/entries/models/tiny-kind/1.0.0.finetune.yaml").read_text())
    assert record["margin_split"] == "held-out" and record["heldout_examples"] == 2
    assert record["preference_margin_finetuned"] > record["preference_margin_base"]
    assert "log p(chosen) - log p(rejected), mean over the held-out pairs" in result.stdout
    # the pairs given as --data are refused: the flag says what the file is
    wrong = run(tiny_forge, tmp / "user-dpo-c", "forge-tiny", "--data", str(prefs))
    assert wrong.returncode == 2 and "holds preferences lines, but was given as --data" in wrong.stderr
