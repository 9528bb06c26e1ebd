"""Gateway replay defences (RFC 9458 §6.5): `ReplayStore`, its in-memory store, the Date window.

Pure: time is a parameter (`now`, `until`: seconds on one clock, Unix time when `until` comes from
a request's Date; an aware `datetime` for the Date check). `ReplayStore` is the seam for stores
that do I/O (the node's Redis store): they live in the I/O shell, not here.

Invariants:
* An `enc` is remembered until the latest time its request could still be accepted: its Date plus
  the window (`remember_until`), since `check_date` accepts a Date up to `window` either side of
  the gateway's clock; without a Date, `2 * window` after it was first seen (the latest a Date
  accepted on arrival can stay acceptable). A replay is therefore refused by one check or the
  other at every instant: at most `window` after its Date by the store, later by the Date check.
* Remembering is per key epoch: the same `enc` under another epoch is another request.
* The store never grows past `max_entries`: when full of live entries it fails closed
  (`ReplayStoreFullError`) rather than evicting a live entry, which would reopen the window.
* The Date check follows §6.5.1: a request whose `Date` is missing, malformed or outside
  [now - window, now + window] is refused with the `date` problem (see `ohttp.problems`).
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime, parsedate_to_datetime
from typing import Protocol

from hushcc.errors import ProtocolError


class ReplayError(ProtocolError):
    """The encapsulated request was seen before within the replay window."""

    def __init__(self) -> None:
        """Create the detail-free error."""
        super().__init__("replayed request")


class ReplayStoreFullError(ProtocolError):
    """The replay store is full of live entries: refuse (503) rather than forget one."""

    status_hint = 503

    def __init__(self) -> None:
        """Create the detail-free error."""
        super().__init__("replay store full")


class DateOutOfWindowError(ProtocolError):
    """The request's Date is missing, malformed or outside the acceptance window (§6.5.1)."""

    def __init__(self) -> None:
        """Create the detail-free error."""
        super().__init__("request date outside the acceptable window")


class ReplayStore(Protocol):
    """Remember a request's `enc` until a deadline, or say it was seen (RFC 9458 §6.5).

    The one operation is atomic: of two concurrent calls with the same `(epoch, enc)` exactly one
    returns. `now` and `until` are seconds on the same clock (Unix time when `until` comes from
    `remember_until`); an entry is live while `now <= until`. Implementations: `ReplayGuard`
    (in memory, one process) here; a shared one (Redis) in the node's I/O shell.
    """

    async def remember(self, enc: bytes, *, epoch: int, now: float, until: float) -> None:
        """Remember `(epoch, enc)` until `until`, or refuse it if it is remembered already.

        Raises:
            ReplayError: `(epoch, enc)` is remembered and still live at `now`.
            ReplayStoreFullError: the store cannot remember another entry (fail closed).
        """
        ...


@dataclass(frozen=True, slots=True)
class ReplayLimits:
    """The Date window an `enc` is checked against, and how many may be remembered at once."""

    window: float = 60.0
    max_entries: int = 100_000


class ReplayGuard:
    """In-memory `ReplayStore`: `(epoch, enc)` -> until when it is remembered; bounded."""

    def __init__(self, limits: ReplayLimits | None = None) -> None:
        """Create an empty store."""
        self.limits = limits or ReplayLimits()
        self._until: dict[tuple[int, bytes], float] = {}
        self._expiry: list[tuple[float, tuple[int, bytes]]] = []  # heap by deadline

    def __len__(self) -> int:
        """Number of remembered entries (live or not yet expired)."""
        return len(self._until)

    def _expire(self, now: float) -> None:
        while self._expiry and self._expiry[0][0] < now:
            until, key = heapq.heappop(self._expiry)
            if self._until.get(key) == until:
                del self._until[key]

    def check_and_record(
        self, enc: bytes, *, epoch: int, now: float, until: float | None = None
    ) -> None:
        """Refuse a replay of `enc` in `epoch`; otherwise remember it until `until`.

        Args:
            enc: the encapsulated KEM output of the request (public).
            epoch: the key epoch (e.g. the key id or a rotation counter).
            now: current time in seconds; must not go backwards.
            until: the last instant the request could still be accepted (`remember_until` of
                its Date); `now + 2 * window` by default.

        Raises:
            ReplayError: `enc` is remembered in this epoch.
            ReplayStoreFullError: too many live entries to remember another one.
        """
        self._expire(now)
        key = (epoch, bytes(enc))
        if key in self._until:
            raise ReplayError
        if len(self._until) >= self.limits.max_entries:
            raise ReplayStoreFullError
        deadline = now + 2 * self.limits.window if until is None else until
        self._until[key] = deadline
        heapq.heappush(self._expiry, (deadline, key))

    async def remember(self, enc: bytes, *, epoch: int, now: float, until: float) -> None:
        """`ReplayStore.remember`: `check_and_record` (no I/O, so atomic under asyncio)."""
        self.check_and_record(enc, epoch=epoch, now=now, until=until)

    def forget_epoch(self, epoch: int) -> None:
        """Drop every entry of a retired key epoch (its key can no longer decrypt anything)."""
        self._until = {k: u for k, u in self._until.items() if k[0] != epoch}
        self._expiry = [(u, k) for k, u in self._until.items()]
        heapq.heapify(self._expiry)


def remember_until(date: datetime, window: timedelta) -> float:
    """The last instant (Unix time) a request with this Date passes `check_date`: Date + window."""
    return (date + window).timestamp()


def http_date(now: datetime) -> str:
    """Format an aware datetime as an IMF-fixdate (RFC 9110 §5.6.7)."""
    return format_datetime(now.astimezone(UTC), usegmt=True)


def check_date(
    date_value: str | bytes | None, *, now: datetime, window: timedelta
) -> datetime:
    """Check a request's `Date` field against the gateway's clock (RFC 9458 §6.5.1).

    Args:
        date_value: the `Date` field value of the decapsulated request, or None if absent.
        now: the gateway's current time (aware datetime).
        window: how far the Date may be from `now`, either way.

    Returns:
        The Date, for `remember_until`.

    Raises:
        DateOutOfWindowError: missing, unparseable, or outside the window.
    """
    if date_value is None:
        raise DateOutOfWindowError
    try:
        text = date_value.decode("ascii") if isinstance(date_value, bytes) else date_value
        when = parsedate_to_datetime(text)
    except (ValueError, TypeError, IndexError, UnicodeDecodeError):
        raise DateOutOfWindowError from None
    if when.tzinfo is None:
        raise DateOutOfWindowError
    if abs(when - now) > window:
        raise DateOutOfWindowError
    return when
