"""The OpenAI-compatible server for real: `serve forge-tiny` in a subprocess on 127.0.0.1,
driven by the openai client, httpx and lm-eval. (Tests run in file order; the last one stops
the server and reads its privacy audit.)"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time

import httpx
import openai
import pytest
import torch

from tests.privacy.audit import processes, unprotected_processes, violations
from tests.serving.conftest import stop_server

PROMPT = "It was a dark and stormy night; the rain fell in torrents"


def health(server) -> dict:
    return httpx.get(server.base + "/health", timeout=10).json()


def wait_for(server, cond, timeout=5.0) -> dict:
    deadline = time.monotonic() + timeout
    snap = health(server)
    while not cond(snap) and time.monotonic() < deadline:
        time.sleep(0.05)
        snap = health(server)
    return snap


# --- the happy paths ------------------------------------------------------------------------


def test_models_and_health(server, client):
    models = client.models.list().data
    assert [m.id for m in models] == ["forge-tiny@1.0.0"] == [server.model]
    assert models[0].model_extra["root"] == "model/forge-tiny@1.0.0"
    assert models[0].model_extra["context_length"] == 256
    assert health(server)["status"] == "ok"
    assert client.models.retrieve("forge-tiny").id == server.model


def test_completion_with_echo_logprobs_and_usage(client, tiny_loaded, tiny_engine):
    r = client.completions.create(model="forge-tiny", prompt=PROMPT, max_tokens=12, temperature=0, logprobs=3,
                                  echo=True, extra_body={"ignore_eos": True})
    choice = r.choices[0]
    n_prompt = len(tiny_engine.encode(PROMPT))  # BOS, then the prompt's tokens
    assert r.object == "text_completion" and r.model == "forge-tiny@1.0.0"
    assert choice.text.startswith(PROMPT) and len(choice.text) > len(PROMPT)
    assert choice.finish_reason == "length"
    assert (r.usage.prompt_tokens, r.usage.completion_tokens, r.usage.total_tokens) == (n_prompt, 12, n_prompt + 12)
    lp = choice.logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == n_prompt + 12
    assert lp.token_logprobs[0] is None and lp.top_logprobs[0] is None
    assert lp.tokens[0] == tiny_loaded.tokenizer.bos_token and "".join(lp.tokens[1:]) == choice.text
    # The BOS the server put first takes no characters of the text: every offset points into choice.text.
    assert lp.text_offset[0] == lp.text_offset[1] == 0
    assert all(choice.text.startswith(tok, off) for tok, off in zip(lp.tokens[1:], lp.text_offset[1:]))
    assert all(3 <= len(t) <= 4 for t in lp.top_logprobs[1:])
    # greedy: every generated token is its position's best
    assert all(lp.token_logprobs[i] == max(lp.top_logprobs[i].values()) for i in range(n_prompt, n_prompt + 12))


def test_chat_completion(client):
    r = client.chat.completions.create(model="forge-tiny@1.0.0", max_tokens=16, temperature=0.7, seed=1,
                                       messages=[{"role": "system", "content": "Be brief."},
                                                 {"role": "user", "content": "Tell me about the sea."}],
                                       logprobs=True, top_logprobs=2)
    choice = r.choices[0]
    assert r.object == "chat.completion" and choice.message.role == "assistant"
    assert choice.finish_reason in ("stop", "length")
    assert len(choice.logprobs.content) == r.usage.completion_tokens <= 16
    assert all(len(t.top_logprobs) == 2 for t in choice.logprobs.content)


def test_streaming_completion_and_chat(client):
    full = client.completions.create(model="forge-tiny", prompt=PROMPT, max_tokens=20, temperature=0,
                                     extra_body={"ignore_eos": True})
    chunks = list(client.completions.create(model="forge-tiny", prompt=PROMPT, max_tokens=20, temperature=0,
                                            stream=True, stream_options={"include_usage": True},
                                            extra_body={"ignore_eos": True}))
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    assert text == full.choices[0].text
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].usage.completion_tokens == 20
    stream = client.chat.completions.create(model="forge-tiny", messages=[{"role": "user", "content": "Hello!"}],
                                            max_tokens=10, temperature=0, stream=True)
    parts = list(stream)
    assert parts[0].choices[0].delta.role == "assistant"
    assert parts[-1].choices[0].finish_reason in ("stop", "length")
    reply = client.chat.completions.create(model="forge-tiny", messages=[{"role": "user", "content": "Hello!"}],
                                           max_tokens=10, temperature=0)
    assert "".join(p.choices[0].delta.content or "" for p in parts) == reply.choices[0].message.content


def test_seeded_sampling_repeats_over_http(client):
    def once():
        return client.completions.create(model="forge-tiny", prompt=PROMPT, max_tokens=30, temperature=1.0,
                                         top_p=0.95, seed=42, extra_body={"top_k": 40}).choices[0].text

    assert once() == once() == once()


def test_token_prompts_and_several_prompts(client, tiny_loaded):
    ids = [tiny_loaded.tokenizer(p)["input_ids"] for p in ("Call me Ishmael.", PROMPT, "The")]
    r = client.completions.create(model="forge-tiny", prompt=ids, max_tokens=0, echo=True, logprobs=1)
    assert [c.index for c in r.choices] == [0, 1, 2]
    assert [len(c.logprobs.tokens) for c in r.choices] == [len(i) for i in ids]
    assert r.usage.prompt_tokens == sum(map(len, ids)) and r.usage.completion_tokens == 0
    single = client.completions.create(model="forge-tiny", prompt=ids[1], max_tokens=0, echo=True, logprobs=1)
    assert single.choices[0].logprobs.token_logprobs == r.choices[1].logprobs.token_logprobs


# --- scoring with lm-eval ---------------------------------------------------------------------

PAIRS = [
    ("Call me Ishmael. Some years ago", " - never mind how long precisely"),
    ("It is a truth universally acknowledged, that a single man", " in possession of a good fortune"),
    ("The", " whale"),
    ("Four score and seven years ago our fathers brought forth", " on this continent, a new nation"),
    ("She said", " nothing at all, and went home."),
    ("Mr. and Mrs. Dursley", " were proud to say that they were perfectly normal"),
]


@pytest.mark.parametrize("batch_size", [1, 3])
def test_lm_eval_local_completions_matches_in_process_scores(server, tiny_loaded, tmp_path, monkeypatch, batch_size):
    pytest.importorskip("tenacity", reason="lm-eval's API models need tenacity (lm-eval[api])")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    from lm_eval.api.instance import Instance
    from lm_eval.models.openai_completions import LocalCompletionsAPI

    folder = tiny_loaded.tokenizer_folder(tmp_path / "tokenizer")
    lm = LocalCompletionsAPI(base_url=server.url + "/completions", model=server.model, tokenizer=str(folder),
                             tokenizer_backend="huggingface", tokenized_requests=True,
                             max_length=tiny_loaded.context_length, batch_size=batch_size, max_retries=1)
    requests = [Instance("loglikelihood", doc={}, arguments=pair, idx=i) for i, pair in enumerate(PAIRS)]
    got = lm.loglikelihood(requests, disable_tqdm=True)
    # The same requests scored in this process, straight from transformers' forward.
    for (context, continuation), (ll, greedy) in zip(PAIRS, got):
        ctx_enc, cont_enc = lm._encode_pair(context, continuation)
        whole = ctx_enc + cont_enc
        with torch.no_grad():
            logp = torch.log_softmax(tiny_loaded.model(torch.tensor([whole])).logits[0].float(), -1)
        rows = logp[len(ctx_enc) - 1: len(whole) - 1]
        target = torch.tensor(cont_enc)
        ref_ll = rows.gather(1, target[:, None]).sum().item()
        ref_greedy = bool((rows.argmax(-1) == target).all())
        assert ll == pytest.approx(ref_ll, abs=1e-4)
        assert greedy == ref_greedy


# --- bad input: the right 4xx, and the server keeps serving --------------------------------------

BAD = [
    (b"{not json", 400, None),
    (b'{"model": "forge-tiny", "prompt": "caf\xc3"}', 400, None),  # invalid UTF-8
    (b'{"model": "forge-tiny", "prompt": "\\ud800"}', 400, "prompt"),  # lone surrogate
    (b"[1, 2]", 400, None),
    (json.dumps({"prompt": "x"}).encode(), 400, "model"),
    (json.dumps({"model": "gpt-4", "prompt": "x"}).encode(), 404, "model"),
    (json.dumps({"model": "forge-tiny", "prompt": "x", "max_tokens": -5}).encode(), 400, "max_tokens"),
    (json.dumps({"model": "forge-tiny", "prompt": "x", "max_tokens": 10**12}).encode(), 400, "prompt"),
    (json.dumps({"model": "forge-tiny", "prompt": "x", "max_tokens": "ten"}).encode(), 400, "max_tokens"),
    (json.dumps({"model": "forge-tiny", "prompt": "word " * 400}).encode(), 400, "prompt"),
    (json.dumps({"model": "forge-tiny", "prompt": "x", "n": 3}).encode(), 400, "n"),
    (json.dumps({"model": "forge-tiny", "prompt": [5, -1]}).encode(), 400, "prompt"),
    (json.dumps({"model": "forge-tiny", "prompt": [[5, 10**9]]}).encode(), 400, "prompt"),
    (json.dumps({"model": "forge-tiny", "prompt": []}).encode(), 400, "prompt"),
    (json.dumps({"model": "forge-tiny", "prompt": "x", "temperature": 9}).encode(), 400, "temperature"),
    (json.dumps({"model": "forge-tiny", "prompt": "x", "top_p": 0}).encode(), 400, "top_p"),
    (json.dumps({"model": "forge-tiny", "prompt": "x", "logprobs": 99}).encode(), 400, "logprobs"),
    (json.dumps({"model": "forge-tiny", "prompt": "x", "stream": "yes"}).encode(), 400, "stream"),
    (json.dumps({"model": "forge-tiny", "prompt": "x", "stop": [1]}).encode(), 400, "stop"),
]
BAD_CHAT = [
    ({"model": "forge-tiny", "messages": []}, 400, "messages"),
    ({"model": "forge-tiny", "messages": [{"role": "wizard", "content": "hi"}]}, 400, "messages[0].role"),
    ({"model": "forge-tiny", "messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, 400,
     "messages[0].content"),
    ({"model": "forge-tiny", "messages": [{"role": "user", "content": "hi " * 300}]}, 400, "messages"),
    ({"model": "forge-tiny", "messages": [{"role": "user", "content": "hi"}], "top_logprobs": 2}, 400,
     "top_logprobs"),
]


def test_bad_input_gets_openai_shaped_4xx_and_the_server_keeps_serving(server, client):
    with httpx.Client(base_url=server.url, timeout=30) as http:
        for body, status, param in BAD:
            r = http.post("/completions", content=body, headers={"content-type": "application/json"})
            assert r.status_code == status, (body[:80], r.text)
            err = r.json()["error"]
            assert set(err) == {"message", "type", "param", "code"} and err["message"]
            assert err["param"] == param, (body[:80], err)
        for body, status, param in BAD_CHAT:
            r = http.post("/chat/completions", json=body)
            assert (r.status_code, r.json()["error"]["param"]) == (status, param), r.text
        r = http.post("/completions", content=b"x" * (5 << 20), headers={"content-type": "application/json"})
        assert r.status_code == 413 and r.json()["error"]["code"] == "body_too_large"
        assert http.get("/completions").status_code == 405
        assert http.get("/nowhere").json()["error"]["type"] == "not_found_error"
    over = health(server)
    assert over["status"] == "ok" and over["running"] == 0 and over["waiting"] == 0
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="nope", prompt="x")
    with pytest.raises(openai.BadRequestError, match="maximum context length"):
        client.completions.create(model="forge-tiny", prompt=PROMPT, max_tokens=1000)
    assert client.completions.create(model="forge-tiny", prompt=PROMPT, max_tokens=4).usage.completion_tokens <= 4


def test_a_client_that_leaves_mid_stream_frees_its_slot(server):
    before = health(server)["cancelled"]
    body = {"model": "forge-tiny", "prompt": PROMPT, "max_tokens": 200, "stream": True, "ignore_eos": True}
    with httpx.stream("POST", server.url + "/completions", json=body, timeout=30) as r:
        assert r.status_code == 200
        lines = r.iter_lines()
        got = 0
        for line in lines:
            if line.startswith("data: {"):
                got += 1
                if got == 3:
                    break
    snap = wait_for(server, lambda s: s["cancelled"] > before and s["running"] == 0)
    assert snap["cancelled"] == before + 1 and snap["running"] == 0


def test_a_non_streaming_client_that_leaves_is_cancelled(server):
    before = health(server)["cancelled"]
    body = {"model": "forge-tiny", "prompt": PROMPT, "max_tokens": 200, "ignore_eos": True}
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(server.url + "/completions", json=body, timeout=httpx.Timeout(30, read=0.05))
    snap = wait_for(server, lambda s: s["cancelled"] > before and s["running"] == 0)
    assert snap["cancelled"] == before + 1


# --- load --------------------------------------------------------------------------------------


async def _stream_once(http: httpx.AsyncClient, server, i: int) -> tuple[float, float, int]:
    body = {"model": server.model, "prompt": PROMPT if i % 2 else "Call me Ishmael.", "max_tokens": 32,
            "temperature": 0.8, "seed": i, "stream": True, "stream_options": {"include_usage": True}}
    started = time.perf_counter()
    first = None
    usage = None
    done = False
    async with http.stream("POST", "/completions", json=body) as r:
        if r.status_code != 200:
            raise AssertionError(f"status {r.status_code}: {await r.aread()}")
        async for line in r.aiter_lines():
            if not line.startswith("data: "):
                continue
            if line == "data: [DONE]":
                done = True
                break
            chunk = json.loads(line[6:])
            if "error" in chunk:
                raise AssertionError(chunk)
            if first is None:
                first = time.perf_counter()
            usage = chunk.get("usage") or usage
    assert done and usage is not None
    return time.perf_counter() - started, (first or time.perf_counter()) - started, usage["completion_tokens"]


def _pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


def test_load_16_streaming_clients_for_20_seconds(server, capsys):
    async def main():
        latencies, ttfts, tokens, errors = [], [], 0, []
        deadline = time.monotonic() + 20

        async def client(i: int):
            nonlocal tokens
            async with httpx.AsyncClient(base_url=server.url, timeout=60) as http:
                n = 0
                while time.monotonic() < deadline:
                    try:
                        lat, ttft, toks = await _stream_once(http, server, i * 1000 + n)
                    except Exception as err:  # noqa: BLE001 - counted, then asserted
                        errors.append(repr(err))
                        continue
                    latencies.append(lat)
                    ttfts.append(ttft)
                    tokens += toks
                    n += 1

        started = time.monotonic()
        await asyncio.gather(*(client(i) for i in range(16)))
        return latencies, ttfts, tokens, errors, time.monotonic() - started

    latencies, ttfts, tokens, errors, seconds = asyncio.run(main())
    with capsys.disabled():
        print(f"\n[load] 16 streaming clients, {seconds:.1f} s: {len(latencies)} requests, {len(errors)} errors, "
              f"latency p50 {_pct(latencies, .5) * 1000:.0f} ms p99 {_pct(latencies, .99) * 1000:.0f} ms, "
              f"first token p50 {_pct(ttfts, .5) * 1000:.0f} ms p99 {_pct(ttfts, .99) * 1000:.0f} ms, "
              f"{tokens / seconds:.0f} tokens/s, {len(latencies) / seconds:.1f} requests/s")
    assert errors == []
    assert len(latencies) >= 16
    assert health(server)["status"] == "ok"


def test_a_flood_past_the_queue_gets_429s_and_no_crash(server, client):
    async def main():
        body = {"model": server.model, "prompt": PROMPT, "max_tokens": 150, "ignore_eos": True}
        limits = httpx.Limits(max_connections=100)
        async with httpx.AsyncClient(base_url=server.url, timeout=120, limits=limits) as http:
            return await asyncio.gather(*(http.post("/completions", json=body) for _ in range(60)))

    responses = asyncio.run(main())
    codes = [r.status_code for r in responses]
    assert set(codes) <= {200, 429}, codes
    assert codes.count(429) >= 10 and codes.count(200) >= 8  # 8 slots + 16 queued take the first ones
    refused = next(r for r in responses if r.status_code == 429).json()["error"]
    assert refused["type"] == "rate_limit_error" and refused["code"] == "queue_full"
    assert all(r.json()["usage"]["completion_tokens"] == 150 for r in responses if r.status_code == 200)
    snap = wait_for(server, lambda s: s["running"] == 0 and s["waiting"] == 0)
    assert snap["status"] == "ok" and snap["rejected"] >= codes.count(429)
    assert client.completions.create(model="forge-tiny", prompt=PROMPT, max_tokens=3).choices[0].text is not None


# --- binding, keys, tampering, privacy -------------------------------------------------------------


def test_binding_beyond_loopback_needs_an_api_key(tiny_forge):
    from commonforge.errors import InputError
    from serving.api import check_binding

    check_binding("127.0.0.1", None)
    check_binding("::1", None)
    check_binding("0.0.0.0", "key")
    with pytest.raises(InputError, match="API key"):
        check_binding("0.0.0.0", None)
    r = subprocess.run([sys.executable, "-m", "commonforge", "serve", "forge-tiny", "--host",
                        "0.0.0.0"], cwd=tiny_forge.root, env=tiny_forge.env, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 2 and "API key" in r.stderr


def test_an_api_key_is_required_when_set(tiny_engine):
    from fastapi.testclient import TestClient

    from serving.api import create_app

    with TestClient(create_app(tiny_engine, api_key="s3cret")) as http:
        body = {"model": "forge-tiny", "prompt": "x", "max_tokens": 2}
        assert http.post("/v1/completions", json=body).status_code == 401
        r = http.post("/v1/completions", json=body, headers={"Authorization": "Bearer wrong"})
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
        assert http.post("/v1/completions", json=body, headers={"Authorization": "Bearer s3cret"}).status_code == 200
        assert http.get("/v1/models").status_code == 401
        assert http.get("/health").status_code == 200


def test_a_tampered_artifact_refuses_to_serve(tiny_forge, tiny_settings, tmp_path):
    import os

    from registry import Registry, Store

    release = Registry(tiny_forge.root).release("model/forge-tiny@1.0.0")
    good, bad = Store(tiny_settings.store_dir), Store(tmp_path / "store")
    for a in release.manifest.artifacts:
        bad.put_file(good.path(a.sha256), expected=a.sha256)
    weights = release.manifest.artifact("model.safetensors")
    obj = bad.object_path(weights.sha256)
    os.chmod(obj, 0o644)
    data = bytearray(obj.read_bytes())
    data[-1] ^= 0xFF
    obj.write_bytes(bytes(data))
    env = dict(tiny_forge.env, COMMONFORGE_STORE=str(tmp_path / "store"))
    r = subprocess.run([sys.executable, "-m", "commonforge", "serve", "forge-tiny", "--port", "0"],
                       cwd=tiny_forge.root, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 1, r.stderr
    assert "digest mismatch" in r.stderr and weights.sha256 in r.stderr


def test_serve_made_no_connection(server, client):
    client.completions.create(model="forge-tiny", prompt=PROMPT, max_tokens=4)
    stop_server(server)
    assert server.process.returncode == 0, server.log.read_text()[-2000:]
    assert violations(server.audit) == []
    assert processes(server.audit), "the audit saw no process"
    assert unprotected_processes(server.audit) == []
