"""relay.upstream against raw loopback gateways that behave, and that misbehave.

Keep-alive reuse only after a complete, well-framed response (positive twin: a good gateway's
connection is reused); never a retry (R4: the gateway sees each request once, however it
failed); a truncated or malformed answer is an error, never a complete-looking one; a reader
that falls behind pauses the socket instead of buffering the stream. And through a whole relay
(in process, real sockets): a malformed gateway head is a 502, a truncated stream is cut.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Self

import aiohttp
import pytest

from hushcc.errors import ProtocolError
from relay.directory import NodeDirectory, NodeEntry
from relay.guard import GuardedSite
from relay.http1 import END, Piece, gateway_target, request_head
from relay.redemption import Redeemer, relay_challenge
from relay.server import RelayServer
from relay.spent import MemorySpentStore
from relay.upstream import HIGH_WATER, Exchange, GatewayError, GatewayPool
from tests.relay.relay_helpers import (
    ISSUER_NAME,
    NODE_ID,
    ORIGIN_NAME,
    authorization,
    make_issuer,
    mint,
)

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

OK = b"HTTP/1.1 200 OK\r\nContent-Type: message/ohttp-res\r\nContent-Length: 2\r\n\r\nhi"
REQUEST = request_head("GET", "/attestation", "gw", ())


class RawGateway:
    """A loopback server answering request n (one read) with `answer(n)`; None: hang up at once.

    After answering a request whose number is in `hang_up`, it closes the connection.
    """

    def __init__(self, answer: Callable[[int], bytes | None], hang_up: frozenset[int] = frozenset(),
                 ) -> None:
        self.answer = answer
        self.hang_up = hang_up
        self.requests = 0
        self.connections = 0
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> Self:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *_exc: object) -> None:
        assert self.server is not None
        self.server.close()

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while await reader.read(65536):
                self.requests += 1
                answer = self.answer(self.requests)
                if answer is None:
                    break
                writer.write(answer)
                await writer.drain()
                if self.requests in self.hang_up:
                    break
        except ConnectionError:
            pass
        finally:
            writer.close()


async def _body(exchange: Exchange) -> bytes:
    data = b""
    while (event := await exchange.next()) is not END:
        assert isinstance(event, Piece)
        data += event.data
    return data


async def _round_trip(pool: GatewayPool, url: str) -> bytes:
    exchange, head = await pool.send(gateway_target(url), REQUEST)
    try:
        assert head.status == 200
        return await _body(exchange)
    finally:
        pool.release(exchange)


@pytest.mark.parametrize(("answer", "connections"), [
    (OK, 1),  # positive twin: a complete, keep-alive response leaves the connection reusable
    (OK.replace(b"Content-Type", b"Connection: close\r\nContent-Type"), 3),
    (OK + b"HTTP/1.1 200 OK\r\n", 3),  # bytes after the response: out of step, never reused
])
def test_a_connection_is_reused_only_after_a_clean_complete_response(
        answer: bytes, connections: int) -> None:
    async def run() -> None:
        async with RawGateway(lambda _n: answer) as gateway:
            pool = GatewayPool()
            assert [await _round_trip(pool, gateway.url) for _ in range(3)] == [b"hi"] * 3
            assert (gateway.requests, gateway.connections) == (3, connections)
            pool.close()

    asyncio.run(run())


@pytest.mark.parametrize(("answer", "error"), [
    (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nhi", ProtocolError),
    (b"HTTP/1.1 200 OK\r\n\r\nclose-delimited", ProtocolError),
    (b"HTTP/1.1 200 OK\r\nContent-Le", GatewayError),  # closed inside the head
    (None, GatewayError),  # closed without a byte
])
def test_a_failed_head_is_an_error_and_is_never_retried_r4(answer: bytes | None,
                                                            error: type[Exception]) -> None:
    async def run() -> None:
        async with RawGateway(lambda n: answer if n == 1 else OK, frozenset({1})) as gateway:
            pool = GatewayPool()
            with pytest.raises(error):
                await pool.send(gateway_target(gateway.url), REQUEST)
            await asyncio.sleep(0.05)
            assert gateway.requests == 1  # sent once, not resent
            assert await _round_trip(pool, gateway.url) == b"hi"  # a new connection works
            assert gateway.connections == 2  # the failed one was dropped
            pool.close()

    asyncio.run(run())


def test_a_truncated_body_is_an_error_after_the_bytes_that_came() -> None:
    async def run() -> None:
        truncated = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello"
        async with RawGateway(lambda _n: truncated, frozenset({1})) as gateway:
            pool = GatewayPool()
            exchange, _ = await pool.send(gateway_target(gateway.url), REQUEST)
            assert await exchange.next() == Piece(b"hello", end_of_chunk=False)
            with pytest.raises(GatewayError):
                await exchange.next()
            pool.release(exchange)
            assert not exchange.reusable
            pool.close()

    asyncio.run(run())


def test_a_half_read_or_idle_chattering_connection_is_dropped() -> None:
    async def run() -> None:
        chunked = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                   b"2\r\nhi\r\n2\r\nho\r\n0\r\n\r\n")
        async with RawGateway(lambda n: chunked if n == 1 else OK + b"\r\nstray") as gateway:
            pool = GatewayPool()
            exchange, _ = await pool.send(gateway_target(gateway.url), REQUEST)
            assert await exchange.next() == Piece(b"hi", end_of_chunk=True)
            pool.release(exchange)  # the rest never read: closed, not pooled
            assert exchange.closed
            exchange, _ = await pool.send(gateway_target(gateway.url), REQUEST)
            assert await _body(exchange) == b"hi"
            pool.release(exchange)  # surplus "\r\nstray" arrived with it: closed too
            assert exchange.closed
            assert gateway.connections == 2
            pool.close()

    asyncio.run(run())


def test_a_reader_that_falls_behind_pauses_the_gateway_socket() -> None:
    async def run() -> None:
        size = 8 << 20
        flood = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size + bytes(size)
        async with RawGateway(lambda _n: flood) as gateway:
            pool = GatewayPool()
            exchange, _ = await pool.send(gateway_target(gateway.url), REQUEST)
            await asyncio.sleep(0.3)  # read nothing for a while
            assert exchange._buffered <= HIGH_WATER + (1 << 18)  # the bound
            assert len(await _body(exchange)) == size  # positive twin: all of it, in order
            pool.release(exchange)
            pool.close()

    asyncio.run(run())


def test_through_the_relay_a_malformed_head_is_502_and_a_cut_stream_is_cut_r4(
        tmp_path: Path) -> None:
    issuer = make_issuer(tmp_path)
    answers = {1: OK,  # the relay's directory fetch at startup
               2: b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
               3: b"HTTP/1.1 200 OK\r\nContent-Type: message/ohttp-res\r\n"
                  b"Transfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n",  # then it hangs up
               4: OK}

    async def run() -> list[tuple[int, bytes | str]]:
        async with RawGateway(answers.get, hang_up=frozenset({3})) as gateway:
            server = RelayServer(NodeDirectory([NodeEntry(NODE_ID, gateway.url)]),
                                 Redeemer(issuer.pinned, relay_challenge(ISSUER_NAME, ORIGIN_NAME),
                                          MemorySpentStore()))
            runner = aiohttp.web.AppRunner(server.app(), access_log=None)
            await runner.setup()
            await GuardedSite(runner, "127.0.0.1", 0, server.guard).start()
            url = f"http://127.0.0.1:{runner.addresses[0][1]}/v1/nodes/{NODE_ID}/ohttp"
            outcomes: list[tuple[int, bytes | str]] = []
            try:
                async with aiohttp.ClientSession() as session:
                    for _ in range(3):
                        headers = {"Content-Type": "message/ohttp-req",
                                   "Authorization": authorization(mint(issuer))}
                        async with session.post(url, data=b"ct", headers=headers) as r:
                            try:
                                outcomes.append((r.status, await r.read()))
                            except aiohttp.ClientPayloadError:
                                outcomes.append((r.status, "cut"))
            finally:
                await runner.cleanup()
            assert gateway.requests == 4  # the directory's, then one each: nothing resent
            return outcomes

    outcomes = asyncio.run(run())
    assert outcomes[0][0] == 502
    assert outcomes[1] == (200, "cut")  # never a complete-looking stream
    assert outcomes[2] == (200, b"hi")  # positive twin
