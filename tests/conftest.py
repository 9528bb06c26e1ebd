"""Shared test fixtures: the shared vectors folder, hypothesis profiles, and the log-canary guard.

* `shared_vectors` is `../shared/vectors` beside the checkout (or `$HUSHCC_SHARED_VECTORS`);
  tests that need it skip with a clear reason where it is absent.
* Hypothesis runs derandomized in CI (`CI=true`), randomized locally.
* `canaries` lets a test register secret strings; after every test, no captured log record,
  and nothing the test printed, may contain one (SECURITY.md N4/N5).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from hypothesis import HealthCheck, settings

if TYPE_CHECKING:
    from collections.abc import Iterator

settings.register_profile(
    "ci", derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("dev", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("ci" if os.environ.get("CI") else "dev")

REPO_ROOT = Path(__file__).resolve().parent.parent


def shared_vectors_dir() -> Path:
    """Return the shared vectors folder (it may not exist)."""
    override = os.environ.get("HUSHCC_SHARED_VECTORS")
    return Path(override) if override else REPO_ROOT.parent / "shared" / "vectors"


@pytest.fixture(scope="session")
def shared_vectors() -> Path:
    """The `../shared/vectors` folder, or skip: the official vectors are not part of the repo."""
    path = shared_vectors_dir()
    if not path.is_dir():
        pytest.skip(f"shared test vectors not found at {path} (set HUSHCC_SHARED_VECTORS)")
    return path


class CanaryRegistry:
    """Secret strings that must never reach a log record or the test's output."""

    def __init__(self) -> None:
        self.values: list[str] = []

    def add(self, value: str | bytes) -> str | bytes:
        self.values.append(value.decode("latin-1") if isinstance(value, bytes) else value)
        return value


@pytest.fixture
def canaries(
    caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> Iterator[CanaryRegistry]:
    """Register canaries; fail the test if any appears in a log record or in stdout/stderr."""
    registry = CanaryRegistry()
    caplog.set_level(logging.DEBUG)
    yield registry
    out, err = capfd.readouterr()
    texts = [r.getMessage() + repr(r.args) for r in caplog.records] + [out, err]
    for value in registry.values:
        for text in texts:
            assert value not in text, "a registered canary leaked into logs or output"


pytest_plugins = ["tests.redis_server"]
