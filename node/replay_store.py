"""Replay stores for the gateway: in memory (one process) or Redis (replicas sharing one key).

The gateway asks `check_and_record(enc, epoch=..., now=...)` after a request decapsulated and
before anything else reads it (RFC 9458 §6.5; SECURITY.md G3, G4). Both stores remember an
`enc` for `window` seconds within its key epoch and fail closed: a store that cannot answer (full,
or Redis unreachable) refuses the request (`ReplayStoreFullError`, answered 503), never admits it.

* `MemoryReplayStore` wraps the pure `ohttp.replay.ReplayGuard` (bounded, time injected).
* `RedisReplayStore` uses one atomic `SET key 1 NX PX window` per request: `NX` makes the first
  writer win across replicas, `PX` forgets the entry once the window has passed. Keys are
  `prefix + epoch + SHA-256(enc)` (enc is public, the hash only bounds the key length).
"""

from __future__ import annotations

import abc
import hashlib
from typing import TYPE_CHECKING

from ohttp.replay import ReplayError, ReplayGuard, ReplayLimits, ReplayStoreFullError

if TYPE_CHECKING:
    import redis.asyncio


class ReplayStore(abc.ABC):
    """Where the gateway remembers the `enc` values it has accepted."""

    @abc.abstractmethod
    async def check_and_record(self, enc: bytes, *, epoch: int, now: float) -> None:
        """Refuse a replay of `enc` in `epoch`; otherwise remember it for the window.

        Raises:
            ReplayError: seen within the window.
            ReplayStoreFullError: the store cannot remember it (full or unreachable): refuse.
        """

    async def close(self) -> None:  # noqa: B027 - optional hook; the memory store needs none
        """Release connections."""


class MemoryReplayStore(ReplayStore):
    """One process's store: `ohttp.replay.ReplayGuard`."""

    def __init__(self, limits: ReplayLimits | None = None) -> None:
        """Create an empty bounded store."""
        self.guard = ReplayGuard(limits)

    async def check_and_record(self, enc: bytes, *, epoch: int, now: float) -> None:
        """See `ReplayStore.check_and_record`."""
        self.guard.check_and_record(enc, epoch=epoch, now=now)


class RedisReplayStore(ReplayStore):
    """A store shared by replicas behind one key, in Redis (`SET NX PX`)."""

    def __init__(self, client: redis.asyncio.Redis, *, window: float,
                 prefix: bytes = b"hushcc:replay:") -> None:
        """Use `client`; entries live `window` seconds."""
        self._client = client
        self._window_ms = max(1, round(window * 1000))
        self._prefix = prefix

    @classmethod
    def from_url(cls, url: str, *, window: float) -> RedisReplayStore:
        """Connect lazily to the Redis at `url` (`redis://host:port/db`)."""
        import redis.asyncio  # noqa: PLC0415

        return cls(redis.asyncio.Redis.from_url(url, socket_timeout=2.0,
                                                socket_connect_timeout=2.0), window=window)

    async def check_and_record(self, enc: bytes, *, epoch: int, now: float) -> None:
        """See `ReplayStore.check_and_record` (`now` is Redis's clock here, via PX)."""
        import redis  # noqa: PLC0415

        del now
        key = self._prefix + str(epoch).encode() + b":" + hashlib.sha256(enc).digest()
        try:
            fresh = await self._client.set(key, b"1", nx=True, px=self._window_ms)
        except (redis.RedisError, OSError) as exc:
            raise ReplayStoreFullError from exc
        if not fresh:
            raise ReplayError

    async def close(self) -> None:
        """Close the connection pool."""
        await self._client.aclose()
