"""Streaming text: whole UTF-8 characters only; stop strings never leak, even in part."""

from __future__ import annotations

import pytest

from serving.text import REPLACEMENT, IncrementalDetokenizer, StopStrings

SAMPLES = ["naïve café — 😀 日本語, ok", "Ünïcödé ∑ ∞ 🧪🧪 end", "plain ascii text only"]


@pytest.mark.parametrize("text", SAMPLES)
def test_deltas_never_split_a_character(tiny_loaded, text):
    tok = tiny_loaded.tokenizer
    ids = tok(text, add_special_tokens=False)["input_ids"]
    pieces = [tok.decode([i]) for i in ids]
    if text != SAMPLES[-1]:
        assert any(REPLACEMENT in p for p in pieces), "the sample should split a character across tokens"
    detok = IncrementalDetokenizer(tok)
    deltas = [detok.push(i) for i in ids] + [detok.flush()]
    assert "".join(deltas) == text
    assert not any(REPLACEMENT in d for d in deltas)


def test_special_tokens_are_not_text(tiny_loaded):
    tok = tiny_loaded.tokenizer
    detok = IncrementalDetokenizer(tok)
    ids = [tok.convert_tokens_to_ids("<|user|>")] + tok("hi", add_special_tokens=False)["input_ids"]
    assert "".join(detok.push(i) for i in ids) + detok.flush() == "hi"


def test_stop_strings_are_cut_and_held_back():
    s = StopStrings(["STOP", "\n\n"])
    assert s.add("hello S") == "hello "  # "S" might start STOP
    assert s.add("T") == ""
    assert s.add("OP and more") == ""
    assert s.stopped and s.text == "hello "
    s = StopStrings(["STOP"])
    assert [s.add("a ST"), s.add("AND"), s.finish()] == ["a ", "STAND", ""]
    assert not s.stopped
    s = StopStrings([])
    assert s.add("abc") == "abc" and s.finish() == ""


def test_a_stop_string_across_deltas_is_found():
    s = StopStrings(["<end>"])
    out = [s.add(x) for x in ["one <", "e", "nd> two"]]
    assert "".join(out) == "one " and s.stopped
