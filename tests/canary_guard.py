"""The session-wide canary guard (SECURITY.md N4/N5): no registered secret reaches logs or output.

Every test gets the `canaries` registry (autouse). A test registers the secrets it handles
(`canaries.add(key)`); when the test ends, the guard fails it if a canary appears in:

* any log record of the test's setup, call or teardown, read the way a handler would write it:
  the message, its arguments' repr, and the formatted traceback (`exc_info`) and stack
  (`stack_info`) a handler appends;
* anything the test wrote to stdout/stderr, at the file-descriptor level (so subprocesses count
  too), including what the test itself read back through `capsys`/`capfd`.

Tests that print legitimately keep working: the guard reuses the capture fixture the test asked
for (or `capfd`), sees every `readouterr()` the test makes, and hands what it read at the end
back to pytest's own capture, so a failing test's report still shows its output.
"""

from __future__ import annotations

import logging
import sys
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from collections.abc import Iterator

    from _pytest.capture import CaptureResult

# The capture fixtures a test may request; only one of them can be active in a test.
CAPTURE_FIXTURES = ("capsys", "capsysbinary", "capfd", "capfdbinary")
_FORMATTER = logging.Formatter("%(message)s")


class CanaryRegistry:
    """Secret strings that must never reach a log record or the test's output."""

    def __init__(self) -> None:
        self.values: list[str] = []

    def add(self, value: str | bytes) -> str | bytes:
        """Register `value` (bytes are compared as latin-1 text) and return it unchanged."""
        self.values.append(value.decode("latin-1") if isinstance(value, bytes) else value)
        return value


def record_text(record: logging.LogRecord) -> str:
    """Everything a log handler could write for `record`: message, args, traceback, stack."""
    parts = [repr(record.args), str(record.msg)]
    try:
        parts.append(_FORMATTER.format(record))  # message + exc_text + stack_info
    except Exception as exc:  # a broken record must not hide the others
        parts.append(f"unformattable record: {exc!r}")
    if record.exc_info and record.exc_info[1] is not None:
        parts.append(repr(record.exc_info[1].args))
    return "\n".join(parts)


def _as_text(value: str | bytes) -> str:
    return value.decode("latin-1") if isinstance(value, bytes) else value


class _Tee:
    """Wraps a capture fixture's `readouterr` so the guard sees what the test read."""

    def __init__(self, capture: pytest.CaptureFixture[str]) -> None:
        self.capture = capture
        self.seen: list[str] = []
        self._read = capture.readouterr

    def readouterr(self) -> CaptureResult[str]:
        result = self._read()
        self.seen.extend((_as_text(result.out), _as_text(result.err)))
        return result

    def finish(self) -> None:
        """Read what is left, and give it back to pytest's capture for the report."""
        rest = self._read()
        out, err = _as_text(rest.out), _as_text(rest.err)
        self.seen.extend((out, err))
        sys.stdout.write(out)
        sys.stderr.write(err)


@pytest.fixture(autouse=True)
def canaries(
    request: pytest.FixtureRequest, caplog: pytest.LogCaptureFixture
) -> Iterator[CanaryRegistry]:
    """Register canaries; fail the test if any appears in a log record or in its output."""
    registry = CanaryRegistry()
    caplog.set_level(logging.DEBUG)
    name = next((n for n in CAPTURE_FIXTURES if n in request.fixturenames), "capfd")
    tee = _Tee(request.getfixturevalue(name))
    tee.capture.readouterr = tee.readouterr  # type: ignore[method-assign]
    yield registry
    tee.finish()
    if not registry.values:
        return
    records = [*caplog.get_records("setup"), *caplog.get_records("call"), *caplog.records]
    texts = [record_text(r) for r in records] + tee.seen
    for value in registry.values:
        for text in texts:
            if value in text:
                pytest.fail("a registered canary leaked into logs or output", pytrace=False)
