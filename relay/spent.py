"""Spent-token stores: one relay's memory, or Redis shared by every relay (double spend, T5).

Not pure (Redis is I/O); the clock is a parameter. One operation matters, and it is atomic:
`spend(token_id, expires_at)` records the id and answers whether it was new. Ids are SHA-256 of
the token input (type, nonce, challenge digest, key id), never the token itself.

Invariants:
* Entries expire at the token key's `not_after` (its epoch end): after that the relay refuses
  the key's tokens anyway, so the set is bounded by one key epoch of redemptions.
* Fail closed: a store that cannot answer raises `SpentStoreUnavailableError` (the relay answers
  503) and never reports "new" for an id it could not record.
* Redis: `SET hushcc:spent:<hex> 1 NX EXAT <not_after>`, atomic across relays, through the
  project's one Redis set (`hushcc.shared_set`: no retries, short timeouts, the SETs of one
  event-loop tick in one pipeline, a failed batch failing every redemption in it with 503; a
  redemption whose client went away may still have spent its token, never the reverse).
"""

from __future__ import annotations

import abc
import time
from typing import TYPE_CHECKING

from hushcc.errors import HushError
from hushcc.shared_set import RedisFirstWriterSet, SharedSetUnavailableError

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
        self._set = RedisFirstWriterSet(url, timeout=timeout)

    async def spend(self, token_id: bytes, expires_at: float) -> bool:
        """`SET key 1 NX EXAT not_after`: True if this call created the key."""
        try:
            return await self._set.add(KEY_PREFIX + token_id.hex().encode(), expires_at)
        except SharedSetUnavailableError as exc:
            raise SpentStoreUnavailableError("spent-token store unavailable") from exc

    async def ping(self) -> None:
        """Check the connection (at startup).

        Raises:
            SpentStoreUnavailableError: Redis does not answer.
        """
        try:
            await self._set.ping()
        except SharedSetUnavailableError as exc:
            raise SpentStoreUnavailableError("spent-token store unavailable") from exc

    async def close(self) -> None:
        """Fail what is still waiting, close the connection pool."""
        await self._set.close()
