"""relay.resp: the RESP2 command encoder, the strict incremental reply parser, the Redis URL.

Every malformed input has its positive twin (the well-formed neighbour parses).
"""

from __future__ import annotations

import pytest

from hushcc.errors import ConfigError, ProtocolError
from relay.resp import (
    MAX_BULK,
    MAX_LINE,
    OK,
    ErrorReply,
    RedisAddress,
    ReplyParser,
    SimpleString,
    command,
    parse_redis_url,
)


def test_command_is_an_array_of_bulk_strings() -> None:
    assert command(b"SET", b"k", b"") == b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$0\r\n\r\n"
    assert command(b"PING") == b"*1\r\n$4\r\nPING\r\n"


def test_replies_parse_whole_and_byte_by_byte() -> None:
    stream = (b"+OK\r\n$-1\r\n-NOAUTH Authentication required.\r\n:42\r\n:-7\r\n$5\r\na\r\nbc\r\n"
              b"$0\r\n\r\n+\r\n")
    want = [OK, None, ErrorReply("NOAUTH"), 42, -7, b"a\r\nbc", b"", SimpleString(b"")]
    assert ReplyParser().feed(stream) == want
    parser = ReplyParser()
    got = [reply for i in range(len(stream)) for reply in parser.feed(stream[i:i + 1])]
    assert got == want


def test_an_error_reply_keeps_only_its_first_word() -> None:
    (reply,) = ReplyParser().feed(b"-ERR wrong number of arguments for 'set' secret\r\n")
    assert reply == ErrorReply("ERR")


@pytest.mark.parametrize(("bad", "twin"), [
    (b"*1\r\n+OK\r\n", b"+OK\r\n"),  # arrays are never a reply to SET / AUTH / SELECT / PING
    (b"_\r\n", b"$-1\r\n"),  # RESP3 null: the store speaks RESP2 only
    (b"%1\r\n", b":1\r\n"),
    (b":12a\r\n", b":12\r\n"),
    (b":\r\n", b":0\r\n"),
    (b":+1\r\n", b":1\r\n"),
    (b":" + b"9" * 20 + b"\r\n", b":" + b"9" * 18 + b"\r\n"),
    (b"$-2\r\n", b"$-1\r\n"),
    (b"$%d\r\n" % (MAX_BULK + 1) + bytes(MAX_BULK + 1) + b"\r\n",
     b"$%d\r\n" % MAX_BULK + bytes(MAX_BULK) + b"\r\n"),
    (b"$2\r\nabcd\r\n", b"$4\r\nabcd\r\n"),  # a bulk string longer than announced
    (b"+O\nK\r\n", b"+OK\r\n"),  # a bare LF inside a line
    (b"+O\rK\r\n", b"+OK\r\n"),  # a bare CR inside a line
    (b"+" + b"x" * (MAX_LINE + 1) + b"\r\n", b"+" + b"x" * MAX_LINE + b"\r\n"),
])
def test_malformed_replies_fail_and_stay_failed(bad: bytes, twin: bytes) -> None:
    assert len(ReplyParser().feed(twin)) == 1
    parser = ReplyParser()
    with pytest.raises(ProtocolError):
        parser.feed(bad)
    with pytest.raises(ProtocolError):
        parser.feed(b"+OK\r\n")  # a failed stream never resynchronises


def test_an_unterminated_overlong_line_fails_before_its_end_arrives() -> None:
    parser = ReplyParser()
    assert parser.feed(b"+" + b"x" * MAX_LINE) == []  # could still end in CRLF
    with pytest.raises(ProtocolError):
        parser.feed(b"xx")
    partial = ReplyParser()
    assert partial.feed(b"+OK\r") == []  # positive twin: a CR whose LF is still on the way
    assert partial.feed(b"\n") == [OK]


def test_redis_urls() -> None:
    assert parse_redis_url("redis://127.0.0.1:6380/0") == RedisAddress("127.0.0.1", 6380, tls=False)
    address = parse_redis_url("rediss://relay:p%40ss@redis.example/3")
    assert address == RedisAddress("redis.example", 6379, tls=True, db=3, username="relay",
                                   password="p@ss")
    assert address.setup_commands() == [command(b"AUTH", b"relay", b"p@ss"),
                                         command(b"SELECT", b"3")]
    assert parse_redis_url("redis://:pw@h").setup_commands() == [command(b"AUTH", b"pw")]
    assert parse_redis_url("redis://h").setup_commands() == []


@pytest.mark.parametrize("url", [
    "http://h:6379", "redis://", "redis://h:99999", "redis://h/x", "redis://h/0?ssl_cert_reqs=none",
    "redis://h/0#frag", "unix:///tmp/redis.sock",
])
def test_redis_urls_refused(url: str) -> None:
    with pytest.raises(ConfigError):
        parse_redis_url(url)
