"""Connection guards for the relay: absolute receipt deadline, connection cap, redemption rate.

Not pure where it touches transports; `TokenBucket` is pure (the clock is a parameter).

* `ReceiptGuard` wraps aiohttp's per-connection protocol. A request's receipt window opens with
  its first byte; the handler closes it (`received`) once the whole body is read. If the window
  is still open `receipt_deadline` seconds after it opened, the connection is aborted: a client
  trickling header or body bytes is cut off at that absolute time, never kept alive by each byte
  (uvicorn #157 / Slowloris, R2). Time spent waiting for the response does not count.
* Above `max_connections` open connections, a new one gets a canned `503` with `Retry-After`
  and is closed before anything is parsed (R3: a fast answer, bounded work).
* `TokenBucket` meters token redemptions (the relay's rate: each token admits one request, and
  the bucket bounds how fast tokens are accepted overall).
Nothing here sees request content; only counters leave it.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from collections.abc import Callable

OVERLOADED = (b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Length: 0\r\n"
              b"Connection: close\r\n\r\n")


@dataclass(slots=True)
class GuardState:
    """Limits and counters shared by every connection of one listening socket."""

    receipt_deadline: float
    max_connections: int
    open: int = 0
    deadline_aborts: int = 0
    overload_rejects: int = 0
    by_transport: dict[asyncio.BaseTransport, ReceiptGuard] = field(default_factory=dict)

    def received(self, transport: asyncio.BaseTransport | None) -> None:
        """Close the receipt window of the connection `transport` (the request is all in)."""
        guard = self.by_transport.get(transport) if transport is not None else None
        if guard is not None:
            guard.received()


class ReceiptGuard(asyncio.Protocol):
    """A protocol that forwards to aiohttp's and enforces the deadline and the cap."""

    def __init__(self, inner: asyncio.Protocol, state: GuardState) -> None:
        """Guard `inner` with the shared `state`."""
        self.inner = inner
        self.state = state
        self.transport: asyncio.Transport | None = None
        self.rejected = False
        self._timer: asyncio.TimerHandle | None = None
        self._window_open = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Admit the connection or answer 503 at once."""
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        if self.state.open >= self.state.max_connections:
            self.rejected = True
            self.state.overload_rejects += 1
            transport.write(OVERLOADED)
            transport.close()
            return
        self.state.open += 1
        self.state.by_transport[transport] = self
        self.inner.connection_made(transport)

    def _open_window(self) -> None:
        self._window_open = True
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self.state.receipt_deadline, self._deadline)

    def _deadline(self) -> None:
        self._timer = None
        if self._window_open and self.transport is not None:
            self.state.deadline_aborts += 1
            self.transport.abort()

    def received(self) -> None:
        """The current request is fully received: stop its clock."""
        self._window_open = False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def data_received(self, data: bytes) -> None:
        """Open a receipt window on a request's first byte, then hand the bytes to aiohttp."""
        if self.rejected:
            return
        if not self._window_open:
            self._open_window()
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        """Forward EOF."""
        return None if self.rejected else self.inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        """Stop the clock, count the connection out, tell aiohttp."""
        self.received()
        if self.rejected:
            return
        self.state.open -= 1
        if self.transport is not None:
            self.state.by_transport.pop(self.transport, None)
        self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        """Forward flow control."""
        if not self.rejected:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        """Forward flow control."""
        if not self.rejected:
            self.inner.resume_writing()


class GuardedSite(web.TCPSite):
    """A TCP site whose connections are wrapped in `ReceiptGuard`."""

    def __init__(self, runner: web.BaseRunner, host: str, port: int, state: GuardState) -> None:
        """Listen on host:port with guards sharing `state`."""
        super().__init__(runner, host, port)
        self.state = state

    async def start(self) -> None:
        """Start listening (as `TCPSite.start`, with the guard around each protocol)."""
        await web.BaseSite.start(self)
        server = self._runner.server
        if server is None:
            msg = "runner is not set up"
            raise RuntimeError(msg)

        def factory() -> asyncio.Protocol:
            return ReceiptGuard(server(), self.state)

        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(factory, self._host, self._port,
                                                backlog=self._backlog)


@dataclass(slots=True)
class TokenBucket:
    """`rate` events per second on average, `burst` at once."""

    rate: float
    burst: float
    clock: Callable[[], float] = time.monotonic
    _level: float = -1.0
    _stamp: float = 0.0

    def take(self) -> float:
        """Take one event; return 0, or the seconds until one would be allowed."""
        now = self.clock()
        if self._level < 0:
            self._level, self._stamp = self.burst, now
        self._level = min(self.burst, self._level + (now - self._stamp) * self.rate)
        self._stamp = now
        if self._level >= 1:
            self._level -= 1
            return 0.0
        return (1 - self._level) / self.rate
