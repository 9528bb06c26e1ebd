"""`hushcc demo`: the end-to-end demonstration a newcomer runs with `make demo`.

What exists is run for real, on loopback, in a temporary directory that is removed afterwards:

1. a transparency log server (`hushcc log serve`, a subprocess) receives this node's release
   entry, signed with a release key, and returns a signed checkpoint and inclusion proof;
2. the sealed node (`hushcc node serve`, a subprocess, simulated TEE) starts: it makes its HPKE
   key in memory, fetches its release proof from the log, and serves an attestation bundle binding
   that key to its self-measurement (SEV-SNP report format + simulated H100 evidence);
3. the client fetches the bundle from the node and verifies it step by step before it sends a
   byte, and shows that a node running modified code (a measurement not in the log) is refused;
4. the client encrypts a chat request to the verified key (chunked OHTTP) and posts it to the
   node; the node opens it, runs its one engine, and streams encrypted chunks back, one per SSE
   event; the client decrypts them.

Components still to come (relay, SDK, image) are named at the end. The demo
prints public facts (sizes, digests, key ids, the verification report) and, on the client side
only, the decrypted answer — the one party allowed to see it.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from hushcc.cliparse import short_text
from hushcc.errors import HushError

if TYPE_CHECKING:
    import argparse
    from collections.abc import AsyncIterator, Callable, Iterator

    from attestation.bundle import Release
    from attestation.verify_bundle import VerifiedBundle
    from hushcc.cliparse import OneLineErrorParser

NOT_BUILT = (
    "relay with Privacy Pass tokens (`hushcc relay serve`)",
    "client SDK (`hushcc ask`: directory, random node choice, verify-then-send)",
    "reproducible image build (`hushcc image build`)",
)


class DemoError(HushError):
    """A demo stage did not behave as the system promises."""


DEMO_QUESTION = "In one sentence, what does a transparency log guarantee?"
MAX_QUESTION = 2000  # characters; the tiny default model's context is what bounds it in practice


@dataclass(slots=True)
class DemoState:
    """What one stage hands to the next."""

    workdir: Path
    question: str = DEMO_QUESTION
    log_key: str = ""
    log_url: str = ""
    measurement: bytes = b""
    stapled: Release | None = None
    node_url: str = ""
    bundle: bytes = b""
    verified: VerifiedBundle | None = None


def _say(text: str) -> None:
    print(f"   {text}", flush=True)


def _start_log_server(
    state: DemoState, log_key_file: Path, release_pub: str
) -> subprocess.Popen[str]:
    command = [sys.executable, "-m", "app", "log", "serve", "--host", "127.0.0.1",
               "--port", "0", "--state-dir", str(state.workdir / "log"),
               "--log-key", str(log_key_file), "--release-key", release_pub]
    server = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)  # noqa: S603
    ready = server.stdout.readline().strip() if server.stdout else ""
    if not ready.startswith("listening on "):
        server.terminate()
        raise DemoError("the log server did not start")
    state.log_url = ready.removeprefix("listening on ")
    return server


@contextlib.contextmanager
def stage_log(state: DemoState) -> Iterator[None]:
    """(1) Start a log server and log this node's release entry; it serves until the demo ends."""
    from attestation.bundle import Release  # noqa: PLC0415
    from attestation.measure import measure_sources, source_root  # noqa: PLC0415
    from attestation.simulated_node import release_entry  # noqa: PLC0415
    from transparency_log.entry import ReleaseEntry, sign_entry  # noqa: PLC0415
    from transparency_log.keys import write_key_pair  # noqa: PLC0415
    from transparency_log.note import Signer  # noqa: PLC0415

    log_key_file = state.workdir / "log.key"
    write_key_pair(log_key_file, Signer.generate("demo.hushcc/log"))
    release_signer = Signer.generate("demo.hushcc/release")
    write_key_pair(state.workdir / "release.key", release_signer)
    state.log_key = (state.workdir / "log.key.pub").read_text().strip()
    release_pub = (state.workdir / "release.key.pub").read_text().strip()
    server = _start_log_server(state, log_key_file, release_pub)
    try:
        measured, files = measure_sources(source_root())
        state.measurement = measured.digest
        _say(f"log server {state.log_url}, key {state.log_key.split('+')[0]}")
        _say(f"node self-measurement over {len(files)} files: {state.measurement.hex()[:32]}...")
        entry = ReleaseEntry.from_bytes(release_entry(state.measurement))
        signed = sign_entry(entry, release_signer)
        add = urllib.request.Request(f"{state.log_url}/add", data=signed, method="POST")  # noqa: S310 - loopback URL our own server printed
        with urllib.request.urlopen(add, timeout=30) as response:  # noqa: S310 - same
            reply = json.loads(response.read())
        state.stapled = Release(
            entry.to_bytes(), int(reply["index"]), str(reply["checkpoint"]),
            tuple(base64.b64decode(h) for h in reply["inclusion_proof"]))
        checkpoint = state.stapled.checkpoint.splitlines()
        _say(f"release entry logged at index {state.stapled.index}; "
             f"checkpoint tree size {checkpoint[1]}, root {checkpoint[2][:16]}...")
        yield
    finally:
        server.terminate()
        server.wait(timeout=30)


