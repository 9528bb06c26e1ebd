"""RFC 9292 binary HTTP: round-trip properties, framing choices, limits and malformed input."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hushcc.errors import ProtocolError
from ohttp import bhttp
from ohttp.varint import decode_varint, encode_varint

TCHARS = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
tokens = st.text(TCHARS, min_size=1, max_size=20).map(str.encode)
# Field values RFC 9113 §8.2.1 allows: any bytes but NUL, CR, LF; no SP/HTAB at either end.
values = st.binary(max_size=40).map(
    lambda b: bytes(c for c in b if c not in b"\x00\r\n").strip(b" \t")
)
paths = st.binary(max_size=30).map(lambda b: bytes(c for c in b if c > 0x20 and c != 0x7F))
# Extension pseudo-fields (never the five control-data names) first, then regular fields.
pseudo_names = tokens.filter(
    lambda t: t.lower() not in {b"method", b"scheme", b"authority", b"path", b"status"}
).map(lambda t: b":" + t)
fields = st.tuples(
    st.lists(st.tuples(pseudo_names, values), max_size=1),
    st.lists(st.tuples(tokens, values), max_size=5),
).map(lambda parts: (*parts[0], *parts[1]))
requests = st.builds(
    bhttp.Request,
    method=tokens,
    scheme=values,
    authority=values,
    path=paths,
    headers=fields,
    content=st.binary(max_size=200),
    trailers=fields,
)
responses = st.builds(
    bhttp.Response,
    status=st.integers(200, 599),
    headers=fields,
    content=st.binary(max_size=200),
    trailers=fields,
    informational=st.lists(
        st.builds(bhttp.InformationalResponse, st.integers(100, 199), fields), max_size=3
    ).map(tuple),
)
framings = st.fixed_dictionaries(
    {"indeterminate": st.booleans(), "truncate": st.booleans(), "padding": st.integers(0, 20)}
)


@settings(max_examples=150)
@given(request=requests, options=framings)
def test_request_round_trip(request: bhttp.Request, options: dict[str, Any]) -> None:
    assert bhttp.decode_request(bhttp.encode_request(request, **options)) == request


@settings(max_examples=150)
@given(response=responses, options=framings)
def test_response_round_trip(response: bhttp.Response, options: dict[str, Any]) -> None:
    assert bhttp.decode_response(bhttp.encode_response(response, **options)) == response


@given(st.integers(0, (1 << 62) - 1), st.binary(max_size=4))
def test_varint_round_trip(value: int, tail: bytes) -> None:
    encoded = encode_varint(value)
    assert decode_varint(encoded + tail) == (value, len(encoded))
    assert decode_varint(encoded[:-1]) is None


@pytest.mark.parametrize("value", [-1, 1 << 62])
def test_varint_out_of_range(value: int) -> None:
    with pytest.raises(ProtocolError):
        encode_varint(value)


def test_varint_accepts_non_shortest_encodings() -> None:
    assert decode_varint(bytes.fromhex("4025")) == (37, 2)
    assert decode_varint(bytes.fromhex("80000025")) == (37, 4)


REQ = bhttp.Request(b"POST", b"https", b"node", b"/v1/chat/completions",
                    ((b"content-type", b"application/json"),), b'{"x": 1}')
GOOD_REQ = bhttp.encode_request(REQ)
CONTROL = b"\x03GET\x05https\x00\x01/"  # method, scheme, authority, path of a valid request
GOOD_RESP = bhttp.encode_response(bhttp.Response(200, (), b"ok"), indeterminate=True)


@pytest.mark.parametrize(
    ("data", "decoder"),
    [
        pytest.param(b"", bhttp.decode_request, id="empty"),
        pytest.param(b"\x01\x40\xc8", bhttp.decode_request, id="response-as-request"),
        pytest.param(b"\x00\x03GET", bhttp.decode_request, id="truncated-control"),
        pytest.param(b"\x04", bhttp.decode_request, id="unknown-framing"),
        pytest.param(GOOD_REQ + b"\x01", bhttp.decode_request, id="non-zero-padding"),
        pytest.param(GOOD_REQ[:-5], bhttp.decode_request, id="cut-inside-content"),
        pytest.param(b"\x01\x40\x63", bhttp.decode_response, id="status-99"),
        pytest.param(b"\x01\x42\x58", bhttp.decode_response, id="status-600"),
        pytest.param(b"\x01\x40\x66", bhttp.decode_response, id="only-informational"),
        pytest.param(b"\x00" + CONTROL + b"\x05\x00\x01x", bhttp.decode_request,
                     id="empty-field-name-known"),
        pytest.param(b"\x00" + CONTROL + b"\x05\x01a\x05x", bhttp.decode_request,
                     id="field-value-overruns-section"),
        pytest.param(b"\x02" + CONTROL + b"\x01a\x01b", bhttp.decode_request,
                     id="indeterminate-fields-unterminated"),
        pytest.param(b"\x02" + CONTROL + b"\x00\x03abc", bhttp.decode_request,
                     id="indeterminate-content-unterminated"),
        pytest.param(GOOD_RESP[:-3], bhttp.decode_response, id="indeterminate-cut"),
    ],
)
def test_malformed_is_protocol_error(data: bytes, decoder: Callable[[bytes], object]) -> None:
    with pytest.raises(ProtocolError):
        decoder(data)


def test_positive_twins_of_malformed() -> None:
    assert bhttp.decode_request(GOOD_REQ) == REQ
    assert bhttp.decode_request(GOOD_REQ + bytes(3)) == REQ
    assert bhttp.decode_response(GOOD_RESP).content == b"ok"
    assert bhttp.decode_response(b"\x01\x40\x66\x00\x40\xc8").informational[0].status == 102


@pytest.mark.parametrize(
    ("limits", "data"),
    [
        pytest.param(bhttp.Limits(max_message=10), GOOD_REQ, id="message"),
        pytest.param(bhttp.Limits(max_field_section=8), GOOD_REQ, id="field-section"),
        pytest.param(bhttp.Limits(max_fields=0), GOOD_REQ, id="fields"),
        pytest.param(bhttp.Limits(max_content=4), GOOD_REQ, id="content"),
        pytest.param(
            bhttp.Limits(max_content=4),
            bhttp.encode_request(REQ, indeterminate=True),
            id="content-indeterminate",
        ),
    ],
)
def test_limits_enforced_while_decoding(limits: bhttp.Limits, data: bytes) -> None:
    assert bhttp.decode_request(data) == REQ  # default limits accept it
    with pytest.raises(ProtocolError):
        bhttp.decode_request(data, limits=limits)


def test_declared_length_checked_before_reading() -> None:
    # A field section that claims 2^40 bytes is refused from the prefix alone.
    huge = b"\x00" + CONTROL + encode_varint(1 << 40)
    with pytest.raises(ProtocolError, match="limit"):
        bhttp.decode_request(huge)


def test_informational_limit() -> None:
    many = bhttp.Response(200, informational=tuple(bhttp.InformationalResponse(103)
                                                   for _ in range(9)))
    data = bhttp.encode_response(many)
    assert len(bhttp.decode_response(data, limits=bhttp.Limits(max_informational=9))
               .informational) == 9
    with pytest.raises(ProtocolError):
        bhttp.decode_response(data)


@pytest.mark.parametrize("status", [99, 200, 600])
def test_encoder_refuses_bad_informational_status(status: int) -> None:
    with pytest.raises(ProtocolError):
        bhttp.encode_response(bhttp.Response(200, informational=(
            bhttp.InformationalResponse(status),)))


def test_encoder_refuses_bad_final_status_and_padding() -> None:
    with pytest.raises(ProtocolError):
        bhttp.encode_response(bhttp.Response(199))
    with pytest.raises(ProtocolError):
        bhttp.encode_request(REQ, padding=-1)
    with pytest.raises(ProtocolError):
        bhttp.encode_request(bhttp.Request(b"GET", b"https", b"", b"/", ((b"", b"v"),)))
