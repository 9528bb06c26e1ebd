"""The log server's configuration: typed limits and the TOML file's schema (pure).

Invariants:
* A `ServerConfig` exists only with every value in range, so no configuration can make the
  server spin (a batch of at most 0 entries, a re-sign interval of 0) or run without limits.
* `parse_log_config` takes the decoded TOML table and checks every key: an unknown key is an
  error naming it (a typo is never ignored), every value must have its type (a boolean is not
  an integer, a string is not a number) and be in range; messages name the key, never a value
  that could be a secret (key values are paths or verifier strings, still not echoed).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from hushcc.errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import Mapping

MAX_BATCH_LIMIT = 65536
MIN_RESIGN_INTERVAL = 1.0  # seconds; each re-sign is one fsync and one signed checkpoint
MAX_RESIGN_INTERVAL = 30 * 86400.0
MIN_RECEIPT_TIMEOUT = 0.1
MAX_RECEIPT_TIMEOUT = 3600.0
MAX_CONNECTIONS_LIMIT = 65536


def _check_range(name: str, value: float, low: float, high: float) -> None:
    if not (math.isfinite(value) and low <= value <= high):
        raise ConfigError(f"log config {name} must be between {low:g} and {high:g}")


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """Server limits and policy (every value checked at construction)."""

    max_batch: int = 4096  # entries per durable batch (one fsync, one checkpoint)
    resign_interval: float = 300.0  # seconds; re-sign a tree whose checkpoint is this old
    receipt_timeout: float = 10.0  # seconds to receive a request's headers and body, absolute
    max_connections: int = 1024  # open connections; more are closed when accepted

    def __post_init__(self) -> None:
        """Refuse any value out of range.

        Raises:
            ConfigError: a value is out of range (naming it).
        """
        _check_range("max_batch", self.max_batch, 1, MAX_BATCH_LIMIT)
        _check_range("resign_interval", self.resign_interval, MIN_RESIGN_INTERVAL,
                     MAX_RESIGN_INTERVAL)
        _check_range("receipt_timeout", self.receipt_timeout, MIN_RECEIPT_TIMEOUT,
                     MAX_RECEIPT_TIMEOUT)
        _check_range("max_connections", self.max_connections, 1, MAX_CONNECTIONS_LIMIT)


@dataclass(frozen=True, slots=True)
class LogConfig:
    """The `hushcc log serve --config` file: key locations and server limits."""

    log_key: str | None = None
    release_key: str | None = None
    server: ServerConfig = field(default_factory=ServerConfig)


_INTEGERS = ("max_batch", "max_connections")
_NUMBERS = ("resign_interval", "receipt_timeout")
_STRINGS = ("log_key", "release_key")
KNOWN_KEYS = (*_STRINGS, *_INTEGERS, *_NUMBERS)


def parse_log_config(table: Mapping[str, object]) -> LogConfig:
    """Validate a decoded TOML table against the log config schema.

    Raises:
        ConfigError: an unknown key, a value of the wrong type, or a value out of range.
    """
    unknown = sorted(set(table) - set(KNOWN_KEYS))
    if unknown:
        raise ConfigError(f"log config has unknown key(s) {', '.join(unknown)} "
                          f"(known: {', '.join(KNOWN_KEYS)})")
    limits: dict[str, int | float] = {
        name: _integer(name, table[name]) for name in _INTEGERS if name in table}
    limits |= {name: _seconds(name, table[name]) for name in _NUMBERS if name in table}
    keys = {name: _string(name, table[name]) for name in _STRINGS if name in table}
    return LogConfig(keys.get("log_key"), keys.get("release_key"),
                     ServerConfig(**limits))  # type: ignore[arg-type]


def _integer(name: str, value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ConfigError(f"log config {name} must be an integer")
    return value


def _seconds(name: str, value: object) -> float:
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise ConfigError(f"log config {name} must be a number of seconds")
    return float(value)


def _string(name: str, value: object) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"log config {name} must be a non-empty string")
    return value
