"""A test client of the node built from the ohttp package: inner requests, sealing, opening."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ohttp.bhttp import Request, Response, decode_response, encode_request
from ohttp.bhttp_stream import ResponseHead, ResponseStreamDecoder
from ohttp.chunked import ChunkedRequestEncoder, ChunkedResponseDecoder
from ohttp.encapsulation import ClientContext, decapsulate_response, encapsulate_request
from ohttp.keyconfig import KeyConfig
from ohttp.replay import http_date

CHAT = b"/v1/chat/completions"
COMPLETIONS = b"/v1/completions"


def inner(path: bytes, doc: dict[str, Any] | None = None, *, method: bytes = b"POST",
          date: datetime | None = None, authority: bytes = b"node.hushcc.invalid",
          with_date: bool = True) -> bytes:
    headers = [(b"content-type", b"application/json")]
    if with_date:  # the node requires a Date by default, as the SDK always sends one
        headers.append((b"date", http_date(date or datetime.now(UTC)).encode()))
    body = json.dumps(doc).encode() if doc is not None else b""
    return encode_request(Request(method, b"https", authority, path, tuple(headers), body))


def seal(config: KeyConfig, bhttp: bytes, *, chunked: bool) -> tuple[bytes, ClientContext]:
    if chunked:
        enc = ChunkedRequestEncoder(config)
        return enc.final(bhttp), enc.context
    return encapsulate_request(config, bhttp)


def open_whole(ctx: ClientContext, data: bytes) -> Response:
    return decode_response(decapsulate_response(ctx, data))


@dataclass
class Streamed:
    status: int
    headers: dict[bytes, bytes]
    body: bytes
    chunk_sizes: list[int]

    def events(self) -> list[str]:
        return [line.removeprefix("data: ") for line in self.body.decode().split("\n")
                if line.startswith("data: ")]

    def text(self) -> str:
        out: list[str] = []
        for data in self.events():
            if data == "[DONE]":
                continue
            out.extend(choice.get("text") or choice.get("delta", {}).get("content") or ""
                       for choice in json.loads(data)["choices"])
        return "".join(out)


def open_stream(ctx: ClientContext, chunks: list[bytes]) -> Streamed:
    """Open a chunked OHTTP response given as the sealed pieces the node flushed."""
    opener, reader = ChunkedResponseDecoder(ctx), ResponseStreamDecoder()
    events: list[object] = []
    for piece in chunks:
        for plain in opener.feed(piece):
            events.extend(reader.feed(plain))
    events.extend(reader.feed(opener.finish()))
    events.extend(reader.finish())
    head = next(e for e in events if isinstance(e, ResponseHead))
    body = b"".join(e for e in events if isinstance(e, bytes))
    return Streamed(head.status, dict(head.headers), body, [len(c) for c in chunks])
