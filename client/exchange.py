"""One encrypted exchange with a node, through the relay: seal, send, open as it arrives.

Each call makes a fresh HPKE context (RFC 9458 §6.1, SECURITY.md C1), so no two requests share
an `enc`, and opens the answer with that context only. Non-streaming calls use
`message/ohttp-req`/`-res`; streaming calls use chunked OHTTP, and every chunk the relay passes
on is opened and handed to the caller at once.

Invariants:
* The outer answer is either the encapsulated response (status 200 and the matching media
  type) or a refusal with no content to read: the relay's 401 (token), 429/503 (busy), 502
  (node unreachable) and the gateway's plain 4xx (e.g. 422 `ohttp-key`: rotated key) become a
  `RelayRefusedError` naming the status; nothing is retried here.
* A response that does not open, is truncated, or is altered is `DecryptError`: opaque, like
  every failure to open (SECURITY.md C4).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from client.transport import StreamHead
from hushcc.errors import HushError
from ohttp import chunked, encapsulation
from ohttp.bhttp import Response, decode_response
from ohttp.bhttp_stream import ResponseStreamDecoder
from ohttp.chunked import ChunkedRequestEncoder, ChunkedResponseDecoder
from ohttp.encapsulation import decapsulate_response, encapsulate_request

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from client.transport import Transport
    from ohttp.bhttp_stream import Event
    from ohttp.keyconfig import KeyConfig

AUTHORIZATION = "Authorization"


class RelayRefusedError(HushError):
    """The relay or the gateway refused the request before the node opened it."""

    def __init__(self, status: int, retry_after: str | None = None) -> None:
        """Name the outer status (and the relay's Retry-After, a public value)."""
        meaning = {401: "token refused", 413: "request too large", 422: "node key rotated",
                   429: "rate limited", 502: "node unreachable", 503: "relay busy"}
        super().__init__(f"relay answered {status} ({meaning.get(status, 'refused')})")
        self.status = status
        self.retry_after = retry_after


def ohttp_url(relay_url: str, node_id: str) -> str:
    """The relay's forwarding route for one node (DESIGN.md: `/v1/nodes/{node_id}/ohttp`)."""
    return f"{relay_url}/v1/nodes/{node_id}/ohttp"


async def exchange_whole(transport: Transport, url: str, config: KeyConfig, inner: bytes, *,
                         authorization: str) -> Response:
    """Seal `inner` (binary HTTP) to `config`, send it, open and decode the answer.

    Raises:
        RelayRefusedError: a refusal outside the envelope.
        DecryptError: the answer does not open.
        ProtocolError: it opens but is not binary HTTP.
    """
    sealed, context = encapsulate_request(config, inner)
    reply = await transport.post(url, sealed, headers={
        "Content-Type": encapsulation.REQUEST_MEDIA_TYPE, AUTHORIZATION: authorization})
    if reply.status != 200 or reply.headers.get("content-type") != (
            encapsulation.RESPONSE_MEDIA_TYPE):
        raise RelayRefusedError(reply.status, reply.headers.get("retry-after"))
    return decode_response(decapsulate_response(context, reply.body))


async def exchange_stream(transport: Transport, url: str, config: KeyConfig, inner: bytes, *,
                          authorization: str) -> AsyncIterator[Event]:
    """Seal `inner` as a chunked request; yield the inner response's events as they open.

    Yields `ResponseHead`, then content pieces (`bytes`), then `ResponseEnd`.

    Raises:
        RelayRefusedError: a refusal outside the envelope.
        DecryptError: a chunk does not open, or the stream ends before its final chunk.
        ProtocolError: the opened stream is not binary HTTP.
    """
    encoder = ChunkedRequestEncoder(config)
    sealed = encoder.final(inner)
    opener, reader = ChunkedResponseDecoder(encoder.context), ResponseStreamDecoder()
    stream = transport.post_stream(url, sealed, headers={
        "Content-Type": chunked.REQUEST_MEDIA_TYPE, AUTHORIZATION: authorization})
    async for item in stream:
        if isinstance(item, StreamHead):
            if item.status != 200 or item.headers.get("content-type") != (
                    chunked.RESPONSE_MEDIA_TYPE):
                raise RelayRefusedError(item.status, item.headers.get("retry-after"))
            continue
        for piece in opener.feed(item):
            for event in reader.feed(piece):
                yield event
    for event in [*reader.feed(opener.finish()), *reader.finish()]:
        yield event
