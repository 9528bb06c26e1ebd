"""Argument-parser helpers every component's command group uses.

Part of the leaf package: it imports nothing of the project outside `hushcc`.
`OneLineErrorParser` makes a usage error one line and exit code 2; `add_group` adds a
`hushcc NAME ...` group that shows its own help when named alone; the argument types
(`port_number`, `http_url`, `redis_url`, `bounded_int`, `bounded_float`, `short_text`) raise
`ConfigError`, which the one `hushcc` command (`app.cli`) prints as `hushcc: error: ...` with
exit status 1.
Messages quote at most the first 50 characters of a bad value.
"""

from __future__ import annotations

import argparse
import math
import urllib.parse
from typing import TYPE_CHECKING, Any, NoReturn

from hushcc.errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import Callable

MAX_PORT = 65535


class OneLineErrorParser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line and exit code 2."""

    def error(self, message: str) -> NoReturn:
        """Print `PROG: error: MESSAGE (see --help)` and exit 2."""
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")

    def _get_value(self, action: argparse.Action, arg_string: str) -> Any:  # noqa: ANN401
        """Convert one value with the action's type; a `ConfigError` names the option."""
        try:
            return super()._get_value(action, arg_string)
        except ConfigError as exc:
            name = action.option_strings[0] if action.option_strings else action.metavar
            raise ConfigError(f"{name or action.dest}: {exc}") from None


def add_group(
    subparsers: argparse._SubParsersAction[OneLineErrorParser], name: str, help_text: str
) -> argparse._SubParsersAction[OneLineErrorParser]:
    """Add a command group (`hushcc NAME ...`) and return its own subparsers.

    Components call this from their `register` so every group shows its help when named alone.
    """
    group_parser = subparsers.add_parser(name, help=help_text, description=help_text)
    group_parser.set_defaults(group_parser=group_parser)
    return group_parser.add_subparsers(
        title="subcommands", metavar="SUBCOMMAND", parser_class=OneLineErrorParser
    )


# Argument types. Each raises `ConfigError` (not argparse's own errors), so a bad value is the
# one-line `hushcc: error: ...` with exit status 1 that every other bad input gets.


def port_number(text: str) -> int:
    """An argparse type: a TCP port, 0 (pick a free one) to 65535."""
    try:
        value = int(text, 10)
    except ValueError:
        raise ConfigError(f"not a port number: {text[:50]!r}") from None
    if not 0 <= value <= MAX_PORT:
        raise ConfigError(f"port out of range 0-{MAX_PORT}: {value}")
    return value


def http_url(text: str) -> str:
    """An argparse type: an absolute `http://` or `https://` URL with a host, no trailing `/`."""
    parts = urllib.parse.urlsplit(text)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise ConfigError(f"not an http(s) URL with a host: {text[:200]!r}")
    try:
        _ = parts.port
    except ValueError:
        raise ConfigError(f"URL has an invalid port: {text[:200]!r}") from None
    return text.rstrip("/")


def redis_url(text: str) -> str:
    """An argparse type: a `redis://` or `rediss://` URL with a host, a valid port and db number.

    Checked whole up front, so a malformed URL is one line at start-up, not a traceback later.
    """
    parts = urllib.parse.urlsplit(text)
    if parts.scheme not in {"redis", "rediss"} or not parts.hostname:
        raise ConfigError(f"not a redis:// or rediss:// URL with a host: {text[:50]!r}")
    try:
        _ = parts.port
    except ValueError:
        raise ConfigError(f"URL has an invalid port: {text[:50]!r}") from None
    db = parts.path.lstrip("/")
    if db and not (db.isascii() and db.isdigit()):
        raise ConfigError(f"URL path must be a database number: {text[:50]!r}")
    return text


def bounded_int(low: int, high: int) -> Callable[[str], int]:
    """An argparse type factory: a decimal integer in [low, high]."""

    def parse(text: str) -> int:
        try:
            value = int(text, 10)
        except ValueError:
            raise ConfigError(f"not an integer: {text[:50]!r}") from None
        if not low <= value <= high:
            raise ConfigError(f"{value} is out of range {low}-{high}")
        return value

    return parse


def short_text(max_length: int) -> Callable[[str], str]:
    """An argparse type factory: printable text of 1 to `max_length` characters."""

    def parse(text: str) -> str:
        if not 0 < len(text) <= max_length:
            raise ConfigError(f"must be 1-{max_length} characters, not {len(text)}")
        if not text.isprintable():
            raise ConfigError("must be printable text (no control characters)")
        return text

    return parse


def bounded_float(low: float, high: float) -> Callable[[str], float]:
    """An argparse type factory: a finite float in [low, high] (never nan or inf)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise ConfigError(f"not a number: {text[:50]!r}") from None
        if not math.isfinite(value) or not low <= value <= high:
            raise ConfigError(f"{text[:50]} is not a finite number in [{low:g}, {high:g}]")
        return value

    return parse
