"""`hushcc relay serve` as a real process in front of a real stub gateway process (loopback).

SECURITY.md R1 (header hygiene), R4 (no retry, 502), R5 (ciphertext only), T5 across processes,
the directory (K2: identical bytes between scheduled refreshes), streaming chunk by chunk, the
allowlist (never an open proxy), and SIGTERM draining an in-flight stream.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
import pytest

from ohttp.chunked import ChunkedRequestEncoder, ChunkedResponseDecoder
from ohttp.encapsulation import decapsulate_response, encapsulate_request
from relay import authscheme
from relay.privacypass import TokenChallenge
from tests.relay.relay_helpers import (
    ISSUER_NAME,
    NODE_ID,
    ORIGIN_NAME,
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
    from ohttp.keyconfig import GatewayKey
    from tests.relay.relay_helpers import IssuerFiles

OHTTP = f"/v1/nodes/{NODE_ID}/ohttp"
ALLOWED_TO_GATEWAY = {"Host", "Content-Type", "Content-Length", "Incremental"}


class Env:
    def __init__(self, workdir: Path, issuer: IssuerFiles, key: GatewayKey, stub: ServiceProcess,
                 relay: ServiceProcess) -> None:
        self.workdir, self.issuer, self.key, self.stub, self.relay = (workdir, issuer, key, stub,
                                                                      relay)

    def posts(self) -> list[dict[str, Any]]:
        return [r for r in records(self.workdir) if r["method"] == "POST"]


def _env(tmp_path: Path, *, mode: str = "normal", extra: tuple[str, ...] = (),
         config: str | None = None) -> tuple[Env, list[ServiceProcess]]:
    issuer = make_issuer(tmp_path)
    key, key_path = make_gateway_key(tmp_path)
    stub = start_stub(tmp_path, key_path, mode)
    try:
        relay = start_relay(tmp_path, issuer, stub.url, extra=extra, config=config)
    except BaseException:
        stub.stop()
        raise
    return Env(tmp_path, issuer, key, stub, relay), [relay, stub]


@pytest.fixture
def env(tmp_path: Path):
    environment, services = _env(tmp_path)
    try:
        yield environment
    finally:
        assert [s.stop() for s in services] == [0, 0]


def _headers(env: Env, **extra: str) -> dict[str, str]:
    return {"Content-Type": "message/ohttp-req", "Authorization": authorization(mint(env.issuer)),
            **extra}


async def _post(s: aiohttp.ClientSession, env: Env, body: bytes,
                headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
    async with s.post(env.relay.url + OHTTP, data=body, headers=headers) as r:
        return r.status, dict(r.headers), await r.read()


def test_forwarded_request_carries_only_allowlisted_headers_r1(env: Env) -> None:
    hostile = {"Forwarded": "for=192.0.2.7", "X-Forwarded-For": "192.0.2.7", "Via": "1.1 evil",
               "Cookie": "session=abc", "X-Foo": "bar", "User-Agent": "client/1.0",
               "Accept-Language": "fr", "X-Real-IP": "192.0.2.7", "Incremental": "id-42"}
    body, ctx = encapsulate_request(env.key.config, b"GET /v1/models")

    async def run() -> tuple[int, dict[str, str], bytes]:
        async with aiohttp.ClientSession() as s:
            headers = _headers(env, **hostile)
            headers["Content-Type"] = "message/ohttp-req; client=id-42"
            return await _post(s, env, body, headers)

    status, headers, answer = asyncio.run(run())
    assert status == 200
    assert decapsulate_response(ctx, answer) == b"echo:GET /v1/models"
    (post,) = env.posts()
    got = dict(post["headers"])
    assert set(got) <= ALLOWED_TO_GATEWAY
    assert got["Content-Type"] == "message/ohttp-req"
    assert not set(got.values()) & set(hostile.values())
    assert post["body_sha256"] == hashlib.sha256(body).hexdigest()
    # Back to the client: the gateway's extra headers do not pass.
    assert "X-Gateway" not in headers
    assert "Set-Cookie" not in headers
    assert headers["Content-Type"] == "message/ohttp-res"


def test_token_required_challenge_and_double_spend_t5(env: Env) -> None:
    body, _ = encapsulate_request(env.key.config, b"x")

    async def run() -> None:
        async with aiohttp.ClientSession() as s:
            status, headers, _ = await _post(s, env, body, {"Content-Type": "message/ohttp-req"})
            assert status == 401
            scheme, _, params = headers["WWW-Authenticate"].partition(" ")
            assert scheme == "PrivateToken"
            parsed = authscheme.parse_auth_params(params)
            challenge = TokenChallenge.from_bytes(authscheme.b64url_decode(parsed["challenge"]))
            assert challenge == TokenChallenge(2, ISSUER_NAME, b"", ORIGIN_NAME)
            assert authscheme.b64url_decode(parsed["token-key"]) == env.issuer.pinned.key.spki
            headers = _headers(env)
            assert (await _post(s, env, body, headers))[0] == 200
            assert (await _post(s, env, body, headers))[0] == 401  # spent
            wrong = mint(env.issuer, TokenChallenge(2, ISSUER_NAME, b"", "other.test"))
            wrong_headers = {**headers, "Authorization": authorization(wrong)}
            assert (await _post(s, env, body, wrong_headers))[0] == 401

    asyncio.run(run())
    assert len(env.posts()) == 1  # only the admitted request reached the gateway


def test_chunked_response_is_streamed_chunk_by_chunk(env: Env) -> None:
    encoder = ChunkedRequestEncoder(env.key.config)
    body = encoder.chunk(b"hello ") + encoder.final(b"stream")
    decoder = ChunkedResponseDecoder(encoder.context)

    async def run() -> list[bytes]:
        got: list[bytes] = []
        async with aiohttp.ClientSession() as s:
            headers = {**_headers(env), "Content-Type": "message/ohttp-chunked-req",
                       "Incremental": "?1"}
            async with s.post(env.relay.url + OHTTP, data=body, headers=headers) as r:
                assert r.status == 200
                assert r.headers["Content-Type"] == "message/ohttp-chunked-res"
                assert r.headers["Incremental"] == "?1"
                async with asyncio.timeout(20):
                    while not got:  # the first chunk arrives while the gateway still holds the rest
                        got += decoder.feed(await r.content.readany())
                async with s.post(env.stub.url + "/release") as released:
                    assert released.status == 200
                async for piece in r.content.iter_any():
                    got += decoder.feed(piece)
        return [*got, decoder.finish()]

    assert asyncio.run(run()) == [b"first:hello stream", b"second", b"last"]
    (post,) = env.posts()
    assert dict(post["headers"])["Incremental"] == "?1"


def test_unknown_node_wrong_type_and_oversize_never_reach_a_gateway(tmp_path: Path) -> None:
    environment, services = _env(tmp_path, config="[limits]\nmax_body = 1024\n")
    try:
        async def run() -> None:
            async with aiohttp.ClientSession() as s:
                base = environment.relay.url
                for path in (f"/v1/nodes/{'cd' * 32}/ohttp", "/v1/nodes/abc/ohttp",
                             "/v1/nodes/http%3A%2F%2F127.0.0.1%3A1/ohttp"):
                    async with s.post(base + path, data=b"x", headers=_headers(environment)) as r:
                        assert r.status == 404
                status, _, _ = await _post(s, environment, b"x",
                                           {**_headers(environment), "Content-Type": "text/plain"})
                assert status == 415
                status, _, _ = await _post(s, environment, bytes(2048), _headers(environment))
                assert status == 413

                async def chunks() -> object:
                    for _ in range(4):
                        yield bytes(512)

                async with s.post(base + OHTTP, data=chunks(), headers=_headers(environment)) as r:
                    assert r.status == 413  # no Content-Length: cut while reading
                body, _ = encapsulate_request(environment.key.config, b"ok")
                assert (await _post(s, environment, body, _headers(environment)))[0] == 200

        asyncio.run(run())
    finally:
        assert [s.stop() for s in services] == [0, 0]
    assert len(environment.posts()) == 1


@pytest.mark.parametrize("mode", ["reset", "hang"])
def test_gateway_failure_is_502_and_never_retried_r4(tmp_path: Path, mode: str) -> None:
    environment, services = _env(tmp_path, mode=mode,
                                 config="[limits]\ngateway_timeout = 1.5\n")
    try:
        body, _ = encapsulate_request(environment.key.config, b"once")

        async def run() -> tuple[int, float]:
            async with aiohttp.ClientSession() as s:
                started = time.monotonic()
                status, _, _ = await _post(s, environment, body, _headers(environment))
                return status, time.monotonic() - started

        status, elapsed = asyncio.run(run())
        assert status == 502
        assert elapsed < 15
    finally:
        assert [s.stop() for s in services] == [0, 0]
    assert len(environment.posts()) == 1  # sent exactly once


def _process_memory(pid: int) -> bytes:
    """Every readable private mapping of a live process (as root, or with ptrace rights)."""
    chunks = []
    with Path(f"/proc/{pid}/maps").open() as maps, Path(f"/proc/{pid}/mem").open("rb") as mem:
        for line in maps:
            fields = line.split()
            if "r" not in fields[1] or (len(fields) > 5 and fields[5].startswith("/")):
                continue
            start, end = (int(x, 16) for x in fields[0].split("-"))
            try:
                mem.seek(start)
                chunks.append(mem.read(end - start))
            except (OSError, ValueError, OverflowError):
                continue
    return b"".join(chunks)


def test_relay_logs_and_output_carry_no_request_content_r5(env: Env) -> None:
    canaries = [f"CANARY-{i:03d}-7f3a9c" for i in range(100)]
    tokens = [authorization(mint(env.issuer)) for _ in canaries]

    async def run() -> list[bytes]:
        answers = []
        async with aiohttp.ClientSession() as s:
            for canary, token in zip(canaries, tokens, strict=True):
                body, ctx = encapsulate_request(env.key.config, canary.encode())
                status, _, answer = await _post(
                    s, env, body, {"Content-Type": "message/ohttp-req", "Authorization": token})
                assert status == 200
                answers.append(decapsulate_response(ctx, answer))
        return answers

    answers = asyncio.run(run())
    assert answers == [b"echo:" + c.encode() for c in canaries]  # the gateway did see them
    memory = _process_memory(env.relay.process.pid)
    assert b'"node": "stub"' in memory  # positive twin: the scan sees what the relay holds
    assert b"CANARY-" not in memory
    assert env.relay.stop() == 0
    output = env.relay.stderr_text()
    assert "relay.stats" in output  # positive twin: the relay does log (counts)
    assert "forwarded_2xx=100" in output
    assert "127.0.0.1" not in output
    for secret in canaries + [t.split('"')[1] for t in tokens]:
        assert secret not in output


def test_directory_is_refreshed_on_schedule_and_identical_between_refreshes(
        tmp_path: Path) -> None:
    environment, services = _env(tmp_path, extra=("--refresh-interval", "1.5"))
    try:
        async def run() -> None:
            async with aiohttp.ClientSession() as s:
                async def get() -> tuple[str, bytes]:
                    async with s.get(environment.relay.url + "/v1/nodes") as r:
                        assert r.status == 200
                        return r.headers["ETag"], await r.read()

                answers = await asyncio.gather(*(get() for _ in range(30)))
                by_tag: dict[str, set[bytes]] = {}
                for tag, body in answers:
                    by_tag.setdefault(tag, set()).add(body)
                assert all(len(bodies) == 1 for bodies in by_tag.values())
                assert len(by_tag) <= 2  # at most one refresh fell inside the burst
                fetched = [r for r in records(environment.workdir) if r["method"] == "GET"]
                assert len(fetched) <= 3  # 30 clients did not cause 30 fetches
                first = json.loads(answers[0][1])["nodes"][0]
                assert first["node"] == "stub"
                deadline = time.monotonic() + 20
                while time.monotonic() < deadline:  # a later refresh brings a newer bundle
                    serial = json.loads((await get())[1])["nodes"][0]["serial"]
                    if serial > first["serial"]:
                        break
                    await asyncio.sleep(0.3)
                else:
                    pytest.fail("directory never refreshed")
                async with s.get(environment.relay.url + f"/v1/nodes/{NODE_ID}/attestation",
                                 params={"nonce": "00ff" * 16}) as r:
                    assert r.status == 200
                    assert (await r.json())["nonce"] == "00ff" * 16
                async with s.get(environment.relay.url + f"/v1/nodes/{NODE_ID}/attestation",
                                 params={"nonce": "not hex"}) as r:
                    assert r.status == 400

        asyncio.run(run())
    finally:
        assert [s.stop() for s in services] == [0, 0]


def test_sigterm_drains_an_in_flight_stream(env: Env) -> None:
    encoder = ChunkedRequestEncoder(env.key.config)
    body = encoder.final(b"drain")
    decoder = ChunkedResponseDecoder(encoder.context)

    async def run() -> list[bytes]:
        got: list[bytes] = []
        async with aiohttp.ClientSession() as s:
            headers = {**_headers(env), "Content-Type": "message/ohttp-chunked-req"}
            async with s.post(env.relay.url + OHTTP, data=body, headers=headers) as r:
                async with asyncio.timeout(20):
                    while not got:
                        got += decoder.feed(await r.content.readany())
                env.relay.process.terminate()
                await asyncio.sleep(0.3)
                async with s.post(env.stub.url + "/release"):
                    pass
                async for piece in r.content.iter_any():
                    got += decoder.feed(piece)
        return [*got, decoder.finish()]

    assert asyncio.run(run()) == [b"first:drain", b"second", b"last"]
    assert env.relay.process.wait(timeout=30) == 0
