"""Replay store (RFC 9458 §6.5, G3 at library level), Date window (§6.5.1) and problem shapes."""

from __future__ import annotations

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
    ReplayStoreFullError,
    check_date,
    http_date,
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
    guard.check_and_record(b"enc-1", epoch=1, now=60.5)  # expired: the key epoch decides now


def test_store_is_bounded_and_fails_closed() -> None:
    guard = ReplayGuard(ReplayLimits(window=10, max_entries=3))
    for i in range(3):
        guard.check_and_record(bytes([i]), epoch=0, now=float(i))
    with pytest.raises(ReplayStoreFullError) as info:
        guard.check_and_record(b"new", epoch=0, now=3.0)
    assert info.value.status_hint == 503
    with pytest.raises(ReplayError):  # live entries were not evicted
        guard.check_and_record(b"\x00", epoch=0, now=3.0)
    guard.check_and_record(b"new", epoch=0, now=10.5)  # oldest expired: room again
    assert len(guard) <= 3


def test_forget_epoch() -> None:
    guard = ReplayGuard()
    guard.check_and_record(b"a", epoch=1, now=0)
    guard.check_and_record(b"b", epoch=2, now=0)
    guard.forget_epoch(1)
    assert len(guard) == 1
    with pytest.raises(ReplayError):
        guard.check_and_record(b"b", epoch=2, now=1)


class ReplayMachine(RuleBasedStateMachine):
    """Model check: the guard refuses exactly the encs seen in the last `window` seconds."""

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
        fresh = enc not in self.seen or self.seen[enc] <= self.now - 5
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
    assert problems.OHTTP_KEY.status == 400
