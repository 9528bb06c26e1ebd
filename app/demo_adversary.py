"""The demo's adversary: a relay that alters what it passes on (a real loopback HTTP proxy).

It forwards every request to the real relay unchanged and flips the last bit of every body
piece of every `/ohttp` answer. The client must detect it: an altered OHTTP response does not
open (AEAD), and the SDK shows nothing of it. Used by `hushcc demo` only.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

import aiohttp
from aiohttp import web

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

HOP_HEADERS = frozenset({"host", "content-length", "transfer-encoding", "connection"})


def _flip(piece: bytes) -> bytes:
    return piece[:-1] + bytes([piece[-1] ^ 1]) if piece else piece


@contextlib.asynccontextmanager
async def altering_proxy(relay_url: str) -> AsyncIterator[str]:
    """Serve the altering relay on 127.0.0.1; yield its URL; stop it on exit."""
    session = aiohttp.ClientSession(auto_decompress=False)

    async def forward(request: web.Request) -> web.StreamResponse:
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_HEADERS}
        async with session.request(request.method, relay_url + request.path_qs,
                                   headers=headers, data=await request.read()) as upstream:
            response = web.StreamResponse(status=upstream.status, headers={
                k: v for k, v in upstream.headers.items() if k.lower() not in HOP_HEADERS})
            await response.prepare(request)
            alter = request.path.endswith("/ohttp")
            async for piece, _ in upstream.content.iter_chunks():
                await response.write(_flip(piece) if alter else piece)
            await response.write_eof()
            return response

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", forward)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()
        await session.close()
