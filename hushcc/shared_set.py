"""A set shared through Redis where the first writer of a key wins, each key kept until a time.

The one Redis operation the project needs, for the relays' spent tokens (`relay.spent`) and the
replay store of replicas behind one key (`node.replay_redis`): `SET key 1 NX EXAT until`. Each
caller builds its own keys and turns "not new" and "unavailable" into its own refusals.

Not pure: Redis is network I/O (redis-py, the chosen client).

Invariants:
* Atomic across every process sharing the Redis: `NX` makes the first writer win.
* `EXAT` is whole seconds rounded up: an entry never lives shorter than asked.
* No retries and short timeouts: a SET NX retried after its reply was lost would find its own
  write and call it a repeat.
* The adds of one event-loop tick leave in one redis-py pipeline (no transaction: each SET stands
  alone), each awaiting its own reply; a lone add goes out plain (a pipeline costs more for one).
* Fail closed: a batch that fails in any way raises `SharedSetUnavailableError` to every add in
  it; none is reported new. An add whose waiter went away (cancelled) may still have written its
  key, never the reverse.
"""

from __future__ import annotations

import asyncio
import math

import redis.asyncio as aioredis
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.retry import Retry

from hushcc.errors import HushError


class SharedSetUnavailableError(HushError):
    """Redis could not record an add (the caller refuses: fail closed)."""


class RedisFirstWriterSet:
    """Keys in Redis, each added once by whichever process writes it first (module docstring)."""

    def __init__(self, url: str, *, timeout: float) -> None:
        """Connect lazily to `url` (`redis://host:port/db`) with `timeout` seconds per call."""
        self._client = aioredis.Redis.from_url(
            url, socket_timeout=timeout, socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 0), retry_on_error=[])
        self._waiting: list[tuple[bytes, int, asyncio.Future[bool]]] = []
        self._sending: set[asyncio.Task[None]] = set()

    async def add(self, key: bytes, until: float) -> bool:
        """`SET key 1 NX EXAT ceil(until)`: True if this call created the key.

        Raises:
            SharedSetUnavailableError: Redis did not record it.
        """
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[bool] = loop.create_future()
        self._waiting.append((key, math.ceil(until), answer))
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
                    answer.set_exception(SharedSetUnavailableError("shared store unavailable"))
            if not isinstance(exc, (RedisError, OSError, HushError)):
                raise  # cancellation (close) or a bug: not swallowed
            return
        for (_, _, answer), new in zip(batch, created, strict=True):
            if not answer.done():  # its waiter may have been cancelled meanwhile
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
            raise SharedSetUnavailableError("shared store answered out of step")
        return [bool(new) for new in created]

    async def ping(self) -> None:
        """Check the connection (at startup).

        Raises:
            SharedSetUnavailableError: Redis does not answer.
        """
        try:
            await self._client.ping()
        except (RedisError, OSError) as exc:
            raise SharedSetUnavailableError("shared store unavailable") from exc

    async def close(self) -> None:
        """Fail what is still waiting, close the connection pool."""
        for task in list(self._sending):
            task.cancel()
        await asyncio.gather(*self._sending, return_exceptions=True)
        await self._client.aclose()
