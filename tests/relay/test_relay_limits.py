"""Relay limits on loopback, bounded in count and time: R2 (Slowloris: absolute receipt deadline),
R3 (overload: fast 503 + Retry-After, memory flat), R6 (a rate-limited-then-admitted request is
forwarded exactly like any other), and T5 across two relay processes sharing one Redis, which
fail closed (503) when Redis dies."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import aiohttp
import pytest

from ohttp.encapsulation import decapsulate_response, encapsulate_request
from tests.relay.relay_helpers import (
    NODE_ID,
    authorization,
    make_gateway_key,
    make_issuer,
    mint,
    records,
    start_relay,
    start_stub,
)

if TYPE_CHECKING:
    from app.services import ServiceProcess
    from tests.redis_server import RedisServer

OHTTP = f"/v1/nodes/{NODE_ID}/ohttp"
DEADLINE = 2.0
TRICKLERS = 300  # slow connections at once (SECURITY.md R2 asks for "hundreds")


def _addr(service: ServiceProcess) -> tuple[str, int]:
    parts = urlsplit(service.url)
    assert parts.hostname is not None
    assert parts.port is not None
    return parts.hostname, parts.port


def _rss_kib(service: ServiceProcess) -> int:
    for line in Path(f"/proc/{service.process.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


async def _trickle(host: str, port: int, payload: bytes, interval: float,
                   limit: float) -> float:
    """Send `payload` one byte per `interval`; return the seconds until the relay cut us off."""
    reader, writer = await asyncio.open_connection(host, port)
    started = time.monotonic()
    try:
        for i in range(len(payload)):
            if time.monotonic() - started > limit:
                return float("inf")
            writer.write(payload[i:i + 1])
            await writer.drain()
            try:
                if await asyncio.wait_for(reader.read(1024), interval) == b"":
                    return time.monotonic() - started
            except TimeoutError:
                continue
        return float("inf")
    except (ConnectionError, OSError):
        return time.monotonic() - started
    finally:
        writer.close()


@pytest.fixture
def slow_relay(tmp_path: Path):
    issuer = make_issuer(tmp_path)
    key, key_path = make_gateway_key(tmp_path)
    stub = start_stub(tmp_path, key_path)
    relay = start_relay(tmp_path, issuer, stub.url,
                        config=f"[limits]\nreceipt_deadline = {DEADLINE}\n")
    try:
        yield issuer, key, relay
    finally:
        assert [relay.stop(), stub.stop()] == [0, 0]


def test_slow_clients_are_cut_at_the_absolute_deadline_while_others_are_served_r2(
        slow_relay) -> None:
    issuer, key, relay = slow_relay
    host, port = _addr(relay)
    headers_only = (f"POST {OHTTP} HTTP/1.1\r\nHost: relay\r\nContent-Type: message/ohttp-req\r\n"
                    "X-Padding: " + "a" * 200 + "\r\n\r\n").encode()
    slow_body = [(f"POST {OHTTP} HTTP/1.1\r\nHost: relay\r\nContent-Type: message/ohttp-req\r\n"
                  f"Authorization: {authorization(mint(issuer))}\r\nContent-Length: 200\r\n\r\n")
                 .encode() for _ in range(20)]
    body, ctx = encapsulate_request(key.config, b"legit")

    async def run() -> tuple[list[float], list[float], float]:
        async def burst(payload: bytes) -> float:
            # Headers and the request line arrive whole (the body trickles) or byte by byte.
            return await _trickle(host, port, payload, 0.5, limit=4 * DEADLINE + 10)

        header_tasks = [asyncio.create_task(burst(headers_only)) for _ in range(TRICKLERS)]
        body_tasks = []
        for payload in slow_body:  # complete headers, then one body byte per 0.5 s
            head, body_start = payload, b"x" * 200
            body_tasks.append(asyncio.create_task(_send_then_trickle(host, port, head,
                                                                     body_start)))
        await asyncio.sleep(0.5)
        started = time.monotonic()
        async with aiohttp.ClientSession() as s, s.post(
                relay.url + OHTTP, data=body,
                headers={"Content-Type": "message/ohttp-req",
                         "Authorization": authorization(mint(issuer))}) as r:
            assert r.status == 200
            assert decapsulate_response(ctx, await r.read()) == b"echo:legit"
        legit = time.monotonic() - started
        return (await asyncio.gather(*header_tasks), await asyncio.gather(*body_tasks), legit)

    header_cut, body_cut, legit = asyncio.run(run())
    assert legit < DEADLINE + 3  # served meanwhile, well before the tricklers were cut
    for cut in header_cut + body_cut:
        # Cut at the deadline (a byte per 0.5 s would otherwise last ~100 s), not per byte.
        assert DEADLINE - 0.3 <= cut <= DEADLINE + 6, cut
    assert relay.stop() == 0
    output = relay.stderr_text()
    assert f"deadline_aborts={TRICKLERS + len(body_cut)}" in output
    assert f"client_aborted={len(body_cut)}" in output  # no partial body was forwarded
    assert "127.0.0.1" not in output  # no client address, no aiohttp error log
    assert "Traceback" not in output


async def _send_then_trickle(host: str, port: int, head: bytes, body: bytes) -> float:
    reader, writer = await asyncio.open_connection(host, port)
    started = time.monotonic()
    try:
        writer.write(head)
        await writer.drain()
        for i in range(len(body)):
            if time.monotonic() - started > 4 * DEADLINE + 10:
                return float("inf")
            writer.write(body[i:i + 1])
            await writer.drain()
            try:
                if await asyncio.wait_for(reader.read(1024), 0.5) == b"":
                    return time.monotonic() - started
            except TimeoutError:
                continue
        return float("inf")
    except (ConnectionError, OSError):
        return time.monotonic() - started
    finally:
        writer.close()


def test_overload_gets_a_fast_503_with_retry_after_and_memory_stays_flat_r3(
        tmp_path: Path) -> None:
    issuer = make_issuer(tmp_path)
    key, key_path = make_gateway_key(tmp_path)
    stub = start_stub(tmp_path, key_path)
    relay = start_relay(tmp_path, issuer, stub.url,
                        config="[limits]\nmax_connections = 40\nreceipt_deadline = 60\n")
    host, port = _addr(relay)
    body, _ = encapsulate_request(key.config, b"x")
    try:
        async def run() -> None:
            holders = []
            for _ in range(40):  # fill every slot with an idle, half-sent request
                _, writer = await asyncio.open_connection(host, port)
                writer.write(b"GET /v1/nodes HTTP/1.1\r\n")
                await writer.drain()
                holders.append(writer)
            await asyncio.sleep(0.2)
            rss_before = _rss_kib(relay)
            async with aiohttp.ClientSession() as s:
                for _ in range(300):  # bounded soak of rejected connections
                    started = time.monotonic()
                    async with s.get(relay.url + "/v1/nodes") as r:
                        assert r.status == 503
                        assert r.headers["Retry-After"] == "1"
                    assert time.monotonic() - started < 2.0
            assert _rss_kib(relay) - rss_before < 8 * 1024
            for writer in holders:
                writer.close()
            await asyncio.sleep(0.3)
            async with aiohttp.ClientSession() as s, s.post(  # positive twin: room again
                    relay.url + OHTTP, data=body,
                    headers={"Content-Type": "message/ohttp-req",
                             "Authorization": authorization(mint(issuer))}) as r:
                assert r.status == 200

        asyncio.run(run())
    finally:
        assert [relay.stop(), stub.stop()] == [0, 0]


def test_rate_limited_then_admitted_request_is_forwarded_like_any_other_r6(
        tmp_path: Path) -> None:
    issuer = make_issuer(tmp_path)
    key, key_path = make_gateway_key(tmp_path)
    stub = start_stub(tmp_path, key_path)
    relay = start_relay(tmp_path, issuer, stub.url,
                        config="[limits]\nredemption_rate = 1.0\nredemption_burst = 1.0\n")
    try:
        async def run() -> None:
            async with aiohttp.ClientSession() as s:
                async def post(token: str) -> tuple[int, dict[str, str]]:
                    data, _ = encapsulate_request(key.config, b"same length")
                    async with s.post(relay.url + OHTTP, data=data,
                                      headers={"Content-Type": "message/ohttp-req",
                                               "Authorization": token}) as r:
                        return r.status, dict(r.headers)

                assert (await post(authorization(mint(issuer))))[0] == 200
                late = authorization(mint(issuer))
                status, headers = await post(late)
                assert status == 503
                assert headers["Retry-After"] == "1"
                for _ in range(20):  # the same token, not spent by the refusal, gets in
                    await asyncio.sleep(0.5)
                    status, _ = await post(late)
                    if status == 200:
                        break
                assert status == 200

        asyncio.run(run())
    finally:
        assert [relay.stop(), stub.stop()] == [0, 0]
    first, second = (r for r in records(tmp_path) if r["method"] == "POST")
    assert first["headers"] == second["headers"]  # no marker on the rate-limited client


def test_two_relays_share_one_redis_and_fail_closed_when_it_dies_t5(
        tmp_path: Path, redis_server: RedisServer) -> None:
    issuer = make_issuer(tmp_path)
    key, key_path = make_gateway_key(tmp_path)
    stub = start_stub(tmp_path, key_path)
    relays = [start_relay(tmp_path, issuer, stub.url, name=f"relay{i}",
                          extra=("--redis", redis_server.url)) for i in (1, 2)]
    try:
        async def run() -> None:
            async with aiohttp.ClientSession() as s:
                async def post(relay: ServiceProcess, token: str) -> int:
                    data, _ = encapsulate_request(key.config, b"r")
                    async with s.post(relay.url + OHTTP, data=data,
                                      headers={"Content-Type": "message/ohttp-req",
                                               "Authorization": token}) as r:
                        return r.status

                token = authorization(mint(issuer))
                assert await post(relays[0], token) == 200
                assert await post(relays[1], token) == 401  # spent at the other relay
                assert await post(relays[1], authorization(mint(issuer))) == 200
                redis_server.kill()
                started = time.monotonic()
                assert await post(relays[0], authorization(mint(issuer))) == 503
                assert time.monotonic() - started < 5

        asyncio.run(run())
    finally:
        assert [r.stop() for r in relays] + [stub.stop()] == [0, 0, 0]
    assert len([r for r in records(tmp_path) if r["method"] == "POST"]) == 2


def test_a_reader_that_stops_reading_is_cut_at_the_write_deadline_with_bounded_buffers_r2(
        tmp_path: Path) -> None:
    issuer = make_issuer(tmp_path)
    key, key_path = make_gateway_key(tmp_path)
    stub = start_stub(tmp_path, key_path, mode="flood")
    relay = start_relay(tmp_path, issuer, stub.url, config="[limits]\nwrite_timeout = 1.0\n")
    host, port = _addr(relay)
    body, _ = encapsulate_request(key.config, b"then stop reading")
    head = (f"POST {OHTTP} HTTP/1.1\r\nHost: relay\r\nContent-Type: message/ohttp-req\r\n"
            f"Authorization: {authorization(mint(issuer))}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()
    try:
        async def run() -> None:
            reader, writer = await asyncio.open_connection(host, port, limit=1 << 16)
            rss_before = _rss_kib(relay)
            writer.write(head + body)
            await writer.drain()
            await reader.read(1 << 16)  # the status line and a first piece, then never again
            for _ in range(150):  # at most 30 s for the relay to give up on us
                if [r for r in records(tmp_path) if r["method"] == "FLOOD"]:
                    break
                await asyncio.sleep(0.2)
            assert _rss_kib(relay) - rss_before < 16 * 1024
            writer.close()

        asyncio.run(run())
    finally:
        assert [relay.stop(), stub.stop()] == [0, 0]
    (flood,) = [r for r in records(tmp_path) if r["method"] == "FLOOD"]
    assert flood["chunks_sent"] < 256  # far less than the 32 MiB: nothing buffered it all
    assert "stream_aborted=1" in relay.stderr_text()
