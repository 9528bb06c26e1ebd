"""The Redis test server itself: it starts, answers, and is really gone once killed."""

from __future__ import annotations

import pytest
import redis

from tests.redis_server import RedisServer


def test_redis_server_answers_then_is_gone_once_killed(redis_server: RedisServer) -> None:
    client = redis.Redis.from_url(redis_server.url, socket_timeout=2)
    assert client.set("k", b"v")
    assert client.get("k") == b"v"
    redis_server.kill()
    with pytest.raises(redis.ConnectionError):
        client.get("k")
