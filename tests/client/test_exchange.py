"""One exchange: a fresh HPKE context every time (C1); refusals outside the envelope named."""

from __future__ import annotations

import asyncio
import os
from typing import TYPE_CHECKING

import pytest

from client.exchange import RelayRefusedError, exchange_stream, exchange_whole
from client.transport import Reply, StreamHead, Transport
from ohttp.keyconfig import GatewayKey
from ohttp.suites import AeadId, KdfId, SymmetricSuite

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Mapping

URL = "http://relay.test/v1/nodes/00/ohttp"
KEY = GatewayKey.generate(7, (SymmetricSuite(KdfId.HKDF_SHA256, AeadId.AES_128_GCM),),
                          rng=os.urandom)


class Refusing(Transport):
    """Records what would be sent; answers like a relay that refuses (no envelope to open)."""

    def __init__(self, status: int) -> None:
        self.status = status
        self.bodies: list[bytes] = []

    async def get(self, url: str, *, headers: Mapping[str, str] | None = None) -> Reply:
        raise AssertionError("no GET here")

    async def post(self, url: str, body: bytes, *, headers: Mapping[str, str]) -> Reply:
        self.bodies.append(body)
        return Reply(self.status, {"retry-after": "3"}, b"")

    async def post_stream(self, url: str, body: bytes, *, headers: Mapping[str, str]
                          ) -> AsyncIterator[StreamHead | bytes]:
        self.bodies.append(body)
        yield StreamHead(self.status, {})

    async def close(self) -> None:
        return None


def test_a_thousand_requests_use_a_thousand_encs_c1() -> None:
    transport = Refusing(502)

    async def whole() -> None:
        await exchange_whole(transport, URL, KEY.config, b"same request",
                             authorization="PrivateToken token=x")

    async def streamed() -> None:
        async for _ in exchange_stream(transport, URL, KEY.config, b"same request",
                                       authorization="PrivateToken token=x"):
            pass

    for i in range(1000):
        with pytest.raises(RelayRefusedError):
            asyncio.run(whole() if i % 2 else streamed())
    encs = {body[7:39] for body in transport.bodies}
    assert len(transport.bodies) == 1000
    assert len(encs) == 1000
    assert all(body[0] == KEY.config.key_id for body in transport.bodies)


@pytest.mark.parametrize(("status", "meaning"), [(401, "token refused"), (503, "relay busy"),
                                                 (502, "node unreachable"),
                                                 (422, "node key rotated")])
def test_a_refusal_names_its_status(status: int, meaning: str) -> None:
    with pytest.raises(RelayRefusedError, match=meaning) as caught:
        asyncio.run(exchange_whole(Refusing(status), URL, KEY.config, b"x",
                                   authorization="PrivateToken token=x"))
    assert caught.value.status == status
    assert caught.value.retry_after == "3"
