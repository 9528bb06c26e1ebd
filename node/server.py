"""`hushcc node serve`'s aiohttp shell: `POST /ohttp`, `GET /attestation`, `GET /health`.

A thin shell over `node.gateway` (the pure handler) and `node.attest`; it owns the sockets, the
clock and the background tasks (key rotation, release refresh). Limits are enforced while reading,
not after (SECURITY.md G11, R3; STYLE.md §2):

* concurrency: at most `max_concurrent` requests in flight; one more gets a fast 503, never a
  queue;
* body size: a declared `Content-Length` over the limit is refused (413) before any byte is read;
  a chunked body is read piece by piece and refused once it passes the limit;
* an absolute receipt deadline from the request's arrival to the body's end (408), not an idle
  timeout that a trickle of bytes could keep extending.

A client disconnect cancels the handler (`handler_cancellation`), which closes the gateway's
response generator and so cancels the request in the engine (E5). Nothing here logs request data;
no route other than these three exists (no admin, debug or reload endpoint).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from aiohttp import web

from hushcc.errors import HushError
from node.gateway import Plain

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable
    from datetime import datetime

    from node.attest import Attester
    from node.audit import AuditLog
    from node.gateway import Gateway

_NONCE = re.compile(r"[0-9a-fA-F]{64}")
READ_PIECE = 1 << 16


@dataclass(frozen=True, slots=True)
class NodeLimits:
    """Limits of the shell (bytes, seconds, requests)."""

    max_body: int = 1 << 20
    receipt_deadline: float = 10.0
    max_concurrent: int = 64
    drain_timeout: float = 30.0


class _TooLarge(Exception):  # noqa: N818 - control flow inside the shell
    pass


class NodeServer:
    """The node's HTTP endpoints over one gateway and one attester."""

    def __init__(self, gateway: Gateway, attester: Attester, limits: NodeLimits,
                 audit: AuditLog, wallclock: Callable[[], datetime]) -> None:
        """Wire the shell."""
        self.gateway, self.attester, self.limits = gateway, attester, limits
        self.audit, self.wallclock = audit, wallclock
        self.in_flight = 0

    def app(self) -> web.Application:
        """The application with its three routes."""
        app = web.Application(client_max_size=self.limits.max_body)
        app.router.add_post("/ohttp", self.post_ohttp)
        app.router.add_get("/attestation", self.get_attestation)
        app.router.add_get("/health", self.get_health)
        return app

    async def _read_body(self, request: web.Request, started: float) -> bytes:
        """Read the body under the size limit and the absolute receipt deadline."""
        limit = self.limits.max_body
        if request.content_length is not None and request.content_length > limit:
            raise _TooLarge
        body = bytearray()
        remaining = self.limits.receipt_deadline - (time.monotonic() - started)
        async with asyncio.timeout(max(remaining, 0.0)):
            while piece := await request.content.read(READ_PIECE):
                body += piece
                if len(body) > limit:
                    raise _TooLarge
        return bytes(body)

    async def post_ohttp(self, request: web.Request) -> web.StreamResponse:
        """An encapsulated request in, an encapsulated (possibly chunked) response out."""
        started = time.monotonic()
        if self.in_flight >= self.limits.max_concurrent:
            self.gateway.counts["rejected_overload"] += 1
            return web.Response(status=503, headers={"Retry-After": "1"})
        self.in_flight += 1
        try:
            try:
                body = await self._read_body(request, started)
            except _TooLarge:
                self.gateway.counts["rejected_size"] += 1
                return web.Response(status=413, headers={"Connection": "close"})
            except TimeoutError:
                self.gateway.counts["rejected_deadline"] += 1
                return web.Response(status=408, headers={"Connection": "close"})
            answer = await self.gateway.handle(request.content_type, body)
            if isinstance(answer, Plain):
                return web.Response(status=answer.status, body=answer.body, headers={
                    k.decode(): v.decode() for k, v in answer.headers})
            response = web.StreamResponse(status=200, headers={
                "Content-Type": answer.media_type, "Cache-Control": "no-store"})
            response.enable_chunked_encoding()
            chunks = answer.chunks
            try:
                await response.prepare(request)
                async for chunk in chunks:
                    await response.write(chunk)  # one sealed chunk per write, flushed
                await response.write_eof()
            finally:
                await chunks.aclose()  # type: ignore[attr-defined]
            return response
        finally:
            self.in_flight -= 1

    async def get_attestation(self, request: web.Request) -> web.Response:
        """The current bundle, or a fresh one bound to `?nonce=HEX` (32 bytes)."""
        nonce_text = request.query.get("nonce")
        if nonce_text is not None and not _NONCE.fullmatch(nonce_text):
            return web.Response(status=400, text="nonce must be 64 hex digits")
        nonce = bytes.fromhex(nonce_text) if nonce_text else None
        epoch = self.gateway.keys.current
        if nonce is None:
            bundle = self.attester.bundle(epoch)
        else:
            bundle = await asyncio.get_running_loop().run_in_executor(
                None, self.attester.bundle, epoch, nonce)
        return web.Response(body=bundle, content_type="application/json",
                            headers={"Cache-Control": "no-store"})

    async def get_health(self, _request: web.Request) -> web.Response:
        """200 while serving; no detail."""
        return web.Response(text="ok\n")

    async def rotate_keys(self) -> None:
        """Background task: rotate and retire HPKE keys on schedule (K5)."""
        keys = self.gateway.keys
        while True:
            delay = (keys.next_change() - self.wallclock()).total_seconds()
            await asyncio.sleep(max(delay, 0.05))
            new, retired = keys.tick(self.wallclock())
            for epoch in new:
                self.attester.bundle(epoch)
                self.audit.event("key.rotated", key_id=epoch.key_id, epoch=epoch.serial)
            for epoch in retired:
                self.audit.event("key.retired", key_id=epoch.key_id, epoch=epoch.serial)
            del new, retired

    async def refresh_release(self, log_url: str, interval: float) -> None:
        """Background task: re-staple the release proof from the log every `interval` seconds.

        A failed refresh keeps the previous proof (clients judge its age by their policy).
        """
        from node.attest import refresh_release  # noqa: PLC0415

        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(interval)
            current = self.attester.release
            try:
                fresh = await loop.run_in_executor(None, refresh_release, log_url, current)
            except HushError:
                self.audit.event("release.refresh_failed", index=current.index)
                continue
            self.attester.restaple(fresh)
            self.audit.event("release.refreshed", index=fresh.index,
                             tree_size=int(fresh.checkpoint.split("\n")[1]))


