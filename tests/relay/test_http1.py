"""relay.http1: request heads, gateway targets and the strict incremental response parser.

Every malformed response has its positive twin (its well-formed neighbour parses), and every
response is also fed byte by byte: the events must not depend on how the bytes arrive.
"""

from __future__ import annotations

import pytest

from hushcc.errors import ConfigError, ProtocolError
from relay.http1 import (
    END,
    MAX_CHUNK_LINE,
    MAX_FIELDS,
    MAX_HEAD,
    GatewayTarget,
    Piece,
    ResponseHead,
    ResponseParser,
    gateway_target,
    request_head,
)

OK_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: message/ohttp-res\r\n"
CL0 = b"Content-Length: 0\r\n\r\n"
TE = OK_HEAD + b"Transfer-Encoding: chunked\r\n\r\n"
ONE_CHUNK = TE + b"1\r\nx\r\n0\r\n\r\n"


def _events(stream: bytes) -> list[object]:
    whole: list[object] = list(ResponseParser().feed(stream))
    parser = ResponseParser()
    trickled: list[object] = [e for i in range(len(stream)) for e in parser.feed(stream[i:i + 1])]
    # Byte by byte, pieces come one byte at a time: compare the joined body and the rest.
    def squash(events: list[object]) -> list[object]:
        out: list[object] = []
        for event in events:
            if isinstance(event, Piece) and out and isinstance(out[-1], Piece) and not (
                    out[-1].end_of_chunk):
                out[-1] = Piece(out[-1].data + event.data, event.end_of_chunk)
            else:
                out.append(event)
        return out
    assert squash(trickled) == squash(whole)
    return whole


def test_content_length_response() -> None:
    events = _events(OK_HEAD + b"Content-Length: 5\r\nDate: x\r\n\r\nhello")
    head = events[0]
    assert isinstance(head, ResponseHead)
    assert (head.status, head.content_length, head.keep_alive) == (200, 5, True)
    assert head.get("content-type") == "message/ohttp-res"
    assert events[1:] == [Piece(b"hello", end_of_chunk=True), END]


def test_chunked_response_keeps_chunk_boundaries_r7() -> None:
    stream = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
              b"3\r\nabc\r\nA;ext=1\r\n0123456789\r\n0\r\nX-Trailer: t\r\n\r\n")
    events = ResponseParser().feed(stream)
    assert events[1:] == [Piece(b"abc", end_of_chunk=True), Piece(b"0123456789", end_of_chunk=True),
                          END]
    parser = ResponseParser()
    first = parser.feed(stream[:stream.index(b"0123") + 2])  # the first chunk, 2 of the second
    assert [e for e in first if isinstance(e, Piece)] == [Piece(b"abc", end_of_chunk=True),
                                                          Piece(b"01", end_of_chunk=False)]
    _events(stream)


def test_no_body_statuses_connection_close_and_surplus() -> None:
    events = _events(b"HTTP/1.1 204 No Content\r\nConnection: keep-alive, close\r\n\r\n")
    assert isinstance(events[0], ResponseHead)
    assert not events[0].keep_alive
    assert events[1:] == [END]
    parser = ResponseParser()
    parser.feed(OK_HEAD + b"Content-Length: 1\r\n\r\nxEXTRA")
    assert parser.done
    assert parser.surplus == len(b"EXTRA")
    assert parser.feed(b"more") == []
    assert parser.surplus == len(b"EXTRAmore")


