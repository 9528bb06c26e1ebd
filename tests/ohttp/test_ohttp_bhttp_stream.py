"""Streaming binary HTTP responses: piecewise encoding and incremental decoding."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hushcc.errors import ProtocolError
from ohttp import bhttp
from ohttp.bhttp_stream import (
    Event,
    ResponseEnd,
    ResponseHead,
    ResponseStreamDecoder,
    encode_content_chunk,
    encode_response_end,
    encode_response_head,
)
from tests.ohttp.ohttp_helpers import split_at
from tests.ohttp.test_ohttp_bhttp import framings, responses


def _assemble(events: list[Event]) -> bhttp.Response:
    head = events[0]
    end = events[-1]
    assert isinstance(head, ResponseHead)
    assert isinstance(end, ResponseEnd)
    assert sum(isinstance(e, (ResponseHead, ResponseEnd)) for e in events) == 2
    content = b"".join(e for e in events[1:-1] if isinstance(e, bytes))
    return bhttp.Response(head.status, head.headers, content, end.trailers, head.informational)


def _decode(pieces: list[bytes], limits: bhttp.Limits | None = None) -> list[Event]:
    decoder = ResponseStreamDecoder(limits)
    events: list[Event] = []
    for piece in pieces:
        events += decoder.feed(piece)
    return events + decoder.finish()


@settings(max_examples=150)
@given(response=responses, options=framings, cuts=st.lists(st.integers(min_value=0), max_size=10))
def test_agrees_with_whole_message_decoder(
    response: bhttp.Response, options: dict[str, Any], cuts: list[int]
) -> None:
    data = bhttp.encode_response(response, **options)
    assert _assemble(_decode(split_at(data, cuts))) == bhttp.decode_response(data) == response


@settings(max_examples=100)
@given(
    response=responses,
    chunks=st.lists(st.binary(min_size=1, max_size=50), max_size=6),
    step=st.integers(1, 17),
)
def test_piecewise_encoder_streams(
    response: bhttp.Response, chunks: list[bytes], step: int
) -> None:
    wire = encode_response_head(response.status, response.headers, response.informational)
    head_len = len(wire)
    wire += b"".join(encode_content_chunk(c) for c in chunks)
    wire += encode_response_end(response.trailers)
    expected = bhttp.Response(response.status, response.headers, b"".join(chunks),
                              response.trailers, response.informational)
    assert bhttp.decode_response(wire) == expected
    decoder = ResponseStreamDecoder()
    seen: list[Event] = []
    for i in range(0, len(wire), step):
        seen += decoder.feed(wire[i : i + step])
        if i + step >= head_len:
            assert seen, "the head must be released as soon as it has arrived"
            assert isinstance(seen[0], ResponseHead)
    seen += decoder.finish()
    assert [e for e in seen if isinstance(e, bytes)] == chunks  # chunk boundaries preserved
    assert _assemble(seen) == expected


def test_each_chunk_released_before_the_end() -> None:
    decoder = ResponseStreamDecoder()
    head = encode_response_head(200, ((b"content-type", b"text/event-stream"),))
    assert decoder.feed(head) == [ResponseHead(200, ((b"content-type", b"text/event-stream"),))]
    assert decoder.feed(encode_content_chunk(b"data: a\n\n")) == [b"data: a\n\n"]
    assert decoder.feed(encode_content_chunk(b"data: [DONE]\n\n")) == [b"data: [DONE]\n\n"]
    assert encode_response_end() == b"\x00\x00"
    assert decoder.feed(encode_response_end()) == [ResponseEnd()]
    assert decoder.finish() == []


def test_known_length_is_decoded_at_finish() -> None:
    data = bhttp.encode_response(bhttp.Response(200, (), b"ok", ((b"t", b"v"),)))
    decoder = ResponseStreamDecoder()
    assert decoder.feed(data) == []
    assert decoder.finish() == [ResponseHead(200), b"ok", ResponseEnd(((b"t", b"v"),))]


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"\x03", id="no-status"),
        pytest.param(b"\x03\x40\x66", id="only-informational"),
        pytest.param(b"\x03\x40\xc8\x00\x05abc", id="cut-inside-chunk"),
        pytest.param(b"\x03\x40\xc8\x00\x03abc", id="content-unterminated"),
        pytest.param(b"\x03\x40\xc8\x01a", id="cut-inside-headers"),
        pytest.param(b"\x03\x40\xc8\x00\x00\x00\x01", id="non-zero-padding"),
        pytest.param(b"\x00", id="request-framing"),
        pytest.param(b"\x03\x40\x63", id="status-99"),
    ],
)
def test_malformed_streams(data: bytes) -> None:
    with pytest.raises(ProtocolError):
        _decode([data])
    with pytest.raises(ProtocolError):
        _decode([bytes([b]) for b in data])


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        pytest.param(b"\x03\x40\xc8", bhttp.Response(200), id="truncated-after-status"),
        pytest.param(b"\x03\x40\xc8\x00", bhttp.Response(200), id="truncated-after-headers"),
        pytest.param(b"\x03\x40\xc8\x00\x01a\x00", bhttp.Response(200, content=b"a"),
                     id="truncated-after-content"),
        pytest.param(b"\x03\x40\xc8\x00\x00\x00\x00\x00", bhttp.Response(200), id="padded"),
    ],
)
def test_truncation_at_section_boundaries(data: bytes, expected: bhttp.Response) -> None:
    assert bhttp.decode_response(data) == expected
    assert _assemble(_decode([data])) == expected
    assert _assemble(_decode([bytes([b]) for b in data])) == expected


def test_limits_on_declared_lengths() -> None:
    head = encode_response_head(200)
    limits = bhttp.Limits(max_content=10, max_field_section=16, max_fields=1, max_message=200)
    ok = head + encode_content_chunk(b"x" * 10) + encode_response_end()
    assert _assemble(_decode([ok], limits)).content == b"x" * 10
    decoder = ResponseStreamDecoder(limits)
    with pytest.raises(ProtocolError):
        decoder.feed(head + b"\x0b")  # a chunk of 11 declared: refused before its bytes arrive
    with pytest.raises(ProtocolError):
        decoder.feed(b"")  # poisoned
    with pytest.raises(ProtocolError):
        _decode([encode_response_head(200, ((b"n", b"v" * 17),))], limits)
    with pytest.raises(ProtocolError):
        _decode([encode_response_head(200, ((b"a", b"1"), (b"b", b"2")))], limits)
    with pytest.raises(ProtocolError):
        _decode([ok, bytes(200)], limits)


def test_encoders_refuse_invalid() -> None:
    with pytest.raises(ProtocolError):
        encode_content_chunk(b"")
    with pytest.raises(ProtocolError):
        encode_response_head(199)
    with pytest.raises(ProtocolError):
        encode_response_end(((b"", b"v"),))
