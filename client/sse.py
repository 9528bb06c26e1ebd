"""An incremental Server-Sent Events decoder (WHATWG HTML "event stream interpretation").

Pure: bytes in, the `data` payload of each complete event out, in order. The node streams one
SSE event per chunk of a chunked OHTTP response, so the SDK feeds each decrypted piece as it
arrives and hands every finished event to the caller at once.

Invariants:
* Lines end at LF, CRLF or CR; a blank line dispatches the event; a line starting with `:` is a
  comment (the node pads events to fixed size buckets with one, SECURITY.md R7) and is ignored;
  only the `data` field is kept; an event without data dispatches nothing.
* A line longer than `max_line` bytes, or an event whose data exceeds `max_event`, is a
  `ProtocolError`; after any error the decoder stays failed (like `ohttp.chunked`).
* The payload is UTF-8 (a stray BOM at the start is dropped, as the spec says).
"""

from __future__ import annotations

from hushcc.errors import ProtocolError

MAX_LINE = 1 << 20
MAX_EVENT = 4 << 20


class SseDecoder:
    """Feed bytes, get the data of each complete event."""

    def __init__(self, *, max_line: int = MAX_LINE, max_event: int = MAX_EVENT) -> None:
        """Create a decoder with limits on one line and on one event's data."""
        self._max_line = max_line
        self._max_event = max_event
        self._buffer = bytearray()
        self._data: list[bytes] = []
        self._data_size = 0
        self._first = True
        self._failed = False
        self._pending_cr = False

    def feed(self, data: bytes) -> list[str]:
        """Consume `data`; return the data payloads of the events it completed."""
        if self._failed:
            raise ProtocolError("event stream already failed")
        try:
            return self._consume(data)
        except ProtocolError:
            self._failed = True
            raise

    def finish(self) -> list[str]:
        """End of stream: an unterminated last event is discarded, as the spec says."""
        if self._failed:
            raise ProtocolError("event stream already failed")
        self._buffer.clear()
        self._data.clear()
        return []

    def _consume(self, data: bytes) -> list[str]:
        if self._first and data:
            data = data.removeprefix(b"\xef\xbb\xbf")
            self._first = False
        if not data:
            return []
        if self._pending_cr and data.startswith(b"\n"):
            data = data[1:]  # the LF of a CRLF split across two feeds
        self._pending_cr = False
        self._buffer += data
        events: list[str] = []
        while True:
            end = _line_end(self._buffer)
            if end is None:
                break
            line, width = bytes(self._buffer[:end]), _terminator_width(self._buffer, end)
            if width == 0:  # a CR at the very end: its LF may follow in the next feed
                width, self._pending_cr = 1, True
            del self._buffer[: end + width]
            event = self._line(line)
            if event is not None:
                events.append(event)
        if len(self._buffer) > self._max_line:
            raise ProtocolError("event stream line too long")
        return events

    def _line(self, line: bytes) -> str | None:
        if len(line) > self._max_line:
            raise ProtocolError("event stream line too long")
        if not line:
            return self._dispatch()
        if line.startswith(b":"):
            return None
        name, _, value = line.partition(b":")
        if name == b"data":
            value = value.removeprefix(b" ")
            self._data_size += len(value) + 1
            if self._data_size > self._max_event:
                raise ProtocolError("event stream event too large")
            self._data.append(value)
        return None

    def _dispatch(self) -> str | None:
        if not self._data:
            return None
        payload = b"\n".join(self._data)
        self._data.clear()
        self._data_size = 0
        try:
            return payload.decode("utf-8")
        except UnicodeDecodeError:
            raise ProtocolError("event stream data is not UTF-8") from None


def _line_end(buffer: bytearray) -> int | None:
    lf, cr = buffer.find(b"\n"), buffer.find(b"\r")
    ends = [i for i in (lf, cr) if i >= 0]
    return min(ends) if ends else None


def _terminator_width(buffer: bytearray, end: int) -> int:
    """1 for LF or a lone CR, 2 for CRLF, 0 for a CR that ends the buffer (undecided)."""
    if buffer[end] == ord("\n"):
        return 1
    if end + 1 == len(buffer):
        return 0
    return 2 if buffer[end + 1] == ord("\n") else 1
