"""The log server against hostile unauthenticated input: no 500, no traceback (issue 9.12).

Requests go over raw loopback sockets to a real aiohttp server, so the HTTP parser, the
middleware and the handlers all see exactly the bytes an attacker would send.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import tempfile
import threading
from typing import TYPE_CHECKING

import pytest
from aiohttp.test_utils import TestServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hushcc.errors import HushError
from tests.transparency_log.tlog_helpers import release
from transparency_log.entry import sign_entry
from transparency_log.note import Signer
from transparency_log.server import Batcher, LogServer
from transparency_log.storage import LogStorage, StorageError

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence
    from pathlib import Path

ORIGIN = "hardening.test.log"
REL = Signer.generate("release.test")
GOOD = sign_entry(release(1), REL)
DEEP = b"[" * 50_000 + b"]" * 50_000  # far past the recursion limit, under the size cap
HUGE_INT = b'{"entry": ' + b"9" * 5_000 + b', "key": "k", "signature": "s"}'
HOSTILE_BODIES = [
    DEEP,
    b'{"entry": ' + DEEP + b"}",
    HUGE_INT,
    json.dumps({"entry": base64.b64encode(b'{"schema": ' + b"1" * 5_000 + b"}").decode(),
                "key": "k", "signature": "s"}).encode(),
    json.dumps({"entry": base64.b64encode(DEEP).decode(), "key": "k", "signature": "s"}).encode(),
    b'{"entry": 1e999999, "key": "k", "signature": "s"}',
    b"\xff\xfe" + b"\x00" * 10,
    b"",
]
Raw = tuple[str, str, bytes]


async def _send(port: int, method: str, target: str, body: bytes) -> tuple[int, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = (f"{method} {target} HTTP/1.1\r\nHost: log\r\nConnection: close\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode("latin-1")
    writer.write(head + body)
    await writer.drain()
    response = await asyncio.wait_for(reader.read(), 30)
    writer.close()
    status_line = response.split(b"\r\n", 1)[0].split()
    return int(status_line[1]), response


def _serve(body: Callable[[int, LogServer], Awaitable[None]], state: Path | None = None,
           signer: Signer | None = None) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        async def main() -> None:
            storage = LogStorage(state or tmp, signer or Signer.generate(ORIGIN))
            server = LogServer(storage, REL.verifier())
            test_server = TestServer(server.app(), host="127.0.0.1")
            await test_server.start_server()
            try:
                assert test_server.port is not None
                await body(test_server.port, server)
            finally:
                await test_server.close()
                storage.close()

        asyncio.run(main())


def _no_detail(status: int, response: bytes) -> None:
    assert status < 500, response[:300]
    assert b"Traceback" not in response
    assert b"RecursionError" not in response
    assert b"4300" not in response  # int()'s digit-limit message


def test_hostile_add_bodies_and_tile_paths_are_4xx_without_detail() -> None:
    """Deep nesting, 5,000-digit integers and 1,434-group tile paths once gave 500s."""
    async def body(port: int, server: LogServer) -> None:
        for hostile in HOSTILE_BODIES:
            status, response = await _send(port, "POST", "/add", hostile)
            _no_detail(status, response)
            assert status == 400, response[:300]
        for groups in (1_434, 1_500):
            status, response = await _send(port, "GET", "/tile/0/" + "x999/" * groups + "999", b"")
            _no_detail(status, response)
            assert status == 404
        assert server.storage.size == 0
        status, response = await _send(port, "POST", "/add", GOOD)  # positive twin
        assert status == 200, response
        assert server.storage.size == 1

    _serve(body)


_TARGETS = st.one_of(
    st.sampled_from(["/checkpoint", "/add", "/tile/0/000", "/tile/0/000.p/1", "/tile/entries/000",
                     "/tile/entries/000.p/1", "/tile/1/000", "/proof/inclusion?index=0&size=1",
                     "/proof/consistency?from=1&to=1", "/", "/tile/", "/proof/inclusion"]),
    st.builds(lambda p, q: f"/proof/{p}?{q}", st.sampled_from(["inclusion", "consistency"]),
              st.text(st.characters(min_codepoint=33, max_codepoint=126), max_size=40)),
    st.builds(lambda n, tail: "/tile/0/" + "x999/" * n + tail, st.integers(0, 1_600),
              st.sampled_from(["999", "000.p/1", "x", ""])),
    st.text(st.characters(min_codepoint=33, max_codepoint=126), max_size=80).map(lambda t: "/" + t),
)
_BODIES = st.one_of(st.sampled_from([GOOD, *HOSTILE_BODIES]), st.binary(max_size=300),
                    st.builds(lambda i, b: GOOD[:i] + bytes([b]) + GOOD[i + 1:],
                              st.integers(0, len(GOOD) - 1), st.integers(0, 255)))
_REQUESTS = st.lists(st.tuples(st.sampled_from(["GET", "POST", "HEAD", "PUT"]), _TARGETS, _BODIES),
                     min_size=1, max_size=12)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(requests=_REQUESTS)
def test_fuzz_over_every_route_never_gives_a_500(requests: Sequence[Raw]) -> None:
    async def body(port: int, _server: LogServer) -> None:
        for method, target, payload in requests:
            status, response = await _send(port, method, target, payload)
            _no_detail(status, response)

    _serve(body)


def test_an_unexpected_handler_error_is_a_bare_500_logging_no_detail(
        caplog: pytest.LogCaptureFixture) -> None:
    """Defence in depth: whatever a handler did not expect, the client and the log learn nothing."""
    async def body(port: int, server: LogServer) -> None:
        status, _ = await _send(port, "GET", "/tile/entries/000.p/1", b"")
        assert status == 404  # empty log
        await _send(port, "POST", "/add", GOOD)
        status, _ = await _send(port, "GET", "/tile/entries/000.p/1", b"")
        assert status == 200  # positive twin

        def broken(*_args: object) -> list[bytes]:
            raise RuntimeError("canary-7f3a in an exception message")

        server.storage.entries = broken  # type: ignore[method-assign,assignment]
        with caplog.at_level(logging.DEBUG):
            status, response = await _send(port, "GET", "/tile/entries/000.p/1", b"")
        assert status == 500
        assert response.endswith(b'{"error": "internal error"}')
        assert b"canary-7f3a" not in response
        assert "canary-7f3a" not in caplog.text
        assert all(r.exc_info is None for r in caplog.records)
        assert "RuntimeError" in caplog.text

    _serve(body)


def test_a_repeated_add_returns_the_existing_index_and_appends_nothing(tmp_path: Path) -> None:
    """A retried `log add` (or one sent twice at once) must not log the entry twice."""
    async def body(port: int, server: LogServer) -> None:
        status, first = await _send(port, "POST", "/add", GOOD)
        assert status == 200
        status, again = await _send(port, "POST", "/add", GOOD)
        assert status == 200
        assert _index(first) == _index(again) == 0
        bodies = [sign_entry(release(2), REL)] * 5 + [sign_entry(release(n), REL) for n in (3, 4)]
        answers = await asyncio.gather(*(_send(port, "POST", "/add", b) for b in bodies))
        indices = [_index(r) for _, r in answers]
        assert len(set(indices[:5])) == 1  # the five identical adds share one index
        assert sorted(set(indices)) == [1, 2, 3]  # positive twin: distinct entries do append
        assert server.storage.size == 4

    log = Signer.generate(ORIGIN)
    _serve(body, tmp_path, log)
    with LogStorage(tmp_path, log) as reopened:  # the index survives a restart
        assert reopened.index_of(release(1).to_bytes()) == 0
        assert reopened.index_of(release(9).to_bytes()) is None


def _index(response: bytes) -> int:
    index: int = json.loads(response.split(b"\r\n\r\n", 1)[1])["index"]
    return index


def test_closing_the_batcher_ends_even_when_storage_hangs(tmp_path: Path) -> None:
    """SIGTERM must always end the server: a stuck write fails its waiters after the drain."""
    storage = LogStorage(tmp_path, Signer.generate(ORIGIN))
    release_write = threading.Event()
    real = storage.append_batch

    def stuck(entries: Sequence[bytes]) -> tuple[int, bytes]:
        release_write.wait(30)
        return real(entries)

    async def main() -> None:
        batcher = Batcher(storage)
        batcher.start()
        index, _ = await batcher.add(b"quick")  # positive twin: a healthy append drains at once
        assert index == 0
        storage.append_batch = stuck  # type: ignore[method-assign]
        waiter = asyncio.ensure_future(batcher.add(b"slow"))
        await asyncio.sleep(0.05)
        await asyncio.wait_for(batcher.close(drain_timeout=0.2), 5)
        with pytest.raises(HushError):
            await waiter
        assert isinstance(waiter.exception(), StorageError)

    try:
        asyncio.run(main())
    finally:
        release_write.set()
        storage.close()
