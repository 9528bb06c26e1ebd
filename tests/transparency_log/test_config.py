"""The log server's config schema: every key typed and ranged, unknown keys named (issue 11.1)."""

from __future__ import annotations

import pytest

from hushcc.errors import ConfigError
from transparency_log.config import KNOWN_KEYS, LogConfig, ServerConfig, parse_log_config


@pytest.mark.parametrize(("table", "message"), [
    ({"max_batch": 0}, "max_batch must be between 1"),
    ({"max_batch": -5}, "max_batch must be between 1"),
    ({"max_batch": 10**9}, "max_batch must be between 1"),
    ({"max_batch": 1.5}, "max_batch must be an integer"),
    ({"max_batch": True}, "max_batch must be an integer"),
    ({"max_batch": "8"}, "max_batch must be an integer"),
    ({"resign_interval": 0}, "resign_interval must be between 1"),
    ({"resign_interval": -1.0}, "resign_interval must be between 1"),
    ({"resign_interval": 0.001}, "resign_interval must be between 1"),
    ({"resign_interval": float("nan")}, "resign_interval must be between 1"),
    ({"resign_interval": float("inf")}, "resign_interval must be between 1"),
    ({"resign_interval": "300"}, "resign_interval must be a number"),
    ({"receipt_timeout": 0}, "receipt_timeout must be between"),
    ({"receipt_timeout": False}, "receipt_timeout must be a number"),
    ({"max_connections": 0}, "max_connections must be between 1"),
    ({"log_key": ""}, "log_key must be a non-empty string"),
    ({"release_key": 7}, "release_key must be a non-empty string"),
    ({"max_btach": 8}, "unknown key(s) max_btach"),
    ({"zeta": 1, "alpha": 2, "max_batch": 8}, "unknown key(s) alpha, zeta"),
])
def test_bad_log_config_values_are_refused_naming_the_key(
        table: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_log_config(table)


def test_good_log_config_is_accepted_with_every_key() -> None:
    """Positive twin: every known key at a sensible value, integers accepted for seconds."""
    table: dict[str, object] = {"log_key": "log.key", "release_key": "rel.pub", "max_batch": 1,
                                "resign_interval": 1, "receipt_timeout": 2.5,
                                "max_connections": 600}
    assert set(table) == set(KNOWN_KEYS)
    assert parse_log_config(table) == LogConfig(
        "log.key", "rel.pub", ServerConfig(max_batch=1, resign_interval=1.0, receipt_timeout=2.5,
                                           max_connections=600))
    assert parse_log_config({}) == LogConfig()


def test_server_config_refuses_a_spinning_batcher_or_resigner() -> None:
    with pytest.raises(ConfigError):
        ServerConfig(max_batch=0)
    with pytest.raises(ConfigError):
        ServerConfig(resign_interval=0.0)
    assert ServerConfig(max_batch=1, resign_interval=1.0).max_batch == 1
