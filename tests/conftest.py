"""Shared test fixtures: the shared vectors folder, hypothesis profiles, and the log-canary guard.

* `shared_vectors` is `../shared/vectors` beside the checkout (or `$HUSHCC_SHARED_VECTORS`);
  tests that need it skip with a clear reason where it is absent, and fail under CI (`CI=true`),
  so a CI that lost its vectors cannot pass silently.
* Hypothesis runs derandomized in CI, randomized locally.
* `canaries` (tests/canary_guard.py, autouse in every test) lets a test register secret strings;
  no log record (tracebacks included) and nothing the test printed may contain one (SECURITY.md
  N4/N5).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci", derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("dev", deadline=None, suppress_health_check=[HealthCheck.too_slow])


def in_ci() -> bool:
    """True under CI (`CI` set, not empty/0/false/no): there nothing may skip silently."""
    return os.environ.get("CI", "").strip().lower() not in {"", "0", "false", "no"}


settings.load_profile("ci" if in_ci() else "dev")

REPO_ROOT = Path(__file__).resolve().parent.parent


def shared_vectors_dir() -> Path:
    """Return the shared vectors folder (it may not exist)."""
    override = os.environ.get("HUSHCC_SHARED_VECTORS")
    return Path(override) if override else REPO_ROOT.parent / "shared" / "vectors"


@pytest.fixture(scope="session")
def shared_vectors() -> Path:
    """The `../shared/vectors` folder; skip where absent, fail under CI (not in the repo)."""
    path = shared_vectors_dir()
    if not path.is_dir():
        message = f"shared test vectors not found at {path} (set HUSHCC_SHARED_VECTORS)"
        if in_ci():
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    return path


pytest_plugins = ["pytester", "tests.canary_guard", "tests.redis_server"]
