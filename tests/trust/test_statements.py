"""Statements: the DSSE/in-toto format on disk, and a parser that never crashes on hostile bytes."""

from __future__ import annotations

import base64
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as hs

from registry.refs import Ref
from trust import statements as st
from trust.errors import StatementError
from trust.statements import ApprovalPredicate


@pytest.fixture(scope="module")
def valid(trust_forge) -> bytes:
    rel = trust_forge.releases["published"]
    return (st.statements_dir(trust_forge.root, Ref("model", rel.name, rel.version))
            / f"approval-{trust_forge.keys['cat'].keyid}.json").read_bytes()


def test_a_statement_file_is_a_dsse_envelope_of_an_in_toto_statement(trust_forge, valid):
    envelope = json.loads(valid)
    assert envelope["payloadType"] == "application/vnd.in-toto+json"
    assert [s["keyid"] for s in envelope["signatures"]] == [trust_forge.keys["cat"].keyid]
    statement = json.loads(base64.b64decode(envelope["payload"]))
    rel = trust_forge.releases["published"]
    assert statement["_type"] == "https://in-toto.io/Statement/v1"
    assert statement["subject"] == [{"name": "model/sample@1.0.0", "digest": {"sha256": rel.release_digest}}]
    assert statement["predicateType"] == "urn:commonforge:predicate:approval:v1"
    assert statement["predicate"]["comment"] == "cat checked it"
    parsed = st.parse_envelope(valid)
    assert (parsed.kind, parsed.subject_digest) == ("approval", rel.release_digest)
    parsed.verify(trust_forge.keys["cat"].sslib_key())  # the signature is the DSSE PAE one securesystemslib checks


def test_predicates_are_strict(trust_forge):
    with pytest.raises(ValueError):
        ApprovalPredicate(signed_at="2026-11-01T00:00:00Z", reviewed=["vibes"])  # type: ignore[list-item]
    with pytest.raises(ValueError):
        ApprovalPredicate(signed_at="yesterday")
    with pytest.raises(ValueError):
        ApprovalPredicate.model_validate({"signed_at": "2026-11-01T00:00:00Z", "extra": 1})


@pytest.mark.parametrize("mutate, message", [
    (lambda e: e.pop("signatures"), "not a DSSE envelope (signatures: Field required)"),
    (lambda e: e.update(payloadType="text/plain"), "not a DSSE envelope (payloadType"),
    (lambda e: e["signatures"].append(dict(e["signatures"][0])), "not a DSSE envelope (signatures"),
    (lambda e: e.update(payload="!!!"), "the payload is not base64"),
    (lambda e: e.update(payload=base64.b64encode(b"[1, 2]").decode()), "not an in-toto Statement v1"),
    (lambda e: e.update(payload=base64.b64encode(b"\xff").decode()), "the payload is not JSON"),
    (lambda e: e.update(payload=base64.b64encode(b"1" * 5000).decode()), "the payload is not JSON (ValueError)"),
    (lambda e: e.update(payload=base64.b64encode(b"[" * 40000).decode()), "the payload is not JSON (RecursionError)"),
])
def test_malformed_envelopes_get_a_clear_error(valid, mutate, message):
    envelope = json.loads(valid)
    mutate(envelope)
    with pytest.raises(StatementError, match=message.replace("(", r"\(").replace(")", r"\)")) as err:
        st.parse_envelope(json.dumps(envelope).encode(), "x.json")
    assert err.value.hint and err.value.exit_code == 2


def test_an_unknown_predicate_type_or_bad_predicate_is_refused(valid):
    envelope = json.loads(valid)
    statement = json.loads(base64.b64decode(envelope["payload"]))
    for change, message in ((dict(predicateType="https://slsa.dev/provenance/v1"), "unknown predicate type"),
                            (dict(predicate={"signed_at": "2026-13-45T00:00:00Z"}), "bad signed_at")):
        envelope["payload"] = base64.b64encode(json.dumps({**statement, **change}).encode()).decode()
        with pytest.raises(StatementError, match=message):
            st.parse_envelope(json.dumps(envelope).encode())


json_values = hs.recursive(
    hs.none() | hs.booleans() | hs.integers() | hs.floats(allow_nan=False) | hs.text(max_size=20),
    lambda children: hs.lists(children, max_size=4) | hs.dictionaries(hs.text(max_size=12), children, max_size=4),
    max_leaves=12,
)
FIELDS = ["payload", "payloadType", "signatures", "_type", "subject", "predicateType", "predicate", "keyid", "sig"]


def _parse_or_refuse(data: bytes) -> None:
    try:
        st.parse_envelope(data, "fuzz.json")
    except StatementError as err:
        assert err.message.startswith("fuzz.json")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=hs.binary(max_size=300))
def test_fuzz_arbitrary_bytes_never_crash_the_parser(raw):
    _parse_or_refuse(raw)


@settings(max_examples=100, deadline=None)
@given(top=hs.dictionaries(hs.sampled_from(FIELDS) | hs.text(max_size=8), json_values, max_size=5),
       inner=hs.dictionaries(hs.sampled_from(FIELDS) | hs.text(max_size=8), json_values, max_size=5))
def test_fuzz_envelope_shaped_json_never_crashes_the_parser(top, inner):
    _parse_or_refuse(json.dumps(top).encode())
    wrapped = {"payloadType": st.PAYLOAD_TYPE, "signatures": [{"keyid": "a" * 64, "sig": "AAAA"}],
               "payload": base64.b64encode(json.dumps(inner).encode()).decode()}
    _parse_or_refuse(json.dumps(wrapped).encode())


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=hs.data())
def test_fuzz_a_valid_envelope_mutated_never_crashes_the_parser(valid, data):
    envelope = json.loads(valid)
    statement = json.loads(base64.b64decode(envelope["payload"]))
    target = data.draw(hs.sampled_from(["envelope", "statement", "predicate", "subject"]))
    holder = {"envelope": envelope, "statement": statement, "predicate": statement["predicate"],
              "subject": statement["subject"][0]}[target]
    key = data.draw(hs.sampled_from(sorted(holder)) | hs.text(max_size=8))
    holder[key] = data.draw(json_values)
    if target != "envelope":
        envelope["payload"] = base64.b64encode(json.dumps(statement).encode()).decode()
    _parse_or_refuse(json.dumps(envelope).encode())
    raw = bytearray(valid)
    if raw:
        raw[data.draw(hs.integers(0, len(raw) - 1))] = data.draw(hs.integers(0, 255))
    _parse_or_refuse(bytes(raw))
