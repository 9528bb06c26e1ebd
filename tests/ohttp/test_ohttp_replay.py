"""Replay store (RFC 9458 §6.5, G3 at library level), Date window (§6.5.1) and problem shapes."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from ohttp import bhttp, problems
from ohttp.replay import (
    DateOutOfWindowError,
    ReplayError,
    ReplayGuard,
    ReplayLimits,
    ReplayStore,
    ReplayStoreFullError,
    check_date,
    http_date,
    remember_until,
)

NOW = datetime(2026, 11, 23, 20, 0, 0, tzinfo=UTC)
WINDOW = timedelta(seconds=60)


def test_replay_within_window_is_refused_and_fresh_enc_accepted() -> None:
    guard = ReplayGuard(ReplayLimits(window=60, max_entries=10))
    guard.check_and_record(b"enc-1", epoch=1, now=0.0)
    guard.check_and_record(b"enc-2", epoch=1, now=1.0)  # positive twin
    with pytest.raises(ReplayError):
        guard.check_and_record(b"enc-1", epoch=1, now=59.0)
    guard.check_and_record(b"enc-1", epoch=2, now=59.0)  # another key epoch
    with pytest.raises(ReplayError):  # kept 2 x window without a Date: a Date accepted on
        guard.check_and_record(b"enc-1", epoch=1, now=120.0)  # arrival is still acceptable
    guard.check_and_record(b"enc-1", epoch=1, now=120.5)  # no Date can pass any more


def _gateway(guard: ReplayGuard, enc: bytes, date: str, at: datetime) -> None:
    """The gateway's order: Date check, then remember the enc until its Date stops passing."""
    when = check_date(date, now=at, window=WINDOW)
    guard.check_and_record(enc, epoch=1, now=at.timestamp(), until=remember_until(when, WINDOW))


def test_replay_of_a_request_dated_ahead_is_refused_while_its_date_still_passes() -> None:
    # Client clock 50 s ahead: its Date passes at the gateway until +110 s, so the store must
    # remember the enc that long (it used to forget after the 60 s window: replay at +61 s won).
    guard = ReplayGuard(ReplayLimits(window=60, max_entries=10))
    ahead = http_date(NOW + timedelta(seconds=50))
    _gateway(guard, b"enc-1", ahead, NOW)
    for later in (61, 110):
        with pytest.raises(ReplayError):
            _gateway(guard, b"enc-1", ahead, NOW + timedelta(seconds=later))
    with pytest.raises(DateOutOfWindowError):  # from +111 s the Date check refuses it
        _gateway(guard, b"enc-1", ahead, NOW + timedelta(seconds=111))


def test_fresh_enc_dated_ahead_is_accepted_at_the_same_instants() -> None:
    guard = ReplayGuard(ReplayLimits(window=60, max_entries=10))
    ahead = http_date(NOW + timedelta(seconds=50))
    _gateway(guard, b"enc-1", ahead, NOW)
    _gateway(guard, b"enc-2", ahead, NOW + timedelta(seconds=61))
    _gateway(guard, b"enc-3", ahead, NOW + timedelta(seconds=110))
    assert len(guard) == 3


def test_entry_is_forgotten_right_after_its_deadline() -> None:
    guard = ReplayGuard(ReplayLimits(window=60, max_entries=1))
    guard.check_and_record(b"a", epoch=0, now=0.0, until=110.0)
    with pytest.raises(ReplayStoreFullError):  # live through its deadline, inclusive
        guard.check_and_record(b"b", epoch=0, now=110.0)
    guard.check_and_record(b"b", epoch=0, now=110.5)  # then it makes room
    assert len(guard) == 1


def test_in_memory_guard_is_a_replay_store() -> None:
    store: ReplayStore = ReplayGuard(ReplayLimits(window=60, max_entries=10))
    asyncio.run(store.remember(b"e", epoch=1, now=0.0, until=10.0))
    asyncio.run(store.remember(b"e", epoch=2, now=0.0, until=10.0))  # positive twin
    with pytest.raises(ReplayError):
        asyncio.run(store.remember(b"e", epoch=1, now=10.0, until=20.0))
    asyncio.run(store.remember(b"e", epoch=1, now=10.5, until=20.0))