async def serve(server: NodeServer, host: str, port: int, stop: asyncio.Event,  # noqa: PLR0913
                *, operator: web.Application | None = None, operator_port: int | None = None,
                listening: Callable[[], None] | None = None,
                release_refresh: tuple[str, float] | None = None,
                closing: Callable[[], Awaitable[None]] | None = None) -> None:
    """Serve until `stop`; print the one ready line; drain in-flight requests, then return.

    `listening` runs once every socket listens, before the ready line (the seccomp filter);
    `closing` once the engine is closed (e.g. the Redis replay store's connections).
    """
    runner = web.AppRunner(server.app(), access_log=None, handler_cancellation=True,
                           shutdown_timeout=server.limits.drain_timeout)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    ops: web.AppRunner | None = None
    if operator is not None and operator_port is not None:
        ops = web.AppRunner(operator, access_log=None)
        await ops.setup()
        await web.TCPSite(ops, host, operator_port).start()
        server.audit.event("metrics.listening", port=ops.addresses[0][1])
    tasks = [asyncio.create_task(server.rotate_keys())]
    if release_refresh is not None:
        tasks.append(asyncio.create_task(server.refresh_release(*release_refresh)))
    if listening is not None:
        listening()
    bound = runner.addresses[0][1] if runner.addresses else port
    print(f"listening on http://{host}:{bound}", flush=True)  # noqa: T201 - the ready line
    try:
        await stop.wait()
    finally:
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await runner.cleanup()  # stops accepting, waits for in-flight handlers (drain)
        if ops is not None:
            await ops.cleanup()
        await server.gateway.engine.close()
        if closing is not None:
            await closing()
