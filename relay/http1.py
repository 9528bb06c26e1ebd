"""The relay's HTTP/1.1 client side, pure: gateway targets, request heads, a strict response parser.

RFC 9112 (message syntax and framing), for the one thing the relay does: send a request the
relay built itself (every byte canonical or from its configuration) to a configured gateway and
pass the response on as it arrives. `relay.upstream` is the I/O shell around it.

Invariants:
* A request head is built only from checked parts: the target matches `TARGET` and every
  header value `FIELD_VALUE`, so nothing can split the head (`ProtocolError` otherwise).
* The response parser is incremental and strict; on any violation it raises `ProtocolError`
  and stays failed (the connection is dropped, never reused): a status line other than
  `HTTP/1.1 DDD reason` or a 1xx status, a head over `MAX_HEAD` bytes or `MAX_FIELDS` fields,
  a bare CR or LF, obsolete line folding, whitespace before a colon, a field name that is not
  a token or a value with control bytes, Transfer-Encoding other than one `chunked`, both
  Transfer-Encoding and Content-Length, a Content-Length that is not one decimal number, a
  body framed only by the connection's close (it could not be told from a truncated one), a
  malformed chunk-size line or chunk end, trailers over the same limits as the head.
* Body bytes come out as `Piece(data, end_of_chunk)` in order, never more than has arrived;
  a chunked body keeps the gateway's chunk boundaries (`end_of_chunk` marks each one, R7).
* `END` comes once, after the last body byte; bytes after it are counted in `surplus` (the
  connection must not be reused then) and never parsed.
"""

from __future__ import annotations

import re
import urllib.parse
from dataclasses import dataclass
from typing import Final

from hushcc.errors import ConfigError, ProtocolError

MAX_HEAD = 16384  # bytes of a response head (status line and fields), and of a trailer section
MAX_FIELDS = 64  # fields in a head, and in a trailer section
MAX_CHUNK_LINE = 256  # bytes of a chunk-size line, extensions included
STATUS_LINE = re.compile(rb"HTTP/1\.1 ([2-5][0-9][0-9]) [\t\x20-\x7e\x80-\xff]*")
FIELD = re.compile(
    rb"([!#$%&'*+\-.^_`|~0-9A-Za-z]+):[ \t]*"
    rb"((?:[\x21-\x7e\x80-\xff](?:[\t\x20-\x7e\x80-\xff]*[\x21-\x7e\x80-\xff])?)?)[ \t]*")
CHUNK_SIZE = re.compile(rb"([0-9a-fA-F]{1,8})(?:;[\t\x20-\x7e]*)?")
DIGITS = re.compile(rb"[0-9]{1,18}")
TARGET = re.compile(r"/[A-Za-z0-9\-._~!$&'()*+,;=:@/?%]*")
FIELD_VALUE = re.compile(r"[\x21-\x7e](?:[\x20-\x7e]*[\x21-\x7e])?")
NO_BODY_STATUSES = frozenset({204, 304})


@dataclass(frozen=True, slots=True)
class GatewayTarget:
    """Where a configured gateway base URL points: connection origin, Host value, path prefix."""

    tls: bool
    host: str
    port: int
    authority: str  # the Host field value
    path: str  # the base URL's path, without a trailing slash


def gateway_target(url: str) -> GatewayTarget:
    """Split a configured gateway base URL (`http[s]://host[:port][/path]`).

    Raises:
        ConfigError: another scheme, no host, user info, a query or fragment, a bad port.
    """
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise ConfigError("node URL must be http(s) with a host")
    if "@" in parts.netloc or parts.query or parts.fragment:
        raise ConfigError("node URL may not carry user info, a query or a fragment")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise ConfigError("node URL has an invalid port") from None
    path = parts.path.rstrip("/")
    if FIELD_VALUE.fullmatch(parts.netloc) is None or (path and TARGET.fullmatch(path) is None):
        raise ConfigError("node URL has characters a request head cannot carry")
    return GatewayTarget(parts.scheme == "https", parts.hostname, port, parts.netloc, path)


def request_head(method: str, target: str, authority: str,
                 fields: tuple[tuple[str, str], ...]) -> bytes:
    """`METHOD target HTTP/1.1`, Host and `fields`, each checked; the blank line included.

    Raises:
        ProtocolError: a method, target, name or value that could split or bend the head.
    """
    if method not in {"GET", "POST"} or TARGET.fullmatch(target) is None:
        raise ProtocolError("request line not allowed")
    lines = [f"{method} {target} HTTP/1.1", f"Host: {authority}"]
    for name, value in (("Host", authority), *fields):
        if FIELD.fullmatch(name.encode() + b":") is None or FIELD_VALUE.fullmatch(value) is None:
            raise ProtocolError("request field not allowed")
    lines += [f"{name}: {value}" for name, value in fields]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii")


@dataclass(frozen=True, slots=True)
class ResponseHead:
    """A response's status and fields (names lower-case, values as latin-1 text, in order)."""

    status: int
    fields: tuple[tuple[str, str], ...]
    content_length: int | None  # None: chunked
    keep_alive: bool

    def get(self, name: str) -> str | None:
        """The first value of field `name` (lower-case), or None."""
        return next((v for n, v in self.fields if n == name), None)


@dataclass(frozen=True, slots=True)
class Piece:
    """Body bytes, and whether they end a chunk of a chunked body (always True otherwise)."""

    data: bytes
    end_of_chunk: bool


class End:
    """The response is complete."""


END: Final = End()
Event = ResponseHead | Piece | End
_HEAD, _LENGTH, _SIZE, _DATA, _DATA_END, _TRAILERS, _DONE = range(7)


