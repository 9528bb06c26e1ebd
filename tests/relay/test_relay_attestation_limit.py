"""The relay meters fresh attestations (`GET /v1/nodes/{id}/attestation?nonce=`): each makes the
node sign new evidence and no token pays for it, so above the rate or the concurrency cap the
relay answers a fast 503 with Retry-After and the node never sees the request. Loopback, real
processes, bounded in count and time; each refusal has its admitted twin."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

import aiohttp

from tests.relay.relay_helpers import NODE_ID, make_gateway_key, make_issuer, records, start_relay
from tests.relay.relay_helpers import start_stub as start_gateway

if TYPE_CHECKING:
    from pathlib import Path

ATTESTATION = f"/v1/nodes/{NODE_ID}/attestation?nonce="


def _attestations_seen(workdir: Path) -> int:
    """Fresh attestations the node produced (the directory's refreshes carry no nonce)."""
    return sum(1 for r in records(workdir) if r["path"].startswith("/attestation?nonce="))


async def _get(session: aiohttp.ClientSession, url: str, nonce: str) -> tuple[
        int, dict[str, str], float]:
    started = time.monotonic()
    async with session.get(url + ATTESTATION + nonce) as r:
        if r.status == 200:
            assert (await r.json())["nonce"] == nonce
        return r.status, dict(r.headers), time.monotonic() - started


def test_fresh_attestations_above_the_rate_get_a_fast_503_and_never_reach_the_node(
        tmp_path: Path) -> None:
    issuer = make_issuer(tmp_path)
    _, key_path = make_gateway_key(tmp_path)
    gateway = start_gateway(tmp_path, key_path)
    limited = start_relay(tmp_path, issuer, gateway.url, name="limited", config=(
        "[limits]\nattestation_rate = 0.2\nattestation_burst = 3\n"))
    default = start_relay(tmp_path, issuer, gateway.url, name="default")
    try:
        async def run() -> None:
            async with aiohttp.ClientSession() as s:
                answers = [await _get(s, limited.url, f"a{i:03x}") for i in range(10)]
                assert [status for status, _, _ in answers] == [200] * 3 + [503] * 7
                for _, headers, seconds in answers[3:]:
                    assert int(headers["Retry-After"]) >= 1
                    assert seconds < 1.0
                assert _attestations_seen(tmp_path) == 3  # the node paid for 3 only
                # Twin: within the default limits the same ten are all forwarded.
                answers = [await _get(s, default.url, f"b{i:03x}") for i in range(10)]
                assert [status for status, _, _ in answers] == [200] * 10
                assert _attestations_seen(tmp_path) == 13

        asyncio.run(run())
    finally:
        assert [limited.stop(), default.stop(), gateway.stop()] == [0, 0, 0]
    assert "attestation_limited=7" in limited.stderr_text()


def test_fresh_attestations_above_the_concurrency_cap_get_a_fast_503(tmp_path: Path) -> None:
    issuer = make_issuer(tmp_path)
    _, key_path = make_gateway_key(tmp_path)
    gateway = start_gateway(tmp_path, key_path, mode="hold-attestation")
    relay = start_relay(tmp_path, issuer, gateway.url, config=(
        "[limits]\nmax_attestation_inflight = 2\nattestation_rate = 1000\n"))
    try:
        async def run() -> None:
            async with aiohttp.ClientSession() as s:
                held = [asyncio.ensure_future(_get(s, relay.url, f"c{i}")) for i in range(2)]
                for _ in range(200):  # until the node holds both (bounded: 10 s)
                    if _attestations_seen(tmp_path) == 2:
                        break
                    await asyncio.sleep(0.05)
                assert _attestations_seen(tmp_path) == 2
                status, headers, seconds = await _get(s, relay.url, "c2")
                assert (status, headers["Retry-After"]) == (503, "1")
                assert seconds < 1.0
                async with s.post(gateway.url + "/release") as r:
                    assert r.status == 200
                assert [a[0] for a in await asyncio.gather(*held)] == [200, 200]
                # Twin: with the two answered there is room again.
                assert (await _get(s, relay.url, "c3"))[0] == 200
                assert _attestations_seen(tmp_path) == 3

        asyncio.run(run())
    finally:
        assert [relay.stop(), gateway.stop()] == [0, 0]
