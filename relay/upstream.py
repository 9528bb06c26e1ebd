"""The relay's connections to its gateways: pooled keep-alive HTTP/1.1, one request at a time each.

Not pure (sockets); `relay.http1` parses. `GatewayPool.send` writes one request the relay built
(head and body in one write) on an idle connection to that gateway or a new one, and returns
the `Exchange` once the response head is in; `Exchange.next` gives the body as it arrives.

Invariants:
* Never a retry: a request is written once; if that connection fails before or after the
  head, the caller gets the error (`GatewayError`, `ProtocolError`, `OSError`, `TimeoutError`).
* A connection is reused only if its last response was read to its end, was not marked
  `Connection: close`, had nothing after its end, and nothing arrived while it sat idle; it
  sits idle at most `idle_seconds` (well under a server's keep-alive timeout, so a gateway
  closing it under a new request is unlikely). Anything else closes it.
* Flow control: the body waiting to be read is bounded; past `HIGH_WATER` bytes the socket is
  paused until the reader drains it below `LOW_WATER` (a slow client never makes the relay
  buffer a whole stream).
* Nothing here logs; errors carry no request or response bytes.
"""

from __future__ import annotations

import asyncio
import collections
import ssl
import time
from typing import TYPE_CHECKING

from hushcc.errors import HushError, ProtocolError
from relay.http1 import Piece, ResponseHead, ResponseParser

if TYPE_CHECKING:
    from collections.abc import Callable

    from relay.http1 import Event, GatewayTarget

HIGH_WATER = 1 << 18
LOW_WATER = 1 << 16


class GatewayError(HushError):
    """The gateway connection closed or broke before the response was complete."""


class Exchange(asyncio.Protocol):
    """One gateway connection; while a request is out, the events of its response."""

    def __init__(self, key: tuple[bool, str, int]) -> None:
        """A connection for the pool slot `key` (tls, host, port)."""
        self.key = key
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self._parser: ResponseParser | None = None
        self._events: collections.deque[Event] = collections.deque()
        self._buffered = 0
        self._paused = False
        self._waiter: asyncio.Future[None] | None = None
        self._broken = False
        self._keep_alive = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Keep the transport."""
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def start(self, request: bytes) -> None:
        """Write one whole request; its response is parsed from now on."""
        assert self.transport is not None
        self._parser = ResponseParser()
        self._events.clear()
        self.transport.write(request)

    def data_received(self, data: bytes) -> None:
        """Parse the response's bytes; anything unexpected breaks the connection."""
        if self._parser is None:  # bytes while idle: the stream is out of step
            self.close()
            return
        try:
            events = self._parser.feed(data)
        except ProtocolError:
            self._broken = True
            self.close()
            return
        for event in events:
            if isinstance(event, Piece):
                self._buffered += len(event.data)
        self._events.extend(events)
        if self._buffered > HIGH_WATER and not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool:
        """The gateway closed its side: this connection is done."""
        self.closed = True
        self._wake()
        return False

    def connection_lost(self, _exc: Exception | None) -> None:
        """Wake a reader waiting for more."""
        self.closed = True
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def next(self) -> Event:
        """The next event of the response (waits for it).

        Raises:
            GatewayError: the connection closed first.
            ProtocolError: the gateway's bytes broke HTTP/1.1 framing.
        """
        while not self._events:
            if self._broken:
                raise ProtocolError("gateway response malformed")
            if self.closed:
                raise GatewayError("gateway connection closed")
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        event = self._events.popleft()
        if isinstance(event, ResponseHead):
            self._keep_alive = event.keep_alive
        elif isinstance(event, Piece):
            self._buffered -= len(event.data)
            if self._paused and self._buffered < LOW_WATER and self.transport is not None:
                self._paused = False
                self.transport.resume_reading()
        return event

    @property
    def has_event(self) -> bool:
        """Whether `next` would return without waiting."""
        return bool(self._events)

    @property
    def reusable(self) -> bool:
        """Whether the response was read to its end and the connection may carry another."""
        parser = self._parser
        return (not self.closed and not self._events and parser is not None and parser.done
                and parser.surplus == 0 and self._keep_alive)

    def idle(self, now: float) -> None:
        """Between requests: any byte that arrives now breaks the connection."""
        self._parser = None
        self.idle_since = now

    def close(self) -> None:
        """Close the connection now (abort: nothing left to send matters)."""
        self.closed = True
        if self.transport is not None:
            self.transport.abort()
        self._wake()


class GatewayPool:
    """Idle keep-alive connections per gateway origin."""

    def __init__(self, *, max_idle: int = 64, idle_seconds: float = 15.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        """Keep at most `max_idle` idle connections per origin, each at most `idle_seconds`."""
        self.max_idle = max_idle
        self.idle_seconds = idle_seconds
        self.clock = clock
        self._idle: dict[tuple[bool, str, int], list[Exchange]] = {}
        self._tls: ssl.SSLContext | None = None

    async def _connection(self, target: GatewayTarget) -> Exchange:
        key = (target.tls, target.host, target.port)
        idle = self._idle.get(key)
        now = self.clock()
        while idle:
            exchange = idle.pop()
            if not exchange.closed and now - exchange.idle_since < self.idle_seconds:
                return exchange
            exchange.close()
        tls = None
        if target.tls:
            tls = self._tls = self._tls or ssl.create_default_context()
        loop = asyncio.get_running_loop()
        _, exchange = await loop.create_connection(lambda: Exchange(key), target.host,
                                                   target.port, ssl=tls)
        return exchange

    async def send(self, target: GatewayTarget, request: bytes) -> tuple[Exchange, ResponseHead]:
        """Write `request` once to `target`; return the exchange and its response head.

        The caller bounds the wait (connect and head) and must `release` the exchange.
        """
        exchange = await self._connection(target)
        try:
            exchange.start(request)
            event = await exchange.next()
        except BaseException:
            exchange.close()
            raise
        if not isinstance(event, ResponseHead):  # the parser yields the head first
            exchange.close()
            raise GatewayError("gateway response without a head")
        return exchange, event

    def release(self, exchange: Exchange) -> None:
        """Return `exchange` to the pool if it may carry another request, else close it."""
        idle = self._idle.setdefault(exchange.key, [])
        if exchange.reusable and len(idle) < self.max_idle:
            exchange.idle(self.clock())
            idle.append(exchange)
        else:
            exchange.close()

    def close(self) -> None:
        """Close every idle connection."""
        for idle in self._idle.values():
            for exchange in idle:
                exchange.close()
        self._idle.clear()
