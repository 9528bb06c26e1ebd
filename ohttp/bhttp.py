"""Binary HTTP messages (RFC 9292): known- and indeterminate-length requests and responses.

Pure. Covers control data, header and trailer field sections, content, informational (1xx)
responses, truncation (§3.8) and padding (§3.8). Decoding checks every declared length against
`Limits` *before* reading it, and raises only `ProtocolError`.

Invariants:
* `decode_*(encode_*(m, ...)) == m` for every valid message and framing choice; the RFC 9292 §5
  examples encode to their exact published bytes given their framing, padding and truncation.
* What RFC 9292 makes invalid (field names, values, pseudo-fields, control data: see
  `ohttp.http_syntax`) is refused by the decoders and never produced by the encoders.
* Padding must be zero bytes; anything else after the message is an error.
* Decoding is linear in the message size, and the work per message is bounded by `Limits`: at
  most `max_chunks` content chunks and `max_fields` fields per section.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from hushcc.errors import ProtocolError
from ohttp.http_syntax import check_control_data, check_fields
from ohttp.varint import decode_varint, encode_varint

Fields = tuple[tuple[bytes, bytes], ...]


class Framing(IntEnum):
    """Framing indicator (RFC 9292 §3.3)."""

    KNOWN_REQUEST = 0
    KNOWN_RESPONSE = 1
    INDETERMINATE_REQUEST = 2
    INDETERMINATE_RESPONSE = 3


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds checked while decoding, on declared lengths, before any slice is taken."""

    max_message: int = 16 << 20
    max_field_section: int = 64 << 10
    max_fields: int = 256
    max_content: int = 16 << 20
    max_chunks: int = 1 << 16  # indeterminate-length content chunks per message
    max_informational: int = 8


@dataclass(frozen=True, slots=True)
class Request:
    """A request: control data (§3.4), header fields, content and trailer fields."""

    method: bytes
    scheme: bytes
    authority: bytes
    path: bytes
    headers: Fields = ()
    content: bytes = b""
    trailers: Fields = ()


@dataclass(frozen=True, slots=True)
class InformationalResponse:
    """A 1xx response: status and its header fields (§3.5.1)."""

    status: int
    headers: Fields = ()


@dataclass(frozen=True, slots=True)
class Response:
    """A final response, preceded by any informational responses."""

    status: int
    headers: Fields = ()
    content: bytes = b""
    trailers: Fields = ()
    informational: tuple[InformationalResponse, ...] = ()


# --- encoding ---------------------------------------------------------------------------------


def _string(value: bytes) -> bytes:
    return encode_varint(len(value)) + value


def _fields(fields: Fields, *, indeterminate: bool) -> bytes:
    check_fields(fields)
    lines = b"".join(_string(name) + _string(value) for name, value in fields)
    if indeterminate:
        return lines + b"\x00"
    return _string(lines)


def _content(content: bytes, *, indeterminate: bool) -> bytes:
    if indeterminate:
        return (_string(content) if content else b"") + b"\x00"
    return _string(content)


def _status(status: int, *, final: bool) -> bytes:
    if final and not 200 <= status <= 599:
        raise ProtocolError("a final status must be 200-599")
    if not final and not 100 <= status <= 199:
        raise ProtocolError("an informational status must be 100-199")
    return encode_varint(status)


def _finish(parts: list[bytes], *, truncate: bool, padding: int) -> bytes:
    """Join control data + header, content, trailer; drop trailing empty sections if asked."""
    # An empty section is the single byte 0 in both framings: drop trailing ones (at most 3).
    while truncate and len(parts) > 1 and parts[-1] == b"\x00":
        parts.pop()
    if padding < 0:
        raise ProtocolError("padding must not be negative")
    return b"".join(parts) + bytes(padding)


