"""Spent-token stores: one relay's memory, or Redis shared by every relay (double spend, T5).

Not pure (Redis is I/O); the clock is a parameter. One operation matters, and it is atomic:
`spend(token_id, expires_at)` records the id and answers whether it was new. Ids are SHA-256 of
the token input (type, nonce, challenge digest, key id), never the token itself.

Invariants:
* Entries expire at the token key's `not_after` (its epoch end): after that the relay refuses
  the key's tokens anyway, so the set is bounded by one key epoch of redemptions.
* Fail closed: a store that cannot answer raises `SpentStoreUnavailableError` (the relay answers
  503) and never reports "new" for an id it could not record.
* Redis: `SET hushcc:spent:<hex> 1 NX EXAT <not_after>`, one round trip, atomic across relays,
  on one pipelined RESP connection (`relay.resp`): the commands of one loop tick leave in one
  write, and each redemption still waits for its own reply before the request goes on. Each
  call is bounded by a short timeout, never retried; a timeout, a malformed or unexpected reply
  or a lost connection fails every waiting redemption and the connection is dropped.
"""

from __future__ import annotations

import abc
import asyncio
import collections
import contextlib
import math
import ssl
import time
from typing import TYPE_CHECKING

from hushcc.errors import HushError, ProtocolError
from relay.resp import OK, ErrorReply, ReplyParser, command, parse_redis_url

if TYPE_CHECKING:
    from collections.abc import Callable

    from relay.resp import Reply

KEY_PREFIX = b"hushcc:spent:"
UNAVAILABLE = "spent-token store unavailable"


class SpentStoreUnavailableError(HushError):
    """The spent-token store could not record a redemption (fail closed: 503)."""


class SpentStore(abc.ABC):
    """The set of redeemed token ids, with expiry."""

    @abc.abstractmethod
    async def spend(self, token_id: bytes, expires_at: float) -> bool:
        """Record `token_id` until `expires_at` (UNIX seconds); True if it was not yet spent.

        Raises:
            SpentStoreUnavailableError: the store did not answer.
        """

    async def close(self) -> None:  # noqa: B027 - optional hook, most stores hold nothing
        """Release connections."""


class MemorySpentStore(SpentStore):
    """One process's spent set: a dict of id -> expiry, pruned as it grows."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        """Use `clock` (UNIX seconds) for expiry."""
        self.clock = clock
        self._expiry: dict[bytes, float] = {}
        self._prune_at = 1024

    def __len__(self) -> int:
        """Entries held (expired ones included until the next prune)."""
        return len(self._expiry)

    async def spend(self, token_id: bytes, expires_at: float) -> bool:
        """Record `token_id`; True if new or expired."""
        now = self.clock()
        if len(self._expiry) >= self._prune_at:
            self._expiry = {k: v for k, v in self._expiry.items() if v > now}
            self._prune_at = max(1024, 2 * len(self._expiry))
        previous = self._expiry.get(token_id)
        if previous is not None and previous > now:
            return False
        self._expiry[token_id] = expires_at
        return True


class _RespConnection(asyncio.Protocol):
    """One pipelined connection: commands written in order, each reply resolves the oldest wait.

    Every command issued in one loop tick leaves in one write. Anything wrong (a malformed reply,
    a reply nobody waits for, the connection lost) fails every waiting command with
    `SpentStoreUnavailableError` and closes the connection; it is never reused after that.
    """

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self._parser = ReplyParser()
        self._waiting: collections.deque[asyncio.Future[Reply]] = collections.deque()
        self._outgoing: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def call(self, packed: bytes) -> asyncio.Future[Reply]:
        """Queue one command; its reply (or `SpentStoreUnavailableError`) resolves the future."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Reply] = loop.create_future()
        if self.closed:
            future.set_exception(SpentStoreUnavailableError(UNAVAILABLE))
            return future
        if not self._outgoing:
            loop.call_soon(self._flush)
        self._outgoing.append(packed)
        self._waiting.append(future)
        return future

    def _flush(self) -> None:
        if self._outgoing and not self.closed and self.transport is not None:
            self.transport.write(b"".join(self._outgoing))
        self._outgoing.clear()

    def data_received(self, data: bytes) -> None:
        try:
            replies = self._parser.feed(data)
        except ProtocolError:
            self.abort()
            return
        for reply in replies:
            if not self._waiting:  # a reply to nothing: the stream is out of step
                self.abort()
                return
            future = self._waiting.popleft()
            if not future.done():  # a caller that timed out still consumed its reply slot
                future.set_result(reply)

    def connection_lost(self, _exc: Exception | None) -> None:
        self.closed = True
        while self._waiting:
            future = self._waiting.popleft()
            if not future.done():
                future.set_exception(SpentStoreUnavailableError(UNAVAILABLE))

    def abort(self) -> None:
        """Drop the connection; every waiting command fails."""
        if self.transport is not None and not self.closed:
            self.transport.abort()
        self.connection_lost(None)