def _refuse_bare_cr_lf(text: bytes) -> None:
    """A CR or LF in `text` that is not part of a CRLF pair is a `ProtocolError`."""
    rest = text.replace(b"\r\n", b"")
    if b"\r" in rest or b"\n" in rest:
        raise ProtocolError("bare CR or LF")


def _fields(block: bytes) -> list[tuple[str, str]]:
    """Parse CRLF-separated field lines (no bare CR/LF, no folding, within the limits)."""
    lines = block.split(b"\r\n") if block else []
    if len(lines) > MAX_FIELDS:
        raise ProtocolError("too many header fields")
    fields = []
    for line in lines:
        match = FIELD.fullmatch(line)
        if match is None:
            raise ProtocolError("malformed header field")
        fields.append((match[1].decode("ascii").lower(), match[2].decode("latin-1")))
    return fields


def parse_head(block: bytes) -> ResponseHead:
    """A response head without its final blank line -> ResponseHead (framing decided).

    Raises:
        ProtocolError: see the module's invariants.
    """
    status_line, _, rest = block.partition(b"\r\n")
    match = STATUS_LINE.fullmatch(status_line)
    if match is None:
        raise ProtocolError("malformed or unexpected status line")
    status = int(match[1])
    fields = _fields(rest)
    lengths = [v for n, v in fields if n == "content-length"]
    codings = [v for n, v in fields if n == "transfer-encoding"]
    connection = {t.strip().lower() for n, v in fields if n == "connection" for t in v.split(",")}
    keep_alive = "close" not in connection
    if codings:
        if len(codings) != 1 or codings[0].lower() != "chunked" or lengths:
            raise ProtocolError("transfer coding not accepted")
        length = None
    elif len(lengths) == 1 and DIGITS.fullmatch(lengths[0].encode("latin-1")):
        length = int(lengths[0])
    elif lengths:
        raise ProtocolError("malformed Content-Length")
    elif status in NO_BODY_STATUSES:
        length = 0
    else:
        raise ProtocolError("response body framed only by the connection's close")
    if status in NO_BODY_STATUSES:
        length = 0
    return ResponseHead(status, tuple(fields), length, keep_alive)


class ResponseParser:
    """Incremental parser of one response: `feed` bytes, get `Event`s."""

    def __init__(self) -> None:
        """Expect a response head."""
        self._buffer = b""
        self._state = _HEAD
        self._remaining = 0
        self.surplus = 0  # bytes received after END

    @property
    def done(self) -> bool:
        """Whether END has been produced."""
        return self._state == _DONE

    def feed(self, data: bytes) -> list[Event]:
        """Parse `data`; return the events it completes.

        Raises:
            ProtocolError: a framing or syntax violation (and on every later call).
        """
        if self._state == _DONE:
            self.surplus += len(data)
            return []
        if self._state < 0:
            raise ProtocolError("response stream already failed")
        buffer: bytes | None = self._buffer + data if self._buffer else data
        self._buffer = b""
        events: list[Event] = []
        try:
            while buffer and self._state != _DONE:
                rest = self._step(buffer, events)
                if rest is None:  # the next piece of syntax has not all arrived
                    break
                buffer = rest
        except ProtocolError:
            self._state = -1
            raise
        if self._state == _DONE:
            self.surplus += len(buffer or b"")
            events.append(END)
        else:
            self._buffer = bytes(buffer or b"")
        return events

    def _step(self, buffer: bytes, events: list[Event]) -> bytes | None:
        """Consume one element at the start of `buffer`; the rest, or None to wait for more."""
        if self._state in {_LENGTH, _DATA}:
            take = buffer[:self._remaining]
            self._remaining -= len(take)
            events.append(Piece(take, self._remaining == 0))
            if self._remaining == 0:
                self._state = _DONE if self._state == _LENGTH else _DATA_END
            return buffer[len(take):]
        if self._state == _DATA_END:
            if len(buffer) < len(b"\r\n"):
                return None
            if buffer[:2] != b"\r\n":
                raise ProtocolError("chunk data not followed by CRLF")
            self._state = _SIZE
            return buffer[2:]
        used = self._block(buffer, events)
        return buffer[used:] if used else None

    def _block(self, buffer: bytes, events: list[Event]) -> int:
        """Parse the head, a chunk-size line or the trailers at the start; bytes used or 0."""
        limit = MAX_CHUNK_LINE if self._state == _SIZE else MAX_HEAD
        if self._state == _SIZE:
            end, stop = buffer.find(b"\r\n", 0, limit + 2), 2
        else:
            end = 0 if self._state == _TRAILERS and buffer[:2] == b"\r\n" else (
                buffer.find(b"\r\n\r\n", 0, limit + 4))
            stop = 2 if end == 0 and self._state == _TRAILERS else 4
        if end < 0:
            if len(buffer) >= limit + stop:
                raise ProtocolError("head, trailers or chunk-size line too long")
            _refuse_bare_cr_lf(buffer[:-1] if buffer.endswith(b"\r") else buffer)
            return 0
        block = buffer[:end]
        _refuse_bare_cr_lf(block)
        if self._state == _HEAD:
            head = parse_head(block)
            events.append(head)
            self._start_body(head)
        elif self._state == _TRAILERS:
            _fields(block)  # checked, then dropped: trailers are never passed on
            self._state = _DONE
        else:
            match = CHUNK_SIZE.fullmatch(block)
            if match is None:
                raise ProtocolError("malformed chunk-size line")
            self._remaining = int(match[1], 16)
            self._state = _DATA if self._remaining else _TRAILERS
        return end + stop

    def _start_body(self, head: ResponseHead) -> None:
        if head.content_length is None:
            self._state = _SIZE
        elif head.content_length:
            self._state, self._remaining = _LENGTH, head.content_length
        else:
            self._state = _DONE
