"""The SSE decoder: events whole and byte by byte, padding comments, limits, failure is final."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from client.sse import SseDecoder
from hushcc.errors import ProtocolError

STREAM = (b': padding so every chunk has one size\n'
          b'data: {"a": 1}\n\n'
          b'data: line one\r\ndata: line two\r\n\r\n'
          b'event: ignored\nid: 7\ndata:no space\r\r'
          b'data: [DONE]\n\n')
EVENTS = ['{"a": 1}', "line one\nline two", "no space", "[DONE]"]


def feed_all(pieces: list[bytes]) -> list[str]:
    decoder = SseDecoder()
    events = [event for piece in pieces for event in decoder.feed(piece)]
    return events + decoder.finish()


def test_events_are_decoded_whole() -> None:
    assert feed_all([STREAM]) == EVENTS


def test_events_are_decoded_byte_by_byte() -> None:
    assert feed_all([STREAM[i : i + 1] for i in range(len(STREAM))]) == EVENTS


@given(st.lists(st.integers(min_value=0, max_value=len(STREAM)), max_size=8))
def test_any_split_gives_the_same_events(cuts: list[int]) -> None:
    bounds = [0, *sorted(cuts), len(STREAM)]
    assert feed_all([STREAM[a:b] for a, b in itertools.pairwise(bounds)]) == EVENTS


def test_a_crlf_split_by_an_empty_feed_is_one_line_end() -> None:
    assert feed_all([b"data: a\r", b"", b"\ndata: b\r\n\r\n"]) == ["a\nb"]


def test_a_comment_only_chunk_dispatches_nothing() -> None:
    assert feed_all([b":" + b" " * 300 + b"\n\n"]) == []


def test_an_unterminated_last_event_is_discarded() -> None:
    assert feed_all([b"data: complete\n\ndata: cut"]) == ["complete"]


def test_a_bom_at_the_start_is_dropped() -> None:
    assert feed_all([b"\xef\xbb\xbfdata: x\n\n"]) == ["x"]


def test_a_line_over_the_limit_fails_and_stays_failed() -> None:
    decoder = SseDecoder(max_line=16)
    with pytest.raises(ProtocolError):
        decoder.feed(b"data: " + b"x" * 32)
    with pytest.raises(ProtocolError):
        decoder.feed(b"\n\n")
    # positive twin: a line at the limit is fine
    assert SseDecoder(max_line=16).feed(b"data: " + b"x" * 10 + b"\n\n") == ["x" * 10]


def test_an_event_over_the_limit_fails() -> None:
    decoder = SseDecoder(max_event=8)
    with pytest.raises(ProtocolError):
        decoder.feed(b"data: 12345\ndata: 6789\n\n")
    assert SseDecoder(max_event=8).feed(b"data: 1234\n\n") == ["1234"]


def test_non_utf8_data_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError):
        SseDecoder().feed(b"data: \xff\n\n")