def encode_request(
    request: Request, *, indeterminate: bool = False, truncate: bool = False, padding: int = 0
) -> bytes:
    """Encode a request (RFC 9292 §3).

    Args:
        request: the message.
        indeterminate: use indeterminate-length framing (indicator 2) instead of 0.
        truncate: omit trailing empty sections (§3.8).
        padding: number of zero bytes to append (§3.8).

    Returns:
        The binary HTTP bytes.

    Raises:
        ProtocolError: invalid control data or fields (`ohttp.http_syntax`), negative padding.
    """
    check_control_data(request.method, request.scheme, request.authority, request.path)
    framing = Framing.INDETERMINATE_REQUEST if indeterminate else Framing.KNOWN_REQUEST
    control = encode_varint(framing) + b"".join(
        _string(v) for v in (request.method, request.scheme, request.authority, request.path)
    )
    parts = [
        control,
        _fields(request.headers, indeterminate=indeterminate),
        _content(request.content, indeterminate=indeterminate),
        _fields(request.trailers, indeterminate=indeterminate),
    ]
    return _finish(parts, truncate=truncate, padding=padding)


def encode_response(
    response: Response, *, indeterminate: bool = False, truncate: bool = False, padding: int = 0
) -> bytes:
    """Encode a response with its informational responses (RFC 9292 §3).

    Args:
        response: the message.
        indeterminate: use indeterminate-length framing (indicator 3) instead of 1.
        truncate: omit trailing empty sections (§3.8).
        padding: number of zero bytes to append (§3.8).

    Returns:
        The binary HTTP bytes.

    Raises:
        ProtocolError: a status out of range, invalid fields (`ohttp.http_syntax`) or negative
            padding.
    """
    framing = Framing.INDETERMINATE_RESPONSE if indeterminate else Framing.KNOWN_RESPONSE
    head = bytearray(encode_varint(framing))
    for info in response.informational:
        head += _status(info.status, final=False)
        head += _fields(info.headers, indeterminate=indeterminate)
    head += _status(response.status, final=True)
    parts = [
        bytes(head),
        _fields(response.headers, indeterminate=indeterminate),
        _content(response.content, indeterminate=indeterminate),
        _fields(response.trailers, indeterminate=indeterminate),
    ]
    return _finish(parts, truncate=truncate, padding=padding)


# --- decoding ---------------------------------------------------------------------------------


class _Reader:
    """A cursor over one message; every read checks the declared length first."""

    def __init__(self, data: bytes, limits: Limits) -> None:
        if len(data) > limits.max_message:
            raise ProtocolError("binary HTTP message exceeds the size limit")
        self.data = data
        self.pos = 0
        self.limits = limits

    def at_end(self) -> bool:
        return self.pos >= len(self.data)

    def varint(self) -> int:
        decoded = decode_varint(self.data, self.pos)
        if decoded is None:
            raise ProtocolError("binary HTTP message is truncated inside an integer")
        value, self.pos = decoded
        return value

    def take(self, length: int, limit: int) -> bytes:
        if length > limit:
            raise ProtocolError("binary HTTP length exceeds its limit")
        end = self.pos + length
        if end > len(self.data):
            raise ProtocolError("binary HTTP message is truncated")
        value = self.data[self.pos : end]
        self.pos = end
        return value

    def string(self, limit: int) -> bytes:
        return self.take(self.varint(), limit)

    def only_padding_left(self) -> bool:
        """True at the end of the message or where only zero padding remains (§3.8)."""
        return not any(self.data[self.pos :])

    def padding(self) -> int:
        """Consume the rest as padding; it must be all zero."""
        rest = self.data[self.pos :]
        if any(rest):
            raise ProtocolError("binary HTTP padding must be zero bytes")
        self.pos = len(self.data)
        return len(rest)


def _field_lines(reader: _Reader, end: int | None) -> Fields:
    """Field lines until `end` (known length) or a zero name length (indeterminate)."""
    limits = reader.limits
    lines: list[tuple[bytes, bytes]] = []
    while end is None or reader.pos < end:
        if end is None:
            if reader.at_end():
                raise ProtocolError("binary HTTP field section is truncated")
            name_length = reader.varint()
            if name_length == 0:
                break
            name = reader.take(name_length, limits.max_field_section)
        else:
            name = reader.string(limits.max_field_section)
            if not name:
                raise ProtocolError("a field name must not be empty")
        value = reader.string(limits.max_field_section)
        lines.append((name, value))
        if len(lines) > limits.max_fields:
            raise ProtocolError("too many fields in a binary HTTP field section")
    if end is not None and reader.pos != end:
        raise ProtocolError("binary HTTP field lines overrun their section")
    check_fields(lines)
    return tuple(lines)


