"""Connection limits for an aiohttp server: a cap, an absolute receipt deadline, no 500 detail.

An I/O shell around aiohttp's own protocol (`web.Server` builds one `RequestHandler` per
connection); nothing here reads request content.

Invariants:
* At most `max_connections` connections are open: one accepted beyond the cap is closed at
  once (before aiohttp sees it), so a flood costs a socket each for an instant, no more.
* Receipt deadline: from the moment a connection opens, and again from the first byte of each
  later request on it, the whole request (headers and body) must arrive within
  `receipt_timeout` seconds, however slowly it trickles; otherwise the connection is aborted.
  The deadline is absolute: bytes arriving do not extend it. The `guard_middleware` reads the
  body before the handler runs and only then stops the clock, so a handler never waits on a
  slow client. Between requests aiohttp's keep-alive timeout closes idle connections.
* An exception a handler did not expect becomes a bare `500 {"error": "internal error"}`; only
  its type name is logged (never its message, which could quote a request), and no traceback
  reaches the client or the log.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from aiohttp.web_protocol import RequestHandler

LOG = logging.getLogger("hushcc.log.http")
_GUARD_KEY: web.AppKey[ConnectionGuard] = web.AppKey("connection_guard")


class _GuardedProtocol(asyncio.Protocol):
    """One connection: enforces the cap and the deadline, forwards everything else to aiohttp."""

    def __init__(self, guard: ConnectionGuard, make_inner: Callable[[], RequestHandler]) -> None:
        self._guard = guard
        self._make_inner = make_inner
        self._inner: RequestHandler | None = None
        self._transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        if len(self._guard.open) >= self._guard.max_connections:
            self._guard.refused += 1
            transport.abort()
            return
        self._transport = transport
        self._guard.open[transport] = self
        self.arm()
        self._inner = self._make_inner()
        self._inner.connection_made(transport)

    def arm(self) -> None:
        """Start the receipt clock (no-op if it is running)."""
        if self._timer is None:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(self._guard.receipt_timeout, self._expired)

    def disarm(self) -> None:
        """Stop the receipt clock: the current request has fully arrived."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expired(self) -> None:
        self._timer = None
        self._guard.expired += 1
        if self._transport is not None:
            self._transport.abort()

    def data_received(self, data: bytes) -> None:
        if self._inner is not None:
            self.arm()  # bytes of a request not yet fully received
            self._inner.data_received(data)

    def eof_received(self) -> None:
        if self._inner is not None:
            self._inner.eof_received()

    def pause_writing(self) -> None:
        if self._inner is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._inner is not None:
            self._inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self.disarm()
        if self._transport is not None:
            self._guard.open.pop(self._transport, None)
        if self._inner is not None:
            self._inner.connection_lost(exc)
            self._inner = None


class ConnectionGuard:
    """The cap and deadline shared by every connection of one server."""

    def __init__(self, *, receipt_timeout: float, max_connections: int) -> None:
        """Allow `max_connections` at once, each request `receipt_timeout` seconds to arrive."""
        self.receipt_timeout = receipt_timeout
        self.max_connections = max_connections
        self.open: dict[asyncio.Transport, _GuardedProtocol] = {}
        self.refused = 0  # connections closed at accept (cap reached)
        self.expired = 0  # connections aborted at the receipt deadline

    def protocol_factory(self, server: web.Server) -> Callable[[], asyncio.Protocol]:
        """Wrap aiohttp's protocol factory for `loop.create_server`."""
        return lambda: _GuardedProtocol(self, server)

    def install(self, app: web.Application) -> None:
        """Add the middleware that reads bodies under the deadline and hides handler errors."""
        app[_GUARD_KEY] = self
        app.middlewares.append(guard_middleware)

    def received(self, transport: asyncio.BaseTransport | None) -> None:
        """Stop the clock of the connection on `transport`: its request has arrived."""
        protocol = self.open.get(transport) if isinstance(transport, asyncio.Transport) else None
        if protocol is not None:
            protocol.disarm()


@web.middleware
async def guard_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Receive the whole request under the deadline, then run the handler; no 500 detail."""
    try:
        await request.read()  # cached: the handler's own read() returns the same bytes
    except web.HTTPRequestEntityTooLarge:
        return web.json_response({"error": "request body too large"}, status=413)
    except ConnectionError:  # cut at the deadline or gone: nobody is left to answer
        return web.Response(status=408)
    request.app[_GUARD_KEY].received(request.transport)
    try:
        return await handler(request)
    except web.HTTPException:
        raise
    except Exception as exc:  # noqa: BLE001 - the one place unexpected errors are contained
        LOG.error("handler failed with %s", type(exc).__name__)  # noqa: TRY400 - no traceback
        return web.json_response({"error": "internal error"}, status=500)