def test_store_is_bounded_and_fails_closed() -> None:
    guard = ReplayGuard(ReplayLimits(window=10, max_entries=3))
    for i in range(3):
        guard.check_and_record(bytes([i]), epoch=0, now=float(i))
    with pytest.raises(ReplayStoreFullError) as info:
        guard.check_and_record(b"new", epoch=0, now=3.0)
    assert info.value.status_hint == 503
    with pytest.raises(ReplayError):  # live entries were not evicted
        guard.check_and_record(b"\x00", epoch=0, now=3.0)
    guard.check_and_record(b"new", epoch=0, now=20.5)  # oldest expired: room again
    assert len(guard) <= 3


def test_forget_epoch() -> None:
    guard = ReplayGuard()
    guard.check_and_record(b"a", epoch=1, now=0)
    guard.check_and_record(b"b", epoch=2, now=0)
    guard.forget_epoch(1)
    assert len(guard) == 1
    with pytest.raises(ReplayError):
        guard.check_and_record(b"b", epoch=2, now=1)
    guard.check_and_record(b"a", epoch=1, now=1)


class ReplayMachine(RuleBasedStateMachine):
    """Model check: the guard refuses exactly the encs seen in the last 2 x `window` seconds."""

    def __init__(self) -> None:
        super().__init__()
        self.guard = ReplayGuard(ReplayLimits(window=5, max_entries=1000))
        self.now = 0.0
        self.seen: dict[bytes, float] = {}

    @rule(dt=st.floats(0, 3))
    def tick(self, dt: float) -> None:
        self.now += dt

    @rule(enc=st.sampled_from([b"a", b"b", b"c", b"d"]))
    def submit(self, enc: bytes) -> None:
        fresh = enc not in self.seen or self.seen[enc] + 10 < self.now
        if fresh:
            self.guard.check_and_record(enc, epoch=0, now=self.now)
            self.seen[enc] = self.now
        else:
            with pytest.raises(ReplayError):
                self.guard.check_and_record(enc, epoch=0, now=self.now)

    @invariant()
    def bounded(self) -> None:
        assert len(self.guard) <= 4


TestReplayMachine = ReplayMachine.TestCase
TestReplayMachine.settings = settings(max_examples=30, stateful_step_count=30)


@pytest.mark.parametrize("offset", [-60, -1, 0, 1, 60])
def test_date_inside_window(offset: int) -> None:
    check_date(http_date(NOW + timedelta(seconds=offset)), now=NOW, window=WINDOW)


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(http_date(NOW - timedelta(seconds=61)), id="past-window+1s"),
        pytest.param(http_date(NOW + timedelta(seconds=61)), id="future-window+1s"),
        pytest.param(None, id="missing"),
        pytest.param("yesterday", id="garbage"),
        pytest.param("", id="empty"),
        pytest.param(b"\xff\xfe", id="not-ascii"),
        pytest.param("Mon, 23 Nov 2026 20:00:00", id="no-zone"),
    ],
)
def test_date_outside_window(value: str | bytes | None) -> None:
    with pytest.raises(DateOutOfWindowError):
        check_date(value, now=NOW, window=WINDOW)


def test_date_problem_response_shape() -> None:
    response = problems.DATE.to_response(NOW)
    assert response.status == 400
    headers = dict(response.headers)
    assert headers[b"content-type"] == b"application/problem+json"
    assert headers[b"cache-control"] == b"no-store"
    assert headers[b"date"] == b"Mon, 23 Nov 2026 20:00:00 GMT"
    body = json.loads(response.content)
    assert body["type"] == "https://iana.org/assignments/http-problem-types#date"
    assert set(body) == {"type", "title"}
    # It travels inside an Encapsulated Response as binary HTTP.
    assert bhttp.decode_response(bhttp.encode_response(response)) == response


def test_ohttp_key_problem_shape() -> None:
    body = json.loads(problems.OHTTP_KEY.body())
    assert body == {
        "type": "https://iana.org/assignments/http-problem-types#ohttp-key",
        "title": "key identifier unknown",
    }
    assert problems.OHTTP_KEY.status == 422  # the node and the client agree on it (G6, K5)