class RedisSpentStore(SpentStore):
    """A spent set in Redis that every relay of a deployment shares.

    One pipelined connection, opened on first use and again after it fails (a new connection
    for later redemptions, never a resend of a command). Each `spend` waits at most `timeout`
    seconds for its own reply; a timeout drops the connection (fail closed).
    """

    def __init__(self, url: str, *, timeout: float = 0.5) -> None:
        """Connect lazily to `url` (`redis[s]://[user:password@]host:port/db`).

        Raises:
            ConfigError: a URL `parse_redis_url` refuses.
        """
        self.address = parse_redis_url(url)
        self.timeout = timeout
        self._connection: _RespConnection | None = None
        self._connecting: asyncio.Task[_RespConnection] | None = None

    async def _connect(self) -> _RespConnection:
        loop = asyncio.get_running_loop()
        tls = ssl.create_default_context() if self.address.tls else None
        async with asyncio.timeout(self.timeout):
            _, connection = await loop.create_connection(
                _RespConnection, self.address.host, self.address.port, ssl=tls)
            try:
                replies = [await connection.call(packed)
                           for packed in [*self.address.setup_commands(), command(b"PING")]]
            except BaseException:
                connection.abort()
                raise
        if any(isinstance(reply, ErrorReply) for reply in replies):  # e.g. NOAUTH, bad db
            connection.abort()
            raise SpentStoreUnavailableError(UNAVAILABLE)
        return connection

    def _connected(self, task: asyncio.Task[_RespConnection]) -> None:
        """Keep a new connection even if every caller that waited for it has timed out."""
        if not task.cancelled() and task.exception() is None:
            self._connection = task.result()

    async def _ready(self) -> _RespConnection:
        """The open connection, or one connect shared by every caller that needs it."""
        connection = self._connection
        if connection is not None and not connection.closed:
            return connection
        if self._connecting is None or self._connecting.done():
            self._connecting = asyncio.get_running_loop().create_task(self._connect())
            self._connecting.add_done_callback(self._connected)
        return await asyncio.shield(self._connecting)

    async def _call(self, packed: bytes) -> Reply:
        """Send one command and wait for its reply (bounded by `timeout`, connect included)."""
        connection = None
        try:
            async with asyncio.timeout(self.timeout):
                connection = await self._ready()
                return await connection.call(packed)
        except TimeoutError:
            if connection is not None:
                connection.abort()
            raise SpentStoreUnavailableError(UNAVAILABLE) from None
        except OSError as exc:  # refused, reset, TLS failures (ssl.SSLError is one)
            raise SpentStoreUnavailableError(UNAVAILABLE) from exc

    async def spend(self, token_id: bytes, expires_at: float) -> bool:
        """`SET key 1 NX EXAT not_after`: True if this call created the key."""
        reply = await self._call(command(
            b"SET", KEY_PREFIX + token_id.hex().encode(), b"1", b"NX", b"EXAT",
            b"%d" % math.ceil(expires_at)))
        if reply == OK:
            return True
        if reply is None:
            return False
        raise SpentStoreUnavailableError(UNAVAILABLE)  # an error reply, or a reply SET never gives

    async def ping(self) -> None:
        """Check the connection (at startup).

        Raises:
            SpentStoreUnavailableError: Redis does not answer.
        """
        await self._call(command(b"PING"))

    async def close(self) -> None:
        """Close the connection (commands still waiting fail)."""
        if self._connecting is not None:
            self._connecting.cancel()
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await self._connecting
            self._connecting = None
        if self._connection is not None:
            self._connection.abort()
            self._connection = None