def _start_node(state: DemoState, release_file: Path) -> subprocess.Popen[str]:
    command = [sys.executable, "-m", "app", "node", "serve", "--host", "127.0.0.1", "--port",
               "0", "--tee", "simulated", "--release", str(release_file),
               "--log-url", state.log_url]
    node = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,  # noqa: S603
                            text=True)
    ready = node.stdout.readline().strip() if node.stdout else ""
    if not ready.startswith("listening on "):
        node.terminate()
        raise DemoError("the node did not start")
    state.node_url = ready.removeprefix("listening on ")
    return node


@contextlib.contextmanager
def stage_node(state: DemoState) -> Iterator[None]:
    """(2) Start the sealed node; it serves its bundle and requests until the demo ends."""
    from attestation.bundle import Bundle  # noqa: PLC0415
    from ohttp.keyconfig import parse_key_configs  # noqa: PLC0415

    if state.stapled is None:
        raise DemoError("the release was not logged")
    release_file = state.workdir / "release.json"  # entry + index; the node fetches the proof
    release_file.write_text(json.dumps({
        "entry": base64.b64encode(state.stapled.entry).decode(), "index": state.stapled.index}))
    node = _start_node(state, release_file)
    try:
        with urllib.request.urlopen(state.node_url + "/attestation", timeout=30) as response:  # noqa: S310 - loopback URL our own node printed
            state.bundle = response.read()
        bundle = Bundle.from_json(state.bundle)
        key = parse_key_configs(bundle.key_config)[0]
        _say(f"node {state.node_url}: `hushcc node serve`, one engine, keys made in memory")
        _say(f"OHTTP key id {key.key_id} ({len(bundle.key_config)}-byte key config)")
        _say(f"attestation bundle: simulated SEV-SNP report + {len(bundle.gpu)} simulated H100, "
             f"{len(state.bundle)} bytes, node {bundle.node_id.hex()[:16]}...")
        yield
    finally:
        node.terminate()
        node.wait(timeout=60)


def _verify(state: DemoState, bundle: bytes) -> VerifiedBundle:
    from attestation.gpu import GpuPolicy  # noqa: PLC0415
    from attestation.gpu.simulated import SimulatedGpu  # noqa: PLC0415
    from attestation.policy import Policy  # noqa: PLC0415
    from attestation.simulated import WITH_SIMULATED  # noqa: PLC0415
    from attestation.verify_bundle import StapledLogVerifier, verify_bundle  # noqa: PLC0415

    now = datetime.now(UTC)
    policy = Policy(allow_simulated=True, log_key=state.log_key)
    return verify_bundle(
        bundle, policy=policy, now=now, log=StapledLogVerifier(state.log_key, now),
        gpu_policy=GpuPolicy(reference_measurements=SimulatedGpu().reference_measurements()),
        cpu_trust=WITH_SIMULATED)


def stage_verify(state: DemoState) -> None:
    """(3) The client verifies the bundle, then sees a node with modified code refused."""
    from attestation.gpu.simulated import SimulatedGpu  # noqa: PLC0415
    from attestation.report import AttestationError  # noqa: PLC0415
    from attestation.simulated_node import simulated_bundle  # noqa: PLC0415

    state.verified = _verify(state, state.bundle)
    for line in state.verified.report.render().splitlines():
        _say(line)
    # The same genuine log proof, stapled by a node whose code (so measurement) differs.
    modified_code = bytes(48)
    tampered = simulated_bundle(key_config=state.verified.key_config, measurement=modified_code,
                                now=datetime.now(UTC), gpus=[SimulatedGpu()],
                                release=state.stapled)
    try:
        _verify(state, tampered.to_json())
    except AttestationError as refused:
        _say(f"a node running other code is refused: {refused}")
    else:
        raise DemoError("a bundle with an unlogged measurement was accepted")


def _client_request(question: str) -> bytes:
    """The client's inner request: OpenAI-style chat JSON as binary HTTP (RFC 9292)."""
    from ohttp.bhttp import Request, encode_request  # noqa: PLC0415

    body = json.dumps({"model": "smollm2-135m-instruct", "stream": True, "max_tokens": 40,
                       "temperature": 0,
                       "messages": [{"role": "user", "content": question}]}).encode()
    return encode_request(Request(b"POST", b"https", b"node.hushcc.invalid",
                                  b"/v1/chat/completions",
                                  headers=((b"content-type", b"application/json"),),
                                  content=body))


