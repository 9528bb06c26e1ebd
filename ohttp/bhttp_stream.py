"""Streaming binary HTTP responses (RFC 9292 indeterminate length), piece by piece.

Pure. The gateway writes a response head, then each content chunk as it is produced (one SSE
event per chunk), then the end; the client decodes whatever bytes have arrived and gets the head
and each complete content chunk as soon as it is available, without waiting for the end.

Invariants:
* `encode_response_head(...) + encode_content_chunk(c)... + encode_response_end(t)` is a valid
  RFC 9292 indeterminate-length response that `bhttp.decode_response` accepts.
* The decoder accepts input in arbitrary pieces, yields exactly what `bhttp.decode_response`
  would for the same bytes (the same `ohttp.http_syntax` checks included), checks every declared
  length against `Limits` before buffering it, and raises only `ProtocolError`. A message that
  ends inside a section is an error at `finish()`. Work is linear in the bytes fed, however they
  are cut: a partly received field section is not parsed again from its start.
* Known-length responses are accepted too, but only yield their events at `finish()`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum, auto

from hushcc.errors import ProtocolError
from ohttp.bhttp import (
    Fields,
    Framing,
    InformationalResponse,
    Limits,
    Response,
    decode_response,
    encode_response,
)
from ohttp.http_syntax import check_fields
from ohttp.varint import decode_varint, encode_varint


@dataclass(frozen=True, slots=True)
class ResponseHead:
    """Final status, its header fields and any informational responses before it."""

    status: int
    headers: Fields = ()
    informational: tuple[InformationalResponse, ...] = ()


@dataclass(frozen=True, slots=True)
class ResponseEnd:
    """The end of the message, with its trailer fields."""

    trailers: Fields = ()


Event = ResponseHead | bytes | ResponseEnd


def encode_response_head(
    status: int, headers: Fields = (), informational: tuple[InformationalResponse, ...] = ()
) -> bytes:
    """Framing indicator 3, informational responses, final status and header fields.

    Raises:
        ProtocolError: a status out of range or invalid fields (`ohttp.http_syntax`).
    """
    whole = encode_response(
        Response(status, headers, informational=informational), indeterminate=True
    )
    return whole[:-2]  # drop the empty content and trailer terminators


def encode_content_chunk(data: bytes) -> bytes:
    """One content chunk (non-empty: an empty chunk would end the content).

    Raises:
        ProtocolError: `data` is empty.
    """
    if not data:
        raise ProtocolError("a content chunk must not be empty")
    return encode_varint(len(data)) + data


def encode_response_end(trailers: Fields = ()) -> bytes:
    """Content terminator, trailer fields and their terminator.

    Raises:
        ProtocolError: invalid fields (`ohttp.http_syntax`).
    """
    whole = encode_response(Response(200, trailers=trailers), indeterminate=True)
    return whole[4:]  # after framing (1), status 200 (2) and the empty header section (1)


class _State(Enum):
    FRAMING = auto()
    STATUS = auto()
    INFO_FIELDS = auto()
    HEADERS = auto()
    CONTENT = auto()
    TRAILERS = auto()
    PADDING = auto()
    KNOWN_LENGTH = auto()


class ResponseStreamDecoder:
    """Client: decode a binary HTTP response incrementally (see module docstring)."""

    def __init__(self, limits: Limits | None = None) -> None:
        """Start before the framing indicator."""
        self._limits = limits or Limits()
        self._buffer = bytearray()
        self._state = _State.FRAMING
        self._fed = 0
        self._content = 0
        self._content_started = False
        self._status = 0
        self._informational: list[InformationalResponse] = []
        self._lines: list[tuple[bytes, bytes]] = []  # the field section being read
        self._field_pos = 0  # where its next line starts in `_buffer`
        self._chunks = 0
        self._failed = False

    def _varint(self) -> int | None:
        decoded = decode_varint(self._buffer)
        if decoded is None:
            return None
        value, used = decoded
        del self._buffer[:used]
        return value

    def _fields(self) -> Fields | None:
        """A whole indeterminate-length field section, or None until it has all arrived.

        Lines already parsed are kept (`_lines`, `_field_pos`), so a section fed a byte at a time
        is parsed once, not once per piece.
        """
        limit = self._limits.max_field_section
        while True:
            pos = self._field_pos
            name = decode_varint(self._buffer, pos)
            if name is None:
                break
            if name[0] == 0:
                del self._buffer[: name[1]]
                lines, self._lines, self._field_pos = tuple(self._lines), [], 0
                check_fields(lines)
                return lines
            if name[0] > limit:
                raise ProtocolError("binary HTTP length exceeds its limit")
            value = decode_varint(self._buffer, name[1] + name[0])
            if value is not None and value[0] > limit:
                raise ProtocolError("binary HTTP length exceeds its limit")
            if value is None or value[1] + value[0] > len(self._buffer):
                break
            self._lines.append((bytes(self._buffer[name[1] : name[1] + name[0]]),
                                bytes(self._buffer[value[1] : value[1] + value[0]])))
            if len(self._lines) > self._limits.max_fields:
                raise ProtocolError("too many fields in a binary HTTP field section")
            self._field_pos = value[1] + value[0]
        if len(self._buffer) > limit:
            raise ProtocolError("binary HTTP field section exceeds its limit")
        return None

    def _step(self) -> tuple[bool, list[Event]]:
        """Advance one item if the buffer holds it: (progressed, events)."""
        handlers = {
            _State.FRAMING: self._framing,
            _State.STATUS: self._status_code,
            _State.INFO_FIELDS: self._field_section,
            _State.HEADERS: self._field_section,
            _State.TRAILERS: self._field_section,
            _State.CONTENT: self._content_chunk,
            _State.PADDING: self._padding,
        }
        return handlers[self._state]()

    def _framing(self) -> tuple[bool, list[Event]]:
        framing = self._varint()
        if framing is None:
            return False, []
        if framing == Framing.KNOWN_RESPONSE:
            self._buffer[:0] = encode_varint(framing)  # decoded whole at finish()
            self._state = _State.KNOWN_LENGTH
        elif framing == Framing.INDETERMINATE_RESPONSE:
            self._state = _State.STATUS
        else:
            raise ProtocolError("unexpected binary HTTP framing indicator")
        return True, []

    def _status_code(self) -> tuple[bool, list[Event]]:
        status = self._varint()
        if status is None:
            return False, []
        if 100 <= status <= 199:
            if len(self._informational) >= self._limits.max_informational:
                raise ProtocolError("too many informational responses")
            self._state = _State.INFO_FIELDS
        elif 200 <= status <= 599:
            self._state = _State.HEADERS
        else:
            raise ProtocolError("binary HTTP status code out of range")
        self._status = status
        return True, []

    def _field_section(self) -> tuple[bool, list[Event]]:
        fields = self._fields()
        if fields is None:
            return False, []
        state = self._state
        if state is _State.INFO_FIELDS:
            self._informational.append(InformationalResponse(self._status, fields))
            self._state = _State.STATUS
            return True, []
        if state is _State.HEADERS:
            self._state = _State.CONTENT
            return True, [ResponseHead(self._status, fields, tuple(self._informational))]
        self._state = _State.PADDING
        return True, [ResponseEnd(fields)]

    def _padding(self) -> tuple[bool, list[Event]]:
        if any(self._buffer):
            raise ProtocolError("binary HTTP padding must be zero bytes")
        self._buffer.clear()
        return False, []

    def _content_chunk(self) -> tuple[bool, list[Event]]:
        decoded = decode_varint(self._buffer)
        if decoded is None:
            return False, []
        length, start = decoded
        self._content_started = True
        if length == 0:
            del self._buffer[:start]
            self._state = _State.TRAILERS
            return True, []
        if self._content + length > self._limits.max_content:
            raise ProtocolError("binary HTTP length exceeds its limit")
        if self._chunks >= self._limits.max_chunks:
            raise ProtocolError("too many binary HTTP content chunks")
        if len(self._buffer) < start + length:
            return False, []
        chunk = bytes(self._buffer[start : start + length])
        del self._buffer[: start + length]
        self._content += length
        self._chunks += 1
        return True, [chunk]

    def feed(self, piece: bytes) -> list[Event]:
        """Add bytes; return the events now complete (head first, then content chunks).

        Raises:
            ProtocolError: malformed or over a limit; the decoder is then unusable.
        """
        if self._failed:
            raise ProtocolError("binary HTTP stream already failed")
        self._fed += len(piece)
        if self._fed > self._limits.max_message:
            self._failed = True
            raise ProtocolError("binary HTTP message exceeds the size limit")
        self._buffer += piece
        events: list[Event] = []
        try:
            while self._state is not _State.KNOWN_LENGTH:
                progressed, new = self._step()
                events += new
                if not progressed:
                    break
        except ProtocolError:
            self._failed = True
            raise
        return events

    def finish(self) -> list[Event]:
        """End of input: return the remaining events, the last one a `ResponseEnd`.

        Raises:
            ProtocolError: the message ended inside a section (or never reached a status).
        """
        if self._failed:
            raise ProtocolError("binary HTTP stream already failed")
        self._failed = True  # nothing may be fed after the end
        if self._state is _State.KNOWN_LENGTH:
            r = decode_response(bytes(self._buffer), limits=self._limits)
            tail: list[Event] = [r.content] if r.content else []
            return [ResponseHead(r.status, r.headers, r.informational), *tail,
                    ResponseEnd(r.trailers)]
        rest_is_padding = not any(self._buffer)
        # RFC 9292 §3.8: a message may end (or be zero-padded) where a section would start.
        if self._state is _State.PADDING:
            return []
        if rest_is_padding and self._state is _State.HEADERS:
            return [ResponseHead(self._status, (), tuple(self._informational)), ResponseEnd()]
        if rest_is_padding and (
            (self._state is _State.CONTENT and not self._content_started)
            or self._state is _State.TRAILERS
        ):
            return [ResponseEnd()]
        raise ProtocolError("binary HTTP response is truncated")
