"""`hushcc node serve` end to end: a real subprocess on loopback, a client from the ohttp package.

One node (a tiny model written by the test as safetensors + tokenizer files) serves most tests;
a second one with tight limits and a fast key rotation serves the limit and rotation tests.
"""

from __future__ import annotations

import asyncio
import base64
import json
import random
import signal
import socket
import time
import urllib.error
from pathlib import Path
from typing import TYPE_CHECKING

import aiohttp
import pytest

from attestation.bundle import Bundle
from node.metrics import ALLOWED, OUTCOMES
from node.model_files import write_tiny_model
from ohttp.keyconfig import parse_key_configs
from tests.node.node_client import CHAT, COMPLETIONS, inner, open_stream, open_whole, seal
from tests.node.node_process import NodeProcess, post, post_sync, start_node

if TYPE_CHECKING:
    from collections.abc import Iterator

REQ, CREQ = "message/ohttp-req", "message/ohttp-chunked-req"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_model(tmp_path_factory.mktemp("model") / "tiny")


@pytest.fixture(scope="module")
def node(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    base = tmp_path_factory.mktemp("node")
    config = base / "node.toml"
    config.write_text("max_concurrent = 48\nnum_blocks = 1024\nblock_size = 4\n"
                      "max_num_seqs = 64\n")
    started = start_node(base / "run", "--model", str(model_dir), "--config", str(config))
    yield started
    assert started.stop() == 0  # SIGTERM drains and exits 0


@pytest.fixture(scope="module")
def tight_node(model_dir: Path, tmp_path_factory: pytest.TempPathFactory
               ) -> Iterator[NodeProcess]:
    base = tmp_path_factory.mktemp("tight")
    config = base / "node.toml"
    config.write_text("max_body = 4096\nreceipt_deadline = 1.0\nmax_concurrent = 2\n"
                      "key_interval = 4.0\nkey_grace = 1.0\nmax_tokens = 64\n")
    started = start_node(base / "run", "--model", str(model_dir), "--config", str(config))
    yield started
    assert started.stop() == 0


def chat(content: str, **kw: object) -> dict[str, object]:
    return {"messages": [{"role": "user", "content": content}], "max_tokens": 8,
            "temperature": 0, **kw}


def test_chat_completion_non_streaming(node: NodeProcess) -> None:
    body, ctx = seal(node.key_config(), inner(CHAT, chat("hello there")), chunked=False)
    answer = post_sync(node, body, REQ)
    assert answer.status == 200
    assert answer.content_type == "message/ohttp-res"
    response = open_whole(ctx, b"".join(answer.chunks))
    doc = json.loads(response.content)
    assert response.status == 200
    assert doc["object"] == "chat.completion"
    assert doc["usage"]["completion_tokens"] >= 1


def test_chat_completion_streaming_one_chunk_per_event(node: NodeProcess) -> None:
    body, ctx = seal(node.key_config(), inner(CHAT, chat("stream me", stream=True)),
                     chunked=True)
    answer = post_sync(node, body, CREQ)
    assert answer.status == 200
    assert answer.content_type == "message/ohttp-chunked-res"
    streamed = open_stream(ctx, answer.chunks)
    assert streamed.status == 200
    assert streamed.events()[-1] == "[DONE]"
    assert len(answer.chunks) == len(streamed.events()) + 2  # head + one per event + final
    assert len({len(c) for c in answer.chunks[1:-1]}) == 1  # padded to one bucket (R7)


def test_attestation_bundle_and_nonce(node: NodeProcess) -> None:
    bundle = Bundle.from_json(node.get("/attestation"))
    assert parse_key_configs(bundle.key_config)[0] == node.key_config()
    assert bundle.nonce is None
    nonce = bytes(range(32))
    fresh = Bundle.from_json(node.get("/attestation?nonce=" + nonce.hex()))
    assert fresh.nonce == nonce
    assert fresh.node_id == bundle.node_id
    assert node.get("/health") == b"ok\n"


def test_32_concurrent_canaries_each_get_only_their_own_e6(node: NodeProcess) -> None:
    rng = random.Random(6)
    canaries = [f"canary{i:02d}x{rng.randrange(16**6):06x}" for i in range(32)]
    config = node.key_config()
    steps_before = node.metrics()["hushcc_engine_steps_total"]

    async def one(session: aiohttp.ClientSession, canary: str) -> tuple[str, int]:
        doc: dict[str, object] = {"prompt": canary + " " * rng.randrange(0, 3) + "tell",
                                  "echo": True,
               "max_tokens": rng.randrange(4, 16), "temperature": 0.8, "seed": 1}
        stream = rng.random() < 0.5
        body, ctx = seal(config, inner(COMPLETIONS, doc | {"stream": stream}), chunked=stream)
        answer = await post(session, node, body, CREQ if stream else REQ)
        if stream:
            return open_stream(ctx, answer.chunks).text(), int(str(doc["max_tokens"]))
        content = json.loads(open_whole(ctx, b"".join(answer.chunks)).content)
        return content["choices"][0]["text"], content["usage"]["completion_tokens"]

    async def go() -> list[tuple[str, int]]:
        async with aiohttp.ClientSession() as session:
            return await asyncio.gather(*(one(session, c) for c in canaries))

    results = asyncio.run(go())
    for canary, (text, _) in zip(canaries, results, strict=True):
        assert text.startswith(canary)
        assert [c for c in canaries if c in text] == [canary]
    steps = node.metrics()["hushcc_engine_steps_total"] - steps_before
    assert steps < sum(n for _, n in results) / 4  # they shared engine steps (batched)


def test_replay_refused_before_engine_g3(node: NodeProcess) -> None:
    body, ctx = seal(node.key_config(), inner(CHAT, chat("only once")), chunked=False)
    before = node.metrics()['hushcc_node_requests_total{outcome="submitted"}']
    first = post_sync(node, body, REQ)
    assert open_whole(ctx, b"".join(first.chunks)).status == 200
    again = post_sync(node, body, REQ)
    replayed = open_whole(ctx, b"".join(again.chunks))
    assert replayed.status == 400
    assert json.loads(replayed.content)["error"]["code"] == "replayed_request"
    assert node.metrics()['hushcc_node_requests_total{outcome="submitted"}'] - before == 1


def test_unknown_key_id_plain_422_g6(node: NodeProcess) -> None:
    config = node.key_config()
    body, _ = seal(config, inner(CHAT, chat("x")), chunked=False)
    answer = post_sync(node, bytes([(config.key_id + 7) % 256]) + body[1:], REQ)
    assert answer.status == 422
    assert json.loads(b"".join(answer.chunks))["type"].endswith("#ohttp-key")
    assert post_sync(node, body, REQ).status == 200  # positive twin


def test_encapsulated_404_for_other_routes_g15(node: NodeProcess) -> None:
    body, ctx = seal(node.key_config(), inner(b"/admin/reload", {}), chunked=False)
    answer = post_sync(node, body, REQ)
    assert answer.status == 200  # the outer status says nothing about the inner answer
    assert open_whole(ctx, b"".join(answer.chunks)).status == 404
    for path in ("/admin", "/debug", "/v1/chat/completions", "/metrics"):
        with pytest.raises(urllib.error.HTTPError) as refused:
            node.get(path)
        assert refused.value.code in (404, 405)


def test_metrics_are_allowlisted_aggregates_n7(node: NodeProcess) -> None:
    metrics = node.metrics()
    for series in metrics:
        name = series.split("{")[0].removesuffix("_total").removesuffix("_created")
        assert name in ALLOWED
        if "{" in series:
            labels = series.split("{", 1)[1].rstrip("}")
            key, value = labels.split("=")
            assert key == "outcome"
            assert value.strip('"') in OUTCOMES
    assert metrics['hushcc_node_requests_total{outcome="completed"}'] >= 1  # positive twin


def test_audit_log_has_only_registered_events_n5(node: NodeProcess) -> None:
    from node.audit import EVENTS  # noqa: PLC0415

    lines = node.audit_lines()
    assert {e["event"] for e in lines} <= set(EVENTS)
    assert any(e["event"] == "node.started" for e in lines)


def test_oversize_declared_body_413_without_reading_g11(tight_node: NodeProcess) -> None:
    port = int(tight_node.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"POST /ohttp HTTP/1.1\r\nHost: x\r\nContent-Type: message/ohttp-req\r\n"
                  b"Content-Length: 100000000\r\n\r\n")
        assert s.recv(100).startswith(b"HTTP/1.1 413")


def test_oversize_chunked_body_aborted_g11(tight_node: NodeProcess) -> None:
    port = int(tight_node.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"POST /ohttp HTTP/1.1\r\nHost: x\r\nContent-Type: message/ohttp-req\r\n"
                  b"Transfer-Encoding: chunked\r\n\r\n")
        piece = b"1000\r\n" + b"a" * 4096 + b"\r\n"
        s.sendall(piece * 2)  # limit + one chunk: the node answers without waiting for more
        assert s.recv(100).startswith(b"HTTP/1.1 413")


def test_absolute_receipt_deadline_408(tight_node: NodeProcess) -> None:
    port = int(tight_node.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"POST /ohttp HTTP/1.1\r\nHost: x\r\nContent-Type: message/ohttp-req\r\n"
                  b"Content-Length: 100\r\n\r\n")
        started = time.monotonic()
        for _ in range(6):  # a trickle keeps an idle timer alive, not an absolute deadline
            s.sendall(b"a")
            time.sleep(0.3)
        assert s.recv(100).startswith(b"HTTP/1.1 408")
        assert time.monotonic() - started < 3.0


def test_concurrency_limit_fast_503(tight_node: NodeProcess) -> None:
    port = int(tight_node.url.rsplit(":", 1)[1])
    held = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(2)]
    try:
        for s in held:
            s.sendall(b"POST /ohttp HTTP/1.1\r\nHost: x\r\nContent-Type: message/ohttp-req\r\n"
                      b"Content-Length: 100\r\n\r\n")
        time.sleep(0.2)
        started = time.monotonic()
        answer = post_sync(tight_node, b"x" * 10, REQ)
        assert answer.status == 503
        assert time.monotonic() - started < 0.5
    finally:
        for s in held:
            s.close()
    time.sleep(1.2)
    assert post_sync(tight_node, b"x" * 10, REQ).status == 422  # positive twin: admitted