def _fields_section(reader: _Reader, *, indeterminate: bool) -> Fields:
    """A field section, or empty if the message was truncated here (§3.8)."""
    if reader.only_padding_left():
        return ()
    if indeterminate:
        return _field_lines(reader, None)
    length = reader.varint()
    if length > reader.limits.max_field_section:
        raise ProtocolError("binary HTTP field section exceeds its limit")
    end = reader.pos + length
    if end > len(reader.data):
        raise ProtocolError("binary HTTP field section is truncated")
    return _field_lines(reader, end)


def _content_section(reader: _Reader, *, indeterminate: bool) -> bytes:
    if reader.only_padding_left():
        return b""
    max_content = reader.limits.max_content
    if not indeterminate:
        return reader.string(max_content)
    chunks = bytearray()
    for _ in range(reader.limits.max_chunks + 1):
        if reader.at_end():
            raise ProtocolError("binary HTTP content is truncated")
        length = reader.varint()
        if length == 0:
            return bytes(chunks)
        chunks += reader.take(length, max_content - len(chunks))
    raise ProtocolError("too many binary HTTP content chunks")


def _framing(reader: _Reader, *, request: bool) -> bool:
    """Read the framing indicator; return True for indeterminate length."""
    framing = reader.varint()
    if request and framing in (Framing.KNOWN_REQUEST, Framing.INDETERMINATE_REQUEST):
        return framing == Framing.INDETERMINATE_REQUEST
    if not request and framing in (Framing.KNOWN_RESPONSE, Framing.INDETERMINATE_RESPONSE):
        return framing == Framing.INDETERMINATE_RESPONSE
    raise ProtocolError("unexpected binary HTTP framing indicator")


def decode_request(data: bytes, *, limits: Limits | None = None) -> Request:
    """Decode a binary HTTP request, either framing, truncated or padded.

    Raises:
        ProtocolError: malformed, invalid (`ohttp.http_syntax`), not a request, or over a limit.
    """
    reader = _Reader(bytes(data), limits or Limits())
    indeterminate = _framing(reader, request=True)
    method, scheme, authority, path = (
        reader.string(reader.limits.max_field_section) for _ in range(4)
    )
    check_control_data(method, scheme, authority, path)
    headers = _fields_section(reader, indeterminate=indeterminate)
    content = _content_section(reader, indeterminate=indeterminate)
    trailers = _fields_section(reader, indeterminate=indeterminate)
    reader.padding()
    return Request(method, scheme, authority, path, headers, content, trailers)


def decode_response(data: bytes, *, limits: Limits | None = None) -> Response:
    """Decode a binary HTTP response with its informational responses.

    Raises:
        ProtocolError: malformed, invalid fields (`ohttp.http_syntax`), not a response, status
            out of range, or over a limit.
    """
    reader = _Reader(bytes(data), limits or Limits())
    indeterminate = _framing(reader, request=False)
    informational: list[InformationalResponse] = []
    while True:
        status = reader.varint()
        if 200 <= status <= 599:
            break
        if not 100 <= status <= 199:
            raise ProtocolError("binary HTTP status code out of range")
        if len(informational) >= reader.limits.max_informational:
            raise ProtocolError("too many informational responses")
        if reader.only_padding_left():
            raise ProtocolError("binary HTTP response has no final status")
        informational.append(
            InformationalResponse(status, _fields_section(reader, indeterminate=indeterminate))
        )
    headers = _fields_section(reader, indeterminate=indeterminate)
    content = _content_section(reader, indeterminate=indeterminate)
    trailers = _fields_section(reader, indeterminate=indeterminate)
    reader.padding()
    return Response(status, headers, content, trailers, tuple(informational))
