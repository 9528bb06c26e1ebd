"""Spent-token stores: one relay's memory, or Redis shared by every relay (double spend, T5).

Not pure (Redis is I/O); the clock is a parameter. One operation matters, and it is atomic:
`spend(token_id, expires_at)` records the id and answers whether it was new. Ids are SHA-256 of
the token input (type, nonce, challenge digest, key id), never the token itself.

Invariants:
* Entries expire at the token key's `not_after` (its epoch end): after that the relay refuses
  the key's tokens anyway, so the set is bounded by one key epoch of redemptions.
* Fail closed: a store that cannot answer raises `SpentStoreUnavailableError` (the relay answers
  503) and never reports "new" for an id it could not record.
* Redis: `SET hushcc:spent:<hex> 1 NX EXAT <not_after>`, atomic across relays; the client uses
  short socket timeouts and no retries. The SETs of one event-loop tick leave together in one
  redis-py pipeline (no transaction: each SET stands alone) and each redemption awaits its own
  reply; a lone SET goes out plain (a pipeline costs more for one command). A pipeline that fails
  in any way fails every redemption in it (503), none is reported new; a redemption whose waiter
  went away (client disconnect) may still have spent its token, never the reverse.
"""

from __future__ import annotations

import abc
import asyncio
import math
import time
from typing import TYPE_CHECKING

import redis.asyncio as aioredis
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.retry import Retry

from hushcc.errors import HushError

if TYPE_CHECKING:
    from collections.abc import Callable

KEY_PREFIX = b"hushcc:spent:"


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


class RedisSpentStore(SpentStore):
    """A spent set in Redis that every relay of a deployment shares."""

    def __init__(self, url: str, *, timeout: float = 0.5) -> None:
        """Connect lazily to `url` (`redis://host:port/db`) with `timeout` seconds per call."""
        self._client = aioredis.Redis.from_url(
            url, socket_timeout=timeout, socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 0), retry_on_error=[])
        self._waiting: list[tuple[bytes, int, asyncio.Future[bool]]] = []
        self._sending: set[asyncio.Task[None]] = set()

    async def spend(self, token_id: bytes, expires_at: float) -> bool:
        """`SET key 1 NX EXAT not_after`: True if this call created the key."""
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[bool] = loop.create_future()
        self._waiting.append((KEY_PREFIX + token_id.hex().encode(), math.ceil(expires_at),
                              answer))
        if len(self._waiting) == 1:  # the first of this tick: send them all once it ends
            loop.call_soon(self._send_waiting)
        return await answer

    def _send_waiting(self) -> None:
        batch, self._waiting = self._waiting, []
        task = asyncio.get_running_loop().create_task(self._send(batch))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _send(self, batch: list[tuple[bytes, int, asyncio.Future[bool]]]) -> None:
        try:
            created = await self._set_all([(key, exat) for key, exat, _ in batch])
        except BaseException as exc:  # every waiter gets an answer: fail closed, whatever it was
            for _, _, answer in batch:
                if not answer.done():
                    answer.set_exception(
                        SpentStoreUnavailableError("spent-token store unavailable"))
            if not isinstance(exc, (RedisError, OSError, HushError)):
                raise  # cancellation (close) or a bug: not swallowed
            return
        for (_, _, answer), new in zip(batch, created, strict=True):
            if not answer.done():  # its redemption may have been cancelled meanwhile
                answer.set_result(new)

    async def _set_all(self, keys: list[tuple[bytes, int]]) -> list[bool]:
        """One SET NX EXAT per key, in one round trip; whether each created its key."""
        if len(keys) == 1:
            key, exat = keys[0]
            created = [await self._client.set(key, b"1", nx=True, exat=exat)]
        else:
            async with self._client.pipeline(transaction=False) as pipe:
                for key, exat in keys:
                    pipe.set(key, b"1", nx=True, exat=exat)
                created = await pipe.execute()
        if len(created) != len(keys):
            raise SpentStoreUnavailableError("spent-token store answered out of step")
        return [bool(new) for new in created]

    async def ping(self) -> None:
        """Check the connection (at startup).

        Raises:
            SpentStoreUnavailableError: Redis does not answer.
        """
        try:
            await self._client.ping()
        except (RedisError, OSError) as exc:
            raise SpentStoreUnavailableError("spent-token store unavailable") from exc

    async def close(self) -> None:
        """Fail what is still waiting, close the connection pool."""
        for task in list(self._sending):
            task.cancel()
        await asyncio.gather(*self._sending, return_exceptions=True)
        await self._client.aclose()
