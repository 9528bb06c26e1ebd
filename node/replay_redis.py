"""The replay store replicas behind one key share: `ohttp.replay.ReplayStore` in Redis.

The gateway (`node.gateway`) speaks only ohttp's `ReplayStore` protocol,
`remember(enc, *, epoch, now, until)`: in one process it is the pure, bounded
`ohttp.replay.ReplayGuard`; several replicas behind one key share this Redis-backed one
(RFC 9458 §6.5; SECURITY.md G3, G4). Not pure: it does network I/O, so it lives in the node's shell.

Invariants:
* One atomic `SET key 1 NX EXAT until` per request, through the project's one Redis set
  (`hushcc.shared_set`: no retries, short timeouts, one pipeline per event-loop tick): `NX`
  makes the first writer win across replicas; `EXAT` (whole seconds, rounded up, so never
  shorter) keeps the entry until `until`, the last instant the request's Date passes the
  gateway's Date check, and lets Redis forget it after.
* Keys are `prefix + epoch + ":" + SHA-256(enc)` (enc is public; the hash bounds the key length).
* Fail closed: a Redis that cannot answer (down, timeout) refuses the request with
  `ReplayStoreFullError` (503), never admits it.
"""

from __future__ import annotations

import hashlib

from hushcc.shared_set import RedisFirstWriterSet, SharedSetUnavailableError
from ohttp.replay import ReplayError, ReplayStoreFullError

PREFIX = b"hushcc:replay:"
TIMEOUT = 2.0  # seconds per Redis call


class RedisReplayStore:
    """`ohttp.replay.ReplayStore` in Redis (`SET NX EXAT`), shared by replicas behind one key."""

    def __init__(self, shared: RedisFirstWriterSet, *, prefix: bytes = PREFIX) -> None:
        """Use `shared`."""
        self._set, self._prefix = shared, prefix

    @classmethod
    def from_url(cls, url: str) -> RedisReplayStore:
        """Connect lazily to the Redis at `url` (`redis://host:port/db`)."""
        return cls(RedisFirstWriterSet(url, timeout=TIMEOUT))

    async def remember(self, enc: bytes, *, epoch: int, now: float, until: float) -> None:
        """`ReplayStore.remember`; `now` is unused (Redis expires the entry at `until`).

        Raises:
            ReplayError: `(epoch, enc)` is remembered (by this or another replica).
            ReplayStoreFullError: Redis did not answer: refuse (fail closed).
        """
        del now
        key = self._prefix + str(epoch).encode() + b":" + hashlib.sha256(enc).digest()
        try:
            fresh = await self._set.add(key, until)
        except SharedSetUnavailableError as exc:
            raise ReplayStoreFullError from exc
        if not fresh:
            raise ReplayError

    async def close(self) -> None:
        """Close the connection pool."""
        await self._set.close()
