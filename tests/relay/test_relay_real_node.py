"""The relay in front of the real `hushcc node serve` (tiny model), both as processes on loopback.

The relay never parses bundles; the test does (with `attestation.bundle`) to check that what the
relay serves is the node's bundle, byte for byte, and that an inference round trip, streamed
chunk for chunk with the node's padded sizes (R7), and a fresh attestation go through it.
"""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING

import aiohttp
import pytest

from attestation.bundle import Bundle
from node.model_files import write_tiny_model
from ohttp.keyconfig import parse_key_configs
from tests.node.node_client import CHAT, inner, open_stream, open_whole, seal
from tests.node.node_process import start_node
from tests.relay.relay_helpers import authorization, make_issuer, mint, start_relay

if TYPE_CHECKING:
    from pathlib import Path

    from tests.relay.relay_helpers import IssuerFiles


def _chat(content: str, **kw: object) -> dict[str, object]:
    return {"messages": [{"role": "user", "content": content}], "max_tokens": 8,
            "temperature": 0, **kw}


async def _post(session: aiohttp.ClientSession, url: str, body: bytes, media: str,
                token: str) -> tuple[int, list[bytes]]:
    async with session.post(url, data=body, headers={"Content-Type": media,
                                                     "Authorization": token}) as r:
        chunks, buffer = [], b""
        async for data, end_of_chunk in r.content.iter_chunks():
            buffer += data
            if end_of_chunk and buffer:
                chunks.append(buffer)
                buffer = b""
        if buffer:
            chunks.append(buffer)
        return r.status, chunks


@pytest.mark.slow
def test_relay_in_front_of_the_real_node(tmp_path: Path) -> None:
    model = write_tiny_model(tmp_path / "model" / "tiny")
    node = start_node(tmp_path / "node", "--model", str(model))
    issuer = make_issuer(tmp_path)
    try:
        direct = node.get("/attestation")
        node_id = json.loads(direct)["node_id"]
        relay = start_relay(tmp_path, issuer, node.url, node_id=node_id)
        try:
            asyncio.run(_exercise(relay.url, node_id, direct, issuer))
        finally:
            assert relay.stop() == 0
    finally:
        assert node.stop() == 0


async def _exercise(relay_url: str, node_id: str, direct: bytes, issuer: IssuerFiles) -> None:
    async with aiohttp.ClientSession() as s:
        async with s.get(relay_url + "/v1/nodes") as r:
            assert r.status == 200
            raw = await r.read()
        (served,) = json.loads(raw)["nodes"]
        assert direct.strip() in raw  # the node's bundle, byte for byte (the relay is opaque)
        bundle = Bundle.from_json(direct)
        assert bundle.node_id.hex() == node_id == served["node_id"]
        config = parse_key_configs(bundle.key_config)[0]
        base = f"{relay_url}/v1/nodes/{node_id}"

        body, ctx = seal(config, inner(CHAT, _chat("hello relay")), chunked=False)
        status, chunks = await _post(s, base + "/ohttp", body, "message/ohttp-req",
                                     authorization(mint(issuer)))
        assert status == 200
        response = open_whole(ctx, b"".join(chunks))
        assert response.status == 200
        assert json.loads(response.content)["object"] == "chat.completion"

        body, ctx = seal(config, inner(CHAT, _chat("stream via relay", stream=True)),
                         chunked=True)
        status, chunks = await _post(s, base + "/ohttp", body, "message/ohttp-chunked-req",
                                     authorization(mint(issuer)))
        assert status == 200
        streamed = open_stream(ctx, chunks)
        assert streamed.status == 200
        assert streamed.events()[-1] == "[DONE]"
        # The node's HTTP chunks arrive as they were flushed: head, one per event, final, and
        # the event chunks all padded to one size bucket (R7 survives the relay).
        assert len(chunks) == len(streamed.events()) + 2
        assert len({len(c) for c in chunks[1:-1]}) == 1

        nonce = bytes(range(32)).hex()
        async with s.get(base + "/attestation", params={"nonce": nonce}) as r:
            assert r.status == 200
            fresh = Bundle.from_json(await r.read())
        assert fresh.nonce == bytes(range(32))
        assert fresh.node_id == bundle.node_id