def test_rotated_key_422_after_grace_k5(tight_node: NodeProcess) -> None:
    old = tight_node.key_config()
    deadline = time.monotonic() + 15
    while tight_node.key_config() == old and time.monotonic() < deadline:
        time.sleep(0.2)
    new = tight_node.key_config()
    assert new.key_id != old.key_id
    body, _ = seal(new, inner(CHAT, chat("x", max_tokens=2)), chunked=False)
    assert post_sync(tight_node, body, REQ).status == 200
    time.sleep(1.5)  # past the grace period of the old key
    body, _ = seal(old, inner(CHAT, chat("x", max_tokens=2)), chunked=False)
    answer = post_sync(tight_node, body, REQ)
    assert answer.status == 422
    events = [e["event"] for e in tight_node.audit_lines()]
    assert "key.rotated" in events
    assert "key.retired" in events


def test_client_disconnect_cancels_in_engine_e5(node: NodeProcess) -> None:
    before = node.metrics()["hushcc_engine_cancelled_total"]
    body, _ = seal(node.key_config(), inner(CHAT, chat("long", stream=True, max_tokens=400)),
                   chunked=True)

    async def go() -> None:
        async with aiohttp.ClientSession() as session, session.post(
                node.url + "/ohttp", data=body, headers={"Content-Type": CREQ}) as response:
            await response.content.readany()  # the head: generation is under way
            response.close()  # disconnect mid-stream

    asyncio.run(go())
    deadline = time.monotonic() + 20
    while node.metrics()["hushcc_engine_cancelled_total"] == before:
        assert time.monotonic() < deadline, "the sequence was not cancelled"
        time.sleep(0.1)
    metrics = node.metrics()
    assert metrics["hushcc_engine_running"] == 0


