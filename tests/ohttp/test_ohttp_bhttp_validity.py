"""RFC 9292 §3.4/§3.6 validity: each rejection of a field or control data, with its positive twin.

Every case is checked three ways: the whole-message decoder refuses the bytes, the streaming
decoder refuses them (responses), and the encoder refuses to produce them.
"""

from __future__ import annotations

import pytest

from hushcc.errors import ProtocolError
from ohttp import bhttp
from ohttp.bhttp_stream import ResponseStreamDecoder
from ohttp.varint import encode_varint

Fields = tuple[tuple[bytes, bytes], ...]


def _section(fields: Fields) -> bytes:
    """An indeterminate-length field section built by hand (no encoder checks)."""
    lines = b"".join(encode_varint(len(n)) + n + encode_varint(len(v)) + v for n, v in fields)
    return lines + b"\x00"


def _raw_request(control: tuple[bytes, bytes, bytes, bytes], fields: Fields = ()) -> bytes:
    head = b"".join(encode_varint(len(part)) + part for part in control)
    return b"\x02" + head + _section(fields) + b"\x00" + _section(())


def _raw_response(fields: Fields, trailers: Fields = ()) -> bytes:
    return b"\x03" + encode_varint(200) + _section(fields) + b"\x00" + _section(trailers)


def _stream_decode(data: bytes) -> None:
    decoder = ResponseStreamDecoder()
    decoder.feed(data)
    decoder.finish()


CONTROL = (b"GET", b"https", b"example.com", b"/hello.txt")

# (id, fields that make the message invalid, the closest valid fields)
FIELD_CASES = [
    ("name-with-space", ((b"user agent", b"x"),), ((b"user-agent", b"x"),)),
    ("name-with-nul", ((b"a\x00b", b"x"),), ((b"ab", b"x"),)),
    ("name-with-cr", ((b"a\rb", b"x"),), ((b"ab", b"x"),)),
    ("name-with-lf", ((b"a\nb", b"x"),), ((b"ab", b"x"),)),
    ("name-with-colon-inside", ((b"a:b", b"x"),), ((b"a-b", b"x"),)),
    ("name-with-delimiter", ((b"a(b)", b"x"),), ((b"a!#$%&'*+-.^_`|~b", b"x"),)),
    ("name-non-ascii", ((b"caf\xc3\xa9", b"x"),), ((b"cafe", b"x"),)),
    ("empty-pseudo-name", ((b":", b"x"),), ((b":protocol", b"x"),)),
    ("value-with-nul", ((b"a", b"x\x00y"),), ((b"a", b"x y"),)),
    ("value-with-cr", ((b"a", b"x\ry"),), ((b"a", b"x\ty"),)),
    ("value-with-lf", ((b"a", b"x\ny"),), ((b"a", b"x\xffy"),)),
    ("value-leading-space", ((b"a", b" x"),), ((b"a", b"x"),)),
    ("value-trailing-space", ((b"a", b"x "),), ((b"a", b"x"),)),
    ("value-leading-tab", ((b"a", b"\tx"),), ((b"a", b""),)),
    ("value-trailing-tab", ((b"a", b"x\t"),), ((b"a", b"x"),)),
    ("pseudo-method", ((b":method", b"GET"),), ((b":protocol", b"websocket"),)),
    ("pseudo-scheme", ((b":scheme", b"https"),), ((b"scheme", b"https"),)),
    ("pseudo-authority", ((b":authority", b"a"),), ((b"host", b"a"),)),
    ("pseudo-path", ((b":path", b"/"),), ((b"path", b"/"),)),
    ("pseudo-status", ((b":status", b"200"),), ((b"status", b"200"),)),
    ("pseudo-method-uppercase", ((b":METHOD", b"GET"),), ((b":Protocol", b"GET"),)),
    (
        "pseudo-after-regular",
        ((b"content-type", b"a"), (b":protocol", b"websocket")),
        ((b":protocol", b"websocket"), (b"content-type", b"a")),
    ),
]
FIELD_IDS = [case[0] for case in FIELD_CASES]


@pytest.mark.parametrize(("name", "bad", "good"), FIELD_CASES, ids=FIELD_IDS)
def test_invalid_request_fields_are_refused(name: str, bad: Fields, good: Fields) -> None:
    assert bhttp.decode_request(_raw_request(CONTROL, good)).headers == good
    with pytest.raises(ProtocolError):
        bhttp.decode_request(_raw_request(CONTROL, bad))
    with pytest.raises(ProtocolError):
        bhttp.encode_request(bhttp.Request(*CONTROL, headers=bad))
    assert bhttp.encode_request(bhttp.Request(*CONTROL, headers=good), indeterminate=True) == (
        _raw_request(CONTROL, good)
    ), name


