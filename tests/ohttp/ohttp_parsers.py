"""Every ohttp parser behind one signature, with seeds, for the hypothesis and atheris fuzzers.

Invariant checked by both: a parser returns a value or raises ProtocolError / DecryptError
(UnknownKeyError, ReplayError... are ProtocolErrors); any other exception is a bug.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from hushcc.errors import DecryptError, ProtocolError
from ohttp import bhttp
from ohttp.bhttp_stream import ResponseStreamDecoder
from ohttp.chunked import (
    ChunkedRequestDecoder,
    ChunkedRequestEncoder,
    ChunkedResponseDecoder,
    ChunkedResponseEncoder,
)
from ohttp.encapsulation import (
    decapsulate_request,
    decapsulate_response,
    encapsulate_request,
    encapsulate_response,
)
from ohttp.keyconfig import GatewayKey, KeyConfig, parse_key_configs, serialize_key_configs
from ohttp.replay import check_date
from tests.ohttp.ohttp_helpers import counter_rng, make_key

if TYPE_CHECKING:
    from collections.abc import Callable

ALLOWED = (ProtocolError, DecryptError)
KEY = make_key(1, b"fuzz")
REQUEST = bhttp.encode_request(
    bhttp.Request(b"POST", b"https", b"n", b"/v1/chat/completions", ((b"a", b"b"),), b"{}")
)
RESPONSE = bhttp.encode_response(bhttp.Response(200, (), b"data"), indeterminate=True)
ENC_REQUEST, CLIENT = encapsulate_request(KEY.config, REQUEST, rng=counter_rng(b"c"))
_, GATEWAY = decapsulate_request(ENC_REQUEST, KEY)
ENC_RESPONSE = encapsulate_response(GATEWAY, RESPONSE, rng=counter_rng(b"r"))
_ENCODER = ChunkedRequestEncoder(KEY.config, rng=counter_rng(b"cc"))
CHUNKED_REQUEST = _ENCODER.chunk(REQUEST[:10]) + _ENCODER.chunk(REQUEST[10:]) + _ENCODER.final()
_DEC = ChunkedRequestDecoder(KEY)
_DEC.feed(CHUNKED_REQUEST)
_DEC.finish()
assert _DEC.context is not None
_RESP = ChunkedResponseEncoder(_DEC.context, rng=counter_rng(b"cr"))
CHUNKED_RESPONSE = _RESP.chunk(b"data: 1\n\n") + _RESP.chunk(b"data: 2\n\n") + _RESP.final()
CHUNKED_CLIENT = _ENCODER.context
NOW = datetime(2026, 1, 1, tzinfo=UTC)


def _stream(decoder: ChunkedRequestDecoder | ChunkedResponseDecoder, data: bytes,
            step: int) -> list[bytes]:
    out: list[bytes] = []
    for i in range(0, len(data), step):
        out += decoder.feed(data[i : i + step])
    out.append(decoder.finish())
    return out


def _chunked_request(data: bytes, step: int) -> object:
    return _stream(ChunkedRequestDecoder(KEY), data, step)


def _chunked_response(data: bytes, step: int) -> object:
    return _stream(ChunkedResponseDecoder(CHUNKED_CLIENT), data, step)


def _bhttp_stream(data: bytes, step: int) -> object:
    decoder = ResponseStreamDecoder()
    out: list[object] = []
    for i in range(0, len(data), step):
        out += decoder.feed(data[i : i + step])
    return out + decoder.finish()


def _date(data: bytes, _step: int) -> object:
    check_date(data, now=NOW, window=timedelta(seconds=60))
    return True


# name -> (parser(data, step), seed). `step` is the piece size for incremental parsers.
PARSERS: dict[str, tuple[Callable[[bytes, int], object], bytes]] = {
    "key_config": (lambda d, _s: KeyConfig.from_bytes(d), KEY.config.to_bytes()),
    "key_configs": (lambda d, _s: parse_key_configs(d), serialize_key_configs([KEY.config])),
    "key_file": (lambda d, _s: GatewayKey.from_key_file(d), KEY.to_key_file()),
    "request": (lambda d, _s: decapsulate_request(d, KEY), ENC_REQUEST),
    "response": (lambda d, _s: decapsulate_response(CLIENT, d), ENC_RESPONSE),
    "chunked_request": (_chunked_request, CHUNKED_REQUEST),
    "chunked_response": (_chunked_response, CHUNKED_RESPONSE),
    "bhttp_request": (lambda d, _s: bhttp.decode_request(d), REQUEST),
    "bhttp_response": (lambda d, _s: bhttp.decode_response(d), RESPONSE),
    "bhttp_stream": (_bhttp_stream, RESPONSE),
    "date": (_date, b"Thu, 01 Jan 2026 00:00:00 GMT"),
}


# Repetition cases (issue 9 item 10): name -> (prefix, suffix) around a unit repeated up to a size,
# placed where indeterminate-length content starts; unit b"\x01x" is 1-byte content chunks.
REPEATED: dict[str, tuple[bytes, bytes]] = {
    "bhttp_request": (b"\x02\x04POST\x05https\x01n\x01/\x00", b"\x00\x00"),
    "bhttp_response": (b"\x03\x40\xc8\x00", b"\x00\x00"),
    "bhttp_stream": (b"\x03\x40\xc8\x00", b"\x00\x00"),
}


def repeated(name: str, unit: bytes, size: int) -> bytes:
    """`REPEATED[name]`'s prefix, `unit` repeated to about `size` bytes, then its suffix."""
    prefix, suffix = REPEATED[name]
    return prefix + unit * max(1, size // max(1, len(unit))) + suffix


def run(name: str, data: bytes, step: int = 1 << 30) -> bool:
    """Run one parser; True if it returned a value, False if it raised an allowed error."""
    parser, _ = PARSERS[name]
    try:
        parser(data, step)
    except ALLOWED:
        return False
    return True