def test_sigterm_drains_then_replay_after_restart_fails_g4(model_dir: Path, tmp_path: Path) -> None:
    started = start_node(tmp_path / "run", "--model", str(model_dir))
    try:
        body, ctx = seal(started.key_config(), inner(CHAT, chat("drain", max_tokens=48)),
                         chunked=False)

        async def go() -> bytes:
            async with aiohttp.ClientSession() as session:
                task = asyncio.create_task(post(session, started, body, REQ))
                await asyncio.sleep(0.3)
                started.process.send_signal(signal.SIGTERM)
                answer = await task
                return b"".join(answer.chunks)

        response = open_whole(ctx, asyncio.run(go()))
        assert response.status == 200  # the in-flight request was served to its end
        assert json.loads(response.content)["choices"][0]["finish_reason"] in ("stop", "length")
        assert started.process.wait(timeout=60) == 0
        # G4: the same request replayed to the restarted node: per-boot keys, so it cannot open
        restarted = start_node(tmp_path / "again", "--model", str(model_dir))
        try:
            replayed = post_sync(restarted, body, REQ)
            assert replayed.status == 400
            assert replayed.chunks == []  # plain, no detail
            assert restarted.metrics()['hushcc_node_requests_total{outcome="submitted"}'] == 0
        finally:
            assert restarted.stop() == 0
    finally:
        started.stop(signal.SIGKILL)


