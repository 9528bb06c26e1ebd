"""Chunked OHTTP (draft-08): arbitrary piece sizes, final chunk handling, truncation detection."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hushcc.errors import DecryptError, ProtocolError
from ohttp import chunked, encapsulation
from ohttp.chunked import (
    ChunkedRequestDecoder,
    ChunkedRequestEncoder,
    ChunkedResponseDecoder,
    ChunkedResponseEncoder,
    ChunkLimits,
)
from ohttp.encapsulation import ClientContext, UnknownKeyError
from ohttp.suites import SymmetricSuite
from tests.ohttp.ohttp_helpers import ALL_SUITES, make_key, split_at

KEY = make_key()


def _exchange(
    chunks: list[bytes], final: bytes, suite: SymmetricSuite = ALL_SUITES[0]
) -> tuple[ChunkedRequestEncoder, bytes]:
    encoder = ChunkedRequestEncoder(KEY.config, suite=suite)
    wire = b"".join(encoder.chunk(c) for c in chunks) + encoder.final(final)
    return encoder, wire


def _decode_request(wire_pieces: list[bytes]) -> tuple[ChunkedRequestDecoder, list[bytes]]:
    decoder = ChunkedRequestDecoder(KEY)
    out: list[bytes] = []
    for piece in wire_pieces:
        out += decoder.feed(piece)
    out.append(decoder.finish())
    return decoder, out


@settings(max_examples=40)
@given(
    chunks=st.lists(st.binary(min_size=1, max_size=300), max_size=5),
    final=st.binary(max_size=100),
    cuts=st.lists(st.integers(min_value=0), max_size=12),
    suite=st.sampled_from(ALL_SUITES),
)
def test_round_trip_anysplit_at(
    chunks: list[bytes], final: bytes, cuts: list[int], suite: SymmetricSuite
) -> None:
    encoder, wire = _exchange(chunks, final, suite)
    decoder, got = _decode_request(split_at(wire, cuts))
    assert got == [*chunks, final]
    assert decoder.context is not None
    response = ChunkedResponseEncoder(decoder.context)
    body = b"".join(response.chunk(c) for c in chunks) + response.final(final)
    reader = ChunkedResponseDecoder(encoder.context)
    opened: list[bytes] = []
    for piece in split_at(body, cuts):
        opened += reader.feed(piece)
    assert opened == chunks  # every non-final chunk is released before the end
    assert reader.finish() == final


def test_byte_at_a_time_and_streaming_release() -> None:
    _, wire = _exchange([b"data: one\n\n", b"data: two\n\n"], b"")
    decoder = ChunkedRequestDecoder(KEY)
    released = [decoder.feed(bytes([byte])) for byte in wire]
    assert [r for r in released if r] == [[b"data: one\n\n"], [b"data: two\n\n"]]
    assert decoder.finish() == b""


def _response(chunks: list[bytes], final: bytes = b"") -> tuple[ClientContext, bytes]:
    encoder, wire = _exchange([b"req"], b"")
    decoder, _ = _decode_request([wire])
    assert decoder.context is not None
    response = ChunkedResponseEncoder(decoder.context)
    body = b"".join(response.chunk(c) for c in chunks) + response.final(final)
    return encoder.context, body


def test_truncated_response_is_an_error_never_a_short_answer() -> None:
    client, body = _response([b"first", b"second"], b"last")
    full = ChunkedResponseDecoder(client)
    assert full.feed(body) == [b"first", b"second"]
    assert full.finish() == b"last"  # positive twin
    for cut in range(len(body)):
        reader = ChunkedResponseDecoder(client)
        try:
            reader.feed(body[:cut])
        except DecryptError:
            continue
        with pytest.raises(DecryptError):
            reader.finish()


def test_truncated_request_is_an_error() -> None:
    _, wire = _exchange([b"abc", b"def"], b"ghi")
    assert _decode_request([wire])[1] == [b"abc", b"def", b"ghi"]
    for cut in range(len(wire)):
        decoder = ChunkedRequestDecoder(KEY)
        try:
            decoder.feed(wire[:cut])
        except DecryptError:
            continue
        with pytest.raises(DecryptError):
            decoder.finish()


def test_final_chunk_must_use_final_aad() -> None:
    client, body = _response([b"one"])
    # Re-frame the last non-final chunk as if it were final: its AAD is "" so it must not open.
    nonce_len = 16
    first = body[nonce_len:]
    sealed_len = first[0]
    forged = body[:nonce_len] + b"\x00" + first[1 : 1 + sealed_len]
    reader = ChunkedResponseDecoder(client)
    assert reader.feed(forged) == []
    with pytest.raises(DecryptError):
        reader.finish()


def test_empty_non_final_chunk_is_refused_both_ways() -> None:
    encoder = ChunkedRequestEncoder(KEY.config)
    with pytest.raises(ProtocolError):
        encoder.chunk(b"")
    # A peer that sends one anyway (length == tag length) is a decryption error.
    header = encoder.final(b"")[:39]
    decoder = ChunkedRequestDecoder(KEY)
    with pytest.raises(DecryptError):
        decoder.feed(header + bytes([16]) + bytes(16))


def test_oversize_chunk_refused_on_declared_length() -> None:
    limits = ChunkLimits(max_chunk_plaintext=64, max_final_chunk_plaintext=64)
    _, ok = _exchange([bytes(64)], bytes(64))
    assert _decode_request([ok])[1][0] == bytes(64)
    encoder = ChunkedRequestEncoder(KEY.config)
    wire = encoder.chunk(bytes(65))
    decoder = ChunkedRequestDecoder(KEY, limits=limits)
    with pytest.raises(DecryptError):
        decoder.feed(wire[:42])  # only the length prefix of the big chunk has arrived
    final_decoder = ChunkedRequestDecoder(KEY, limits=limits)
    with pytest.raises(DecryptError):
        final_decoder.feed(_exchange([], bytes(65))[1])


def test_decoder_is_poisoned_after_an_error() -> None:
    _, wire = _exchange([b"abc"], b"")
    bad = bytearray(wire)
    bad[45] ^= 1
    decoder = ChunkedRequestDecoder(KEY)
    with pytest.raises(DecryptError):
        decoder.feed(bytes(bad))
    with pytest.raises(DecryptError):
        decoder.feed(b"")
    with pytest.raises(DecryptError):
        decoder.finish()


def test_unknown_key_in_chunked_request() -> None:
    _, wire = _exchange([b"abc"], b"")
    other = make_key(9, b"other")
    decoder = ChunkedRequestDecoder(other)
    with pytest.raises(UnknownKeyError):
        decoder.feed(wire[:7])
    assert _decode_request([wire])[1][0] == b"abc"


def test_encoders_refuse_use_after_final() -> None:
    encoder = ChunkedRequestEncoder(KEY.config)
    encoder.final()
    with pytest.raises(ProtocolError):
        encoder.chunk(b"x")
    with pytest.raises(ProtocolError):
        encoder.final()
    _, wire = _exchange([b"x"], b"")
    decoder, _ = _decode_request([wire])
    assert decoder.context is not None
    response = ChunkedResponseEncoder(decoder.context)
    response.final()
    with pytest.raises(ProtocolError):
        response.chunk(b"y")


def test_header_parsed_and_key_selected_once_when_fed_byte_at_a_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[int] = []
    real = encapsulation.select_key

    def counting(*args: Any) -> Any:
        calls.append(1)
        return real(*args)

    monkeypatch.setattr(chunked, "select_key", counting)
    _, wire = _exchange([b"abc"], b"end")
    decoder = ChunkedRequestDecoder(KEY)
    opened = [chunk for byte in wire for chunk in decoder.feed(bytes([byte]))]
    assert opened == [b"abc"]
    assert decoder.finish() == b"end"
    assert len(calls) == 1
