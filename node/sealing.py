"""Sealing a gateway response: one chunk per event (chunked OHTTP), or one message at the end.

Pure (the randomness is a parameter). Every event chunk is padded to a fixed size bucket
(`node.openai_api.pad_event`, SECURITY.md R7); a whole (non-chunked) response is padded with
binary HTTP's trailing padding (RFC 9292 §3.8) to its bucket too.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from node.openai_api import pad_event, padded_chunk_size
from ohttp import chunked, encapsulation
from ohttp.bhttp import Response, encode_response
from ohttp.bhttp_stream import encode_response_end, encode_response_head

if TYPE_CHECKING:
    from collections.abc import Callable

    from ohttp.bhttp import Fields
    from ohttp.encapsulation import GatewayContext


class ResponseWriter:
    """Seals a response: one chunk per event (chunked OHTTP), or one message at the end."""

    def __init__(self, ctx: GatewayContext, *, chunked_mode: bool, bucket: int,
                 rng: Callable[[int], bytes]) -> None:
        """Seal under `ctx`; chunked or whole; events padded to `bucket`."""
        self._chunked = (chunked.ChunkedResponseEncoder(ctx, rng=rng) if chunked_mode
                         else None)
        self._ctx, self._rng, self._bucket = ctx, rng, bucket
        self._status, self._body = 200, bytearray()
        self._headers: Fields = ()

    def head(self, status: int, headers: Fields) -> bytes | None:
        """The response head: its sealed chunk, or None (kept for the whole message)."""
        if self._chunked is not None:
            return self._chunked.chunk(encode_response_head(status, headers))
        self._status, self._headers = status, headers
        return None

    def event(self, data: bytes) -> bytes | None:
        """One SSE event (or body piece): its sealed padded chunk, or None (buffered)."""
        if self._chunked is not None:
            return self._chunked.chunk(pad_event(data, self._bucket))
        self._body += data
        return None

    def end(self) -> bytes:
        """The final chunk, or the whole sealed message, padded to its bucket."""
        if self._chunked is not None:
            return self._chunked.final(encode_response_end())
        whole = encode_response(Response(self._status, self._headers, bytes(self._body)))
        whole += bytes(padded_chunk_size(len(whole), self._bucket) - len(whole))  # RFC 9292 §3.8
        return encapsulation.encapsulate_response(self._ctx, whole, rng=self._rng)

    def whole(self, status: int, headers: Fields, body: bytes) -> list[bytes]:
        """A complete response at once: every sealed piece, in order."""
        out = [self.head(status, headers), self.event(body) if body else None, self.end()]
        return [c for c in out if c is not None]