def test_no_canary_anywhere_after_sigkill_n1(model_dir: Path, tmp_path: Path) -> None:
    started = start_node(tmp_path / "run", "--model", str(model_dir))
    canary = "zebra-canary-" + base64.b32encode(random.randbytes(10)).decode()
    try:
        config = started.key_config()
        body, ctx = seal(config, inner(COMPLETIONS, {"prompt": canary, "echo": True,
                                                     "max_tokens": 4}), chunked=False)
        assert canary in json.loads(open_whole(
            ctx, b"".join(post_sync(started, body, REQ).chunks)).content)["choices"][0]["text"]
        for bad in ({"messages": [{"role": canary, "content": "x"}]},
                    {"messages": [{"role": "user", "content": canary}], "max_tokens": 10**6},
                    {"messages": [{"role": "user", "content": canary}], "stop": [{canary: 1}]}):
            body, ctx = seal(config, inner(CHAT, bad), chunked=False)  # N4: error paths
            error = open_whole(ctx, b"".join(post_sync(started, body, REQ).chunks))
            assert error.status == 400
            assert canary.encode() not in error.content
        metrics_text = json.dumps(started.metrics())
        body, _ = seal(config, inner(CHAT, chat(canary, max_tokens=400, stream=True)),
                       chunked=True)

        async def go() -> None:
            async with aiohttp.ClientSession() as session, session.post(
                    started.url + "/ohttp", data=body, headers={"Content-Type": CREQ}) as r:
                await r.content.readany()
                started.process.kill()  # SIGKILL mid-request
        asyncio.run(go())
    finally:
        started.stop(signal.SIGKILL)
    forms = [canary.encode(), canary.encode("utf-16-le"), canary.encode("utf-16-be"),
             base64.b64encode(canary.encode()), canary.encode().hex().encode()]
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.name.endswith(".stderr") for p in files)  # the node's log is searched too
    for path in files:
        data = path.read_bytes()
        assert not any(f in data for f in forms), "canary found in a file the node could write"
    assert not any(f.decode() in metrics_text for f in forms)


def test_node_runs_under_memory_hygiene(node: NodeProcess) -> None:
    from node.hygiene import LIBRARY, OTHER_SETTINGS  # noqa: PLC0415

    # /proc/PID/environ is the environment the node was re-executed with; its maps show the
    # library really loaded, and its audit log says which way it erases freed memory.
    pid = node.process.pid
    raw = (Path("/proc") / str(pid) / "environ").read_bytes()
    environ = dict(item.split("=", 1) for item in raw.decode().split("\0") if "=" in item)
    for name, value in OTHER_SETTINGS.items():
        assert environ.get(name) == value
    assert environ["LD_PRELOAD"].split()[0] == str(LIBRARY)
    assert str(LIBRARY) in (Path("/proc") / str(pid) / "maps").read_text()
    modes = [e["mode"] for e in node.audit_lines() if e["event"] == "node.memory_hygiene"]
    assert modes == ["erase_on_free"]
    mine = (Path("/proc") / "self" / "environ").read_bytes().decode()
    assert "PYTHONMALLOC=malloc" not in mine  # twin: the test process was not re-executed