@pytest.mark.parametrize(("name", "bad", "good"), FIELD_CASES, ids=FIELD_IDS)
def test_invalid_response_fields_are_refused(name: str, bad: Fields, good: Fields) -> None:
    for raw in (_raw_response(good), _raw_response((), good)):
        decoded = bhttp.decode_response(raw)
        assert good in (decoded.headers, decoded.trailers), name
        _stream_decode(raw)
    for raw in (_raw_response(bad), _raw_response((), bad)):  # header and trailer sections
        with pytest.raises(ProtocolError):
            bhttp.decode_response(raw)
        with pytest.raises(ProtocolError):
            _stream_decode(raw)
    with pytest.raises(ProtocolError):
        bhttp.encode_response(bhttp.Response(200, trailers=bad))


def test_invalid_fields_in_known_length_and_informational_sections() -> None:
    bad = ((b"bad name", b"x"),)
    good = ((b"good-name", b"x"),)
    known = bhttp.encode_response(bhttp.Response(200, good))
    assert bhttp.decode_response(known).headers == good
    with pytest.raises(ProtocolError):
        bhttp.decode_response(known.replace(b"good-name", b"bad  name"))
    info = b"\x03" + encode_varint(103) + _section(good) + encode_varint(200) + b"\x00\x00\x00"
    assert bhttp.decode_response(info).informational[0].headers == good
    with pytest.raises(ProtocolError):
        bhttp.decode_response(info.replace(_section(good), _section(bad)))


def test_uppercase_field_names_are_valid_tokens() -> None:
    fields = ((b"Content-Type", b"text/plain"), (b"X-UPPER", b"1"))
    request = bhttp.Request(*CONTROL, headers=fields)
    assert bhttp.decode_request(bhttp.encode_request(request)) == request


# (id, control data that makes the request invalid, the closest valid control data)
CONTROL_CASES = [
    ("empty-method", (b"", *CONTROL[1:]), CONTROL),
    ("method-with-space", (b"GET /", *CONTROL[1:]), (b"M-SEARCH", *CONTROL[1:])),
    ("method-with-cr", (b"GET\r", *CONTROL[1:]), (b"get", *CONTROL[1:])),
    ("path-with-space", (*CONTROL[:3], b"/a b"), (*CONTROL[:3], b"/a%20b")),
    ("path-with-cr", (*CONTROL[:3], b"/a\rb"), (*CONTROL[:3], b"/a?b=c#d")),
    ("path-with-lf", (*CONTROL[:3], b"/a\nGET /b"), (*CONTROL[:3], b"*")),
    ("path-with-nul", (*CONTROL[:3], b"/a\x00"), (*CONTROL[:3], b"")),
    ("authority-with-crlf", (CONTROL[0], CONTROL[1], b"a\r\nb", CONTROL[3]), CONTROL),
    ("scheme-with-nul", (CONTROL[0], b"https\x00", *CONTROL[2:]), CONTROL),
]


@pytest.mark.parametrize(("name", "bad", "good"), CONTROL_CASES, ids=[c[0] for c in CONTROL_CASES])
def test_invalid_control_data_is_refused(
    name: str, bad: tuple[bytes, bytes, bytes, bytes], good: tuple[bytes, bytes, bytes, bytes]
) -> None:
    assert bhttp.decode_request(_raw_request(good)) == bhttp.Request(*good), name
    with pytest.raises(ProtocolError):
        bhttp.decode_request(_raw_request(bad))
    with pytest.raises(ProtocolError):
        bhttp.encode_request(bhttp.Request(*bad))


def _one_byte_chunks(count: int) -> bytes:
    return _raw_request(CONTROL)[:-2] + b"\x01x" * count + b"\x00" + _section(())


def test_content_chunk_count_is_capped() -> None:
    limits = bhttp.Limits(max_chunks=100)
    assert bhttp.decode_request(_one_byte_chunks(100), limits=limits).content == b"x" * 100
    with pytest.raises(ProtocolError, match="chunks"):
        bhttp.decode_request(_one_byte_chunks(101), limits=limits)


def test_streamed_content_chunk_count_is_capped() -> None:
    def response(count: int) -> bytes:
        return _raw_response(())[:-2] + b"\x01x" * count + b"\x00" + _section(())

    limits = bhttp.Limits(max_chunks=100)
    decoder = ResponseStreamDecoder(limits)
    assert decoder.feed(response(100)).count(b"x") == 100
    decoder.finish()
    with pytest.raises(ProtocolError, match="chunks"):
        bhttp.decode_response(response(101), limits=limits)
    with pytest.raises(ProtocolError, match="chunks"):
        ResponseStreamDecoder(limits).feed(response(101))
