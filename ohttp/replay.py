"""Gateway replay defences (RFC 9458 §6.5): a bounded store of seen `enc` values, Date window.

Pure: time is a parameter (`now`, seconds on any monotonic-enough clock for the store; an aware
`datetime` for the Date check).

Invariants:
* An `enc` accepted once is refused for `window` seconds within its key epoch; entries are
  forgotten only after that, so a replay inside the window is always caught.
* The store never grows past `max_entries`: when full of live entries it fails closed
  (`ReplayStoreFullError`) rather than evicting a live entry, which would reopen the window.
* The Date check follows §6.5.1: a request whose `Date` is missing, malformed or outside
  [now - window, now + window] is refused with the `date` problem (see `ohttp.problems`).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime, parsedate_to_datetime

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


@dataclass(frozen=True, slots=True)
class ReplayLimits:
    """How long an `enc` is remembered and how many may be remembered at once."""

    window: float = 60.0
    max_entries: int = 100_000


class ReplayGuard:
    """Remembers `enc` values per key epoch for `window` seconds; bounded; time injected."""

    def __init__(self, limits: ReplayLimits | None = None) -> None:
        """Create an empty store."""
        self.limits = limits or ReplayLimits()
        self._seen: OrderedDict[tuple[int, bytes], float] = OrderedDict()

    def __len__(self) -> int:
        """Number of remembered entries (live or not yet expired)."""
        return len(self._seen)

    def _expire(self, now: float) -> None:
        horizon = now - self.limits.window
        while self._seen:
            key, first_seen = next(iter(self._seen.items()))
            if first_seen > horizon:
                return
            del self._seen[key]

    def check_and_record(self, enc: bytes, *, epoch: int, now: float) -> None:
        """Refuse a replay of `enc` in `epoch`; otherwise remember it until `now + window`.

        Args:
            enc: the encapsulated KEM output of the request (public).
            epoch: the key epoch (e.g. the key id or a rotation counter).
            now: current time in seconds; must not go backwards.

        Raises:
            ReplayError: `enc` was seen within the window in this epoch.
            ReplayStoreFullError: too many live entries to remember another one.
        """
        self._expire(now)
        key = (epoch, bytes(enc))
        if key in self._seen:
            raise ReplayError
        if len(self._seen) >= self.limits.max_entries:
            raise ReplayStoreFullError
        self._seen[key] = now

    def forget_epoch(self, epoch: int) -> None:
        """Drop every entry of a retired key epoch (its key can no longer decrypt anything)."""
        for key in [k for k in self._seen if k[0] == epoch]:
            del self._seen[key]


def http_date(now: datetime) -> str:
    """Format an aware datetime as an IMF-fixdate (RFC 9110 §5.6.7)."""
    return format_datetime(now.astimezone(UTC), usegmt=True)


def check_date(date_value: str | bytes | None, *, now: datetime, window: timedelta) -> None:
    """Check a request's `Date` field against the gateway's clock (RFC 9458 §6.5.1).

    Args:
        date_value: the `Date` field value of the decapsulated request, or None if absent.
        now: the gateway's current time (aware datetime).
        window: how far the Date may be from `now`, either way.

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
