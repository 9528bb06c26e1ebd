r"""The few RESP2 frames the Redis spent store speaks: commands out, strict replies in; pure.

Redis serialisation protocol, version 2 (https://redis.io/docs/latest/develop/reference/protocol-spec/):
a command is an array of bulk strings; a reply here is a simple string (`+OK`), an error
(`-ERR ...`), an integer (`:1`) or a bulk string (`$3\r\nabc`, `$-1` the null reply). The
spent store sends `SET key 1 NX EXAT t` (`+OK` or null), and at connect `AUTH` / `SELECT` / `PING`.

Invariants:
* The parser is incremental and strict: any other type byte (arrays, RESP3 types), a line
  longer than `MAX_LINE`, a CR or LF inside a line, a bulk string longer than `MAX_BULK` or not
  followed by CRLF, an integer that is not `-?[0-9]+` -> `ProtocolError`, and the parser stays
  failed (the connection must be dropped: replies are matched to commands only by order).
* An error reply keeps only its first word (`ERR`, `NOAUTH`, ...), never the rest of the line.
* `parse_redis_url` accepts `redis://` / `rediss://` with a host, an optional port, user,
  password and database number, and nothing else (no query options): `ConfigError` otherwise.
"""

from __future__ import annotations

import re
import urllib.parse
from dataclasses import dataclass

from hushcc.errors import ConfigError, ProtocolError

MAX_LINE = 512  # bytes of a simple string, error or integer line (without CRLF)
MAX_BULK = 4096  # bytes of a bulk string reply (the store expects none but the null one)
DEFAULT_PORT = 6379
INTEGER = re.compile(rb"-?[0-9]{1,19}")


@dataclass(frozen=True, slots=True)
class ErrorReply:
    """A `-` reply: its first word only (the error class, e.g. `ERR`, `NOAUTH`, `WRONGTYPE`)."""

    kind: str


@dataclass(frozen=True, slots=True)
class SimpleString:
    """A `+` reply, e.g. `OK` or `PONG`."""

    value: bytes


Reply = SimpleString | ErrorReply | int | bytes | None  # bytes: a bulk string; None: null bulk
OK = SimpleString(b"OK")


def command(*args: bytes) -> bytes:
    """One command as a RESP array of bulk strings."""
    return b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args)


class ReplyParser:
    """Incremental reply parser: `feed` bytes as they arrive, get the complete replies."""

    def __init__(self) -> None:
        """Start empty."""
        self._buffer = bytearray()
        self._failed = False

    def feed(self, data: bytes) -> list[Reply]:
        """Append `data`; return every reply it completes, in order.

        Raises:
            ProtocolError: malformed input (and every later call, the stream is unusable).
        """
        if self._failed:
            raise ProtocolError("RESP stream already failed")
        self._buffer += data
        replies: list[Reply] = []
        try:
            while (parsed := self._one()) is not None:
                reply, used = parsed
                del self._buffer[:used]
                replies.append(reply)
        except ProtocolError:
            self._failed = True
            raise
        return replies

    def _line(self, start: int) -> int | None:
        """The index of the CRLF ending the line at `start`, None if it has not arrived yet."""
        end = self._buffer.find(b"\r\n", start, start + MAX_LINE + 2)
        if end < 0:
            tail = self._buffer[start:start + MAX_LINE + 2]
            if len(tail) >= MAX_LINE + 2 or b"\n" in tail or b"\r" in tail[:-1]:
                raise ProtocolError("RESP line too long or broken")
            return None
        if b"\n" in self._buffer[start:end] or b"\r" in self._buffer[start:end]:
            raise ProtocolError("RESP line holds a bare CR or LF")
        return end

    def _one(self) -> tuple[Reply, int] | None:
        """The first complete reply in the buffer and its length, or None."""
        if not self._buffer:
            return None
        end = self._line(1)
        if end is None:
            return None
        kind, line = self._buffer[0], bytes(self._buffer[1:end])
        if kind == ord("+"):
            return SimpleString(line), end + 2
        if kind == ord("-"):
            return ErrorReply(line.split(b" ", 1)[0].decode("ascii", "replace")), end + 2
        if kind not in b":$":
            raise ProtocolError("RESP reply type not expected")
        if INTEGER.fullmatch(line) is None:
            raise ProtocolError("RESP integer or length malformed")
        if kind == ord(":"):
            return int(line), end + 2
        return self._bulk(int(line), end + 2)

    def _bulk(self, length: int, start: int) -> tuple[Reply, int] | None:
        """The bulk string of `length` bytes at `start` (after its `$` line), or None."""
        if length == -1:
            return None, start
        if not 0 <= length <= MAX_BULK:
            raise ProtocolError("RESP bulk length out of range")
        stop = start + length
        if len(self._buffer) < stop + 2:
            return None
        if self._buffer[stop:stop + 2] != b"\r\n":
            raise ProtocolError("RESP bulk string not terminated")
        return bytes(self._buffer[start:stop]), stop + 2


@dataclass(frozen=True, slots=True)
class RedisAddress:
    """Where the store's Redis is and how to log in (from a `redis://` or `rediss://` URL)."""

    host: str
    port: int
    tls: bool
    db: int = 0
    username: str | None = None
    password: str | None = None

    def setup_commands(self) -> list[bytes]:
        """The commands that start a connection: AUTH (if any), SELECT (if not db 0)."""
        commands = []
        if self.password is not None:
            user = [self.username.encode()] if self.username else []
            commands.append(command(b"AUTH", *user, self.password.encode()))
        if self.db:
            commands.append(command(b"SELECT", str(self.db).encode()))
        return commands


def parse_redis_url(url: str) -> RedisAddress:
    """`redis[s]://[[user]:password@]host[:port][/db]` -> RedisAddress.

    Raises:
        ConfigError: another scheme, no host, a bad port or database, query or fragment parts.
    """
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in {"redis", "rediss"} or not parts.hostname:
        raise ConfigError("not a redis:// or rediss:// URL with a host")
    if parts.query or parts.fragment:
        raise ConfigError("redis URL options are not supported")
    try:
        port = parts.port or DEFAULT_PORT
    except ValueError:
        raise ConfigError("redis URL has an invalid port") from None
    db_text = parts.path.lstrip("/")
    if db_text and not (db_text.isascii() and db_text.isdigit() and len(db_text) <= 5):
        raise ConfigError("redis URL path must be a database number")
    unquote = urllib.parse.unquote
    return RedisAddress(
        host=parts.hostname, port=port, tls=parts.scheme == "rediss",
        db=int(db_text) if db_text else 0,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password is not None else None)