async def _node_answer(state: DemoState, encrypted_request: bytes) -> AsyncIterator[bytes]:
    """POST the encapsulated request to the node; yield each chunk as the node flushed it."""
    import aiohttp  # noqa: PLC0415

    from ohttp.chunked import REQUEST_MEDIA_TYPE  # noqa: PLC0415

    async with aiohttp.ClientSession() as session, session.post(
            state.node_url + "/ohttp", data=encrypted_request,
            headers={"Content-Type": REQUEST_MEDIA_TYPE}) as response:
        if response.status != 200:
            raise DemoError(f"the node answered HTTP {response.status}")
        buffer = b""
        async for data, end_of_chunk in response.content.iter_chunks():
            buffer += data
            if end_of_chunk and buffer:
                yield buffer
                buffer = b""


def stage_ask(state: DemoState) -> None:
    """(4) Encrypt a chat request to the verified key; stream and decrypt the answer."""
    import asyncio  # noqa: PLC0415

    from ohttp.bhttp_stream import ResponseStreamDecoder  # noqa: PLC0415
    from ohttp.chunked import ChunkedRequestEncoder, ChunkedResponseDecoder  # noqa: PLC0415
    from ohttp.keyconfig import parse_key_configs  # noqa: PLC0415

    if state.verified is None:
        raise DemoError("the node was not verified")
    config = parse_key_configs(state.verified.key_config)[0]
    _say(f"client asks: {state.question}")
    sender = ChunkedRequestEncoder(config)
    encrypted = sender.final(_client_request(state.question))
    _say(f"client -> node: {len(encrypted)} encrypted bytes, chunked OHTTP to key {config.key_id}")
    opener, reader = ChunkedResponseDecoder(sender.context), ResponseStreamDecoder()
    answer: list[str] = []

    async def converse() -> int:
        chunks = 0
        async for sealed in _node_answer(state, encrypted):
            chunks += 1
            for piece in opener.feed(sealed):
                answer.extend(_sse_text(event) for event in reader.feed(piece))
        for piece in [opener.finish()]:
            answer.extend(_sse_text(event) for event in [*reader.feed(piece), *reader.finish()])
        return chunks

    chunks = asyncio.run(converse())
    _say(f"node -> client: {chunks} encrypted chunks, one per SSE event")
    _say(f"client decrypted: {''.join(answer).strip()}")


def _sse_text(event: object) -> str:
    """The text of the SSE `data:` events in one decoded content chunk."""
    if not isinstance(event, bytes):
        return ""
    text = []
    for line in event.decode().splitlines():
        data = line.removeprefix("data: ")
        if line.startswith("data: ") and data != "[DONE]":
            text.append(json.loads(data)["choices"][0]["delta"]["content"])
    return "".join(text)


def _stages() -> list[tuple[str, Callable[[DemoState], object]]]:
    return [
        ("transparency log: a real log server on loopback", stage_log),
        ("sealed node (simulated TEE): `hushcc node serve` + attestation bundle", stage_node),
        ("client: verify the node before sending a byte", stage_verify),
        ("request: chunked OHTTP -> node -> engine (SmolLM2-135M) -> encrypted stream",
         stage_ask),
    ]


def run_demo(question: str = DEMO_QUESTION) -> int:
    """Run every built stage in a temporary directory; report what is not built yet."""
    os.environ.setdefault("TQDM_DISABLE", "1")  # model loading's progress bars (read at import)
    with tempfile.TemporaryDirectory(prefix="hushcc-demo-") as tmp:
        state = DemoState(Path(tmp), question)
        with contextlib.ExitStack() as servers:  # stages that start a server keep it up
            for title, stage in _stages():
                print(f"== {title}", flush=True)
                started = stage(state)
                if isinstance(started, contextlib.AbstractContextManager):
                    servers.enter_context(started)
    for title in NOT_BUILT:
        print(f"-- not built yet: {title}")
    return 0


def _handle(args: argparse.Namespace) -> int:
    return run_demo(args.question)


def register(subparsers: argparse._SubParsersAction[OneLineErrorParser]) -> None:
    """Add `hushcc demo`."""
    demo = subparsers.add_parser(
        "demo", help="run the end-to-end demo on loopback",
        description="Run hushcc end to end on loopback in a temporary directory: a transparency "
        "log server, a node in the simulated TEE with an attestation bundle, a client that "
        "verifies it (and refuses a node running modified code), then one encrypted chat "
        "request answered by the in-memory engine (SmolLM2-135M-Instruct) and decrypted on "
        "the client side only.")
    demo.add_argument("--question", type=short_text(MAX_QUESTION), default=DEMO_QUESTION,
                      help=f"what the client asks (default: {DEMO_QUESTION!r})")
    demo.set_defaults(handler=_handle)


if __name__ == "__main__":
    sys.exit(run_demo())