@pytest.mark.parametrize(("bad", "twin"), [
    (b"HTTP/1.0 200 OK\r\n" + CL0, b"HTTP/1.1 200 OK\r\n" + CL0),
    (b"HTTP/1.1 100 Continue\r\n\r\n", b"HTTP/1.1 200 OK\r\n" + CL0),
    (b"HTTP/1.1 200\r\n" + CL0, b"HTTP/1.1 200 \r\n" + CL0),
    (b"HTTP/1.1  200 OK\r\n" + CL0, b"HTTP/1.1 200 OK\r\n" + CL0),
    (OK_HEAD + b"Content-Length : 0\r\n\r\n", OK_HEAD + CL0),
    (OK_HEAD + b"X-A: 1\r\n folded\r\n" + CL0, OK_HEAD + b"X-A: 1\r\n" + CL0),
    (OK_HEAD + b"X-A: a\x00b\r\n" + CL0, OK_HEAD + b"X-A: a b\r\n" + CL0),
    (OK_HEAD + b"X(A): 1\r\n" + CL0, OK_HEAD + b"X-A: 1\r\n" + CL0),
    (OK_HEAD + b"X-A: 1\n" + CL0, OK_HEAD + b"X-A: 1\r\n" + CL0),
    (OK_HEAD + b"X-A: 1\r" + CL0, OK_HEAD + b"X-A: 1\r\n" + CL0),
    (OK_HEAD + b"Content-Length: 1, 1\r\n\r\nx", OK_HEAD + b"Content-Length: 1\r\n\r\nx"),
    (OK_HEAD + b"Content-Length: 1\r\nContent-Length: 1\r\n\r\nx",
     OK_HEAD + b"Content-Length: 1\r\n\r\nx"),
    (OK_HEAD + b"Content-Length: +1\r\n\r\nx", OK_HEAD + b"Content-Length: 1\r\n\r\nx"),
    (OK_HEAD + b"Content-Length: 0x1\r\n\r\nx", OK_HEAD + b"Content-Length: 1\r\n\r\nx"),
    (OK_HEAD + b"\r\n", OK_HEAD + CL0),  # a body framed only by the connection's close
    (OK_HEAD + b"Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", ONE_CHUNK),
    (OK_HEAD + b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
     OK_HEAD + b"Transfer-Encoding: Chunked\r\n\r\n0\r\n\r\n"),
    (OK_HEAD + b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n", ONE_CHUNK),
    (TE + b"-1\r\n", ONE_CHUNK),
    (TE + b" 1\r\nx\r\n0\r\n\r\n", ONE_CHUNK),
    (TE + b"123456789\r\n", TE + b"00000001\r\nx\r\n0\r\n\r\n"),
    (TE + b"1\r\nxy\r\n0\r\n\r\n", TE + b"2\r\nxy\r\n0\r\n\r\n"),
    (TE + b"1\nx\r\n0\r\n\r\n", ONE_CHUNK),
    (TE + b"0\r\nbad trailer\r\n\r\n", TE + b"0\r\ngood: trailer\r\n\r\n"),
])
def test_malformed_responses_fail_and_stay_failed(bad: bytes, twin: bytes) -> None:
    assert _events(twin)[-1] is END
    parser = ResponseParser()
    with pytest.raises(ProtocolError):
        parser.feed(bad)
    with pytest.raises(ProtocolError):
        parser.feed(b"HTTP/1.1 200 OK\r\n")
    trickle = ResponseParser()  # the same violation, arriving byte by byte
    with pytest.raises(ProtocolError):
        _feed_bytewise(trickle, bad)


def _feed_bytewise(parser: ResponseParser, stream: bytes) -> None:
    for i in range(len(stream)):
        parser.feed(stream[i:i + 1])


def test_limits_on_head_fields_and_chunk_lines() -> None:
    fields = [b"X-%d: v\r\n" % i for i in range(MAX_FIELDS)]
    full = b"".join(fields[1:]) + b"Content-Length: 0\r\n\r\n"
    assert _events(b"HTTP/1.1 200 OK\r\n" + full)[-1] is END  # MAX_FIELDS fields
    with pytest.raises(ProtocolError):
        ResponseParser().feed(b"HTTP/1.1 200 OK\r\n" + fields[0] + full)
    long_value = b"X-A: " + b"v" * (MAX_HEAD - 100) + b"\r\n"
    assert _events(OK_HEAD + long_value + b"Content-Length: 0\r\n\r\n")[-1] is END
    parser = ResponseParser()
    with pytest.raises(ProtocolError):  # refused before the head's end ever arrives
        parser.feed(OK_HEAD + long_value + b"X-B: " + b"v" * 200)
    extension = b";" + b"e" * (MAX_CHUNK_LINE - 2)
    chunked = OK_HEAD + b"Transfer-Encoding: chunked\r\n\r\n1"
    assert _events(chunked + extension + b"\r\nx\r\n0\r\n\r\n")[-1] is END
    with pytest.raises(ProtocolError):
        ResponseParser().feed(chunked + extension + b"ee")


def test_request_head_is_built_only_from_checked_parts() -> None:
    head = request_head("POST", "/base/ohttp", "127.0.0.1:8080",
                        (("Content-Type", "message/ohttp-req"), ("Incremental", "?1")))
    assert head == (b"POST /base/ohttp HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n"
                    b"Content-Type: message/ohttp-req\r\nIncremental: ?1\r\n\r\n")
    for method, target, fields in [
        ("PUT", "/ohttp", ()),
        ("GET", "/attestation?nonce=ab HTTP/1.1\r\nX: y", ()),
        ("GET", "http://elsewhere/", ()),
        ("POST", "/ohttp", (("Content-Type", "message/ohttp-req\r\nX-Evil: 1"),)),
        ("POST", "/ohttp", (("Bad Name", "v"),)),
        ("POST", "/ohttp", (("Content-Type", ""),)),
    ]:
        with pytest.raises(ProtocolError):
            request_head(method, target, "h", fields)


def test_gateway_targets() -> None:
    assert gateway_target("http://127.0.0.1:8080") == GatewayTarget(
        tls=False, host="127.0.0.1", port=8080, authority="127.0.0.1:8080", path="")
    assert gateway_target("https://node.example/base/") == GatewayTarget(
        tls=True, host="node.example", port=443, authority="node.example", path="/base")
    assert gateway_target("http://[::1]:9/").host == "::1"
    for url in ["ftp://h", "http://", "http://u:p@h", "http://h/?q=1", "http://h/#f",
                "http://h:99999", "http://h/a b"]:
        with pytest.raises(ConfigError):
            gateway_target(url)
