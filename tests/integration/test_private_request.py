"""A private request end to end: the SDK verifies everything, then sends through the relay.

Every service is a real process (`tests.integration.system`); the client is the SDK as a user
runs it. Each refusal has its positive twin in the same module: the same client, uncorrupted,
does send and does get an answer.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from typing import TYPE_CHECKING, Any

import pytest

from app.cli import main as hushcc
from client.session import RefusedToSendError
from client.transport import AiohttpTransport, Reply, StreamHead, Transport, TransportError
from client.types import ChatCompletion, ChatCompletionChunk
from hushcc.errors import DecryptError
from tests.integration.system import (
    ISSUER_NAME,
    ORIGIN_NAME,
    System,
    log_release,
    node_measurement,
    running_system,
)
from tests.relay.relay_helpers import start

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterator, Mapping
    from pathlib import Path

    from client.verification import DirectoryReport

MODEL = "tiny"
CANARY = "canary-7f3a9c-do-not-leak"


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    with running_system(tmp_path_factory.mktemp("system"), nodes=2) as started:
        yield started


class Recorder(Transport):
    """The real transport, recording every byte that leaves and optionally rewriting answers."""

    def __init__(self, rewrite: Callable[[str, bytes], bytes] | None = None) -> None:
        self.inner = AiohttpTransport()
        self.sent: list[tuple[str, bytes]] = []
        self.rewrite = rewrite

    async def get(self, url: str, *, headers: Mapping[str, str] | None = None) -> Reply:
        self.sent.append((url, b""))
        reply = await self.inner.get(url, headers=headers)
        if self.rewrite is None:
            return reply
        return Reply(reply.status, reply.headers, self.rewrite(url, reply.body))

    async def post(self, url: str, body: bytes, *, headers: Mapping[str, str]) -> Reply:
        self.sent.append((url, body))
        return await self.inner.post(url, body, headers=headers)

    async def post_stream(self, url: str, body: bytes, *, headers: Mapping[str, str]
                          ) -> AsyncIterator[StreamHead | bytes]:
        self.sent.append((url, body))
        async for item in self.inner.post_stream(url, body, headers=headers):
            yield item

    async def close(self) -> None:
        await self.inner.close()

    def ohttp_posts(self) -> list[bytes]:
        return [body for url, body in self.sent if url.endswith("/ohttp")]


def ask(system: System, *, transport: Transport | None = None, stream: bool = False,
        state_dir: Path | None = None, **kwargs: Any) -> str:
    async def go() -> str:
        client = system.client(state_dir, transport=transport, **kwargs)
        try:
            answer = await client.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": f"say {CANARY}"}],
                stream=stream, max_tokens=6, temperature=0)
            if isinstance(answer, ChatCompletion):
                assert answer.choices[0].finish_reason in {"stop", "length"}
                return answer.choices[0].message.content or ""
            chunks = [chunk async for chunk in answer]
            assert all(isinstance(c, ChatCompletionChunk) for c in chunks)
            return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        finally:
            await client.close()
    return asyncio.run(go())


def test_verify_reports_every_step_of_every_node(system: System, tmp_path: Path) -> None:
    async def go() -> None:
        client = system.client(tmp_path)
        try:
            report = await client.verify()
        finally:
            await client.close()
        assert len(report.usable) == 2
        assert {n.node_id for n in report.nodes} == set(system.node_ids)
        names = [step.name for step in report.nodes[0].report.steps]
        for wanted in ("(0) parse", "(3) binding", "(4) measurement", "(5) log inclusion",
                       "(7) log view"):
            assert any(name.startswith(wanted) for name in names), wanted
        assert "VERIFIED" in report.render() or "2 of 2" in report.render()
    asyncio.run(go())


def test_a_whole_and_a_streamed_answer_arrive(system: System, tmp_path: Path) -> None:
    recorder = Recorder()
    whole = ask(system, transport=recorder, state_dir=tmp_path)
    streamed = ask(system, transport=Recorder(), stream=True, state_dir=tmp_path)
    assert whole
    assert streamed
    # the relay saw one sealed request; no plaintext byte left the client
    assert len(recorder.ohttp_posts()) == 1
    assert all(CANARY.encode() not in body for _, body in recorder.sent)


def test_state_is_only_the_checkpoint_and_unspent_tokens_c3(system: System,
                                                             tmp_path: Path) -> None:
    ask(system, state_dir=tmp_path)
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["checkpoint", "tokens.json"]
    for path in tmp_path.iterdir():
        assert path.stat().st_mode & 0o777 == 0o600
        assert CANARY.encode() not in path.read_bytes()
    tokens = json.loads((tmp_path / "tokens.json").read_text())["tokens"]
    assert len(tokens) == 3  # a batch of 4, one spent


def _corrupt_bundle(field: str) -> Callable[[str, bytes], bytes]:
    def rewrite(url: str, body: bytes) -> bytes:
        if not url.endswith("/v1/nodes"):
            return body
        doc = json.loads(body)
        for bundle in doc["nodes"]:
            if field == "key_config":
                raw = bytearray(base64.b64decode(bundle["key_config"]))
                raw[10] ^= 1
                bundle["key_config"] = base64.b64encode(bytes(raw)).decode()
            elif field == "inclusion_proof":
                proof = bundle["release"]["inclusion_proof"]
                bundle["release"]["index"] = bundle["release"]["index"] + 1
                bundle["release"]["inclusion_proof"] = proof
            elif field == "cpu_evidence":
                raw = bytearray(base64.b64decode(bundle["cpu"]["evidence"]))
                raw[100] ^= 1
                bundle["cpu"]["evidence"] = base64.b64encode(bytes(raw)).decode()
            elif field == "not_after":
                bundle["not_after"] = "2099-01-01T00:00:00Z"
        return json.dumps(doc).encode()
    return rewrite


@pytest.mark.parametrize("field", ["key_config", "inclusion_proof", "cpu_evidence", "not_after"])
def test_a_corrupted_step_sends_nothing_c2(system: System, tmp_path: Path, field: str) -> None:
    recorder = Recorder(_corrupt_bundle(field))
    with pytest.raises(RefusedToSendError, match="verification"):
        ask(system, transport=recorder, state_dir=tmp_path)
    assert recorder.ohttp_posts() == []
    assert all(CANARY.encode() not in body for _, body in recorder.sent)


def test_the_uncorrupted_twin_does_send_c2(system: System, tmp_path: Path) -> None:
    recorder = Recorder(lambda url, body: body)
    assert ask(system, transport=recorder, state_dir=tmp_path)
    assert len(recorder.ohttp_posts()) == 1


class Faulty(Recorder):
    """The relay's directory or the issuer fails in one way."""

    def __init__(self, where: str, fault: str) -> None:
        super().__init__()
        self.where, self.fault = where, fault

    async def get(self, url: str, *, headers: Mapping[str, str] | None = None) -> Reply:
        if self.where in url:
            self.sent.append((url, b""))
            if self.fault == "timeout":
                raise TransportError("GET timed out (TimeoutError)")
            reply = await self.inner.get(url, headers=headers)
            if self.fault == "500":
                return Reply(500, {}, b"")
            return Reply(reply.status, reply.headers, reply.body[: len(reply.body) // 2])
        return await super().get(url, headers=headers)


@pytest.mark.parametrize("where", ["/v1/nodes", "private-token-issuer-directory"])
@pytest.mark.parametrize("fault", ["timeout", "500", "truncated"])
def test_infrastructure_faults_fail_closed_a8(system: System, tmp_path: Path, where: str,
                                               fault: str) -> None:
    faulty = Faulty(where, fault)
    with pytest.raises(RefusedToSendError):
        ask(system, transport=faulty, state_dir=tmp_path)
    assert faulty.ohttp_posts() == []


def test_a_skewed_clock_is_corrected_once_with_a_new_context_c3(system: System,
                                                                 tmp_path: Path) -> None:
    recorder = Recorder()
    answer = ask(system, transport=recorder, state_dir=tmp_path,
                 clock=lambda: time.time() + 600)  # the client's clock is ten minutes ahead
    assert answer
    posts = recorder.ohttp_posts()
    assert len(posts) == 2  # the refused one and the corrected one, nothing else
    assert posts[0][7:39] != posts[1][7:39]  # a new HPKE context: a different enc


def _steps(system: System) -> list[float]:
    return [node.metrics()["hushcc_engine_steps_total"] for node in system.nodes]


def test_both_nodes_serve_over_many_requests(system: System, tmp_path: Path) -> None:
    before = _steps(system)

    async def go() -> None:
        client = system.client(tmp_path)  # the default choice: uniform, from the OS's entropy
        try:
            for _ in range(16):
                await client.chat.completions.create(
                    model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=2)
        finally:
            await client.close()
    asyncio.run(go())
    after = _steps(system)
    assert all(b > a for a, b in zip(before, after, strict=True))  # P(one idle) = 2 * 2**-16


class Altering(Recorder):
    """A relay that flips one bit of every answer it passes on."""

    async def post(self, url: str, body: bytes, *, headers: Mapping[str, str]) -> Reply:
        reply = await super().post(url, body, headers=headers)
        if not url.endswith("/ohttp"):
            return reply
        altered = bytearray(reply.body)
        altered[-1] ^= 1
        return Reply(reply.status, reply.headers, bytes(altered))

    async def post_stream(self, url: str, body: bytes, *, headers: Mapping[str, str]
                          ) -> AsyncIterator[StreamHead | bytes]:
        async for item in super().post_stream(url, body, headers=headers):
            if isinstance(item, StreamHead) or not url.endswith("/ohttp"):
                yield item
            else:
                yield item[:-1] + bytes([item[-1] ^ 1])


@pytest.mark.parametrize("stream", [False, True])
def test_an_altering_relay_is_detected_c4(system: System, tmp_path: Path, stream: bool) -> None:
    with pytest.raises(DecryptError) as caught:
        ask(system, transport=Altering(), stream=stream, state_dir=tmp_path)
    assert str(caught.value) == DecryptError.MESSAGE  # opaque: no detail


def test_a_forked_log_is_refused_with_both_checkpoints_l3(system: System,
                                                          tmp_path: Path) -> None:
    state = tmp_path / "state"
    assert ask(system, state_dir=state)  # the honest view is now persisted
    honest_note = (state / "checkpoint").read_bytes()
    workdir = system.workdir
    fork = start(["log", "serve", "--host", "127.0.0.1", "--port", "0", "--state-dir",
                  str(tmp_path / "fork"), "--log-key", str(workdir / "log.key"),
                  "--release-key", str(workdir / "release.key.pub")], tmp_path, "fork")
    try:
        log_release(workdir, fork.url, bytes(48), name="other")  # the fork's history differs
        forked = json.loads(log_release(workdir, fork.url, node_measurement(workdir),
                                        name="forked").read_text())

        def staple_forked(url: str, body: bytes) -> bytes:
            if not url.endswith("/v1/nodes"):
                return body
            doc = json.loads(body)
            for bundle in doc["nodes"]:
                bundle["release"] = forked
            return json.dumps(doc).encode()

        async def verify(log_url: str) -> DirectoryReport:
            client = system.client(state, transport=Recorder(staple_forked), log_url=log_url)
            try:
                return await client.verify()
            finally:
                await client.close()

        # The log shows this client the forked history: refused, both checkpoints as evidence.
        report = asyncio.run(verify(fork.url))
        assert report.usable == ()
        assert report.log_step is not None
        assert report.log_step.reason.startswith("FORK")
        assert report.fork_evidence is not None
        assert report.fork_evidence[0] == honest_note
        assert report.fork_evidence[1].splitlines()[:3] == forked["checkpoint"].encode(
            ).splitlines()[:3]
        # The honest log, but nodes staple the fork's checkpoint: refused at the log view.
        report = asyncio.run(verify(system.log.url))
        assert report.usable == ()
        assert report.log_step is not None
        assert report.log_step.passed
        for node in report.nodes:
            failure = node.report.first_failure
            assert failure is not None
            assert failure.name == "(7) log view"
        assert (state / "checkpoint").read_bytes() == honest_note  # never replaced by the fork
    finally:
        assert fork.stop() == 0


def _client_config(system: System, tmp_path: Path) -> Path:
    config = tmp_path / "client.toml"
    config.write_text(
        f'relay_url = "{system.relay.url}"\nissuer_url = "{system.issuer.url}"\n'
        f'log_url = "{system.log.url}"\nlog_key = "{system.log_key}"\n'
        f'policy = "{system.policy_path}"\nissuer_key = "{system.issuer_pub}"\n'
        f'issuer_name = "{ISSUER_NAME}"\norigin_name = "{ORIGIN_NAME}"\n'
        f'api_key_file = "{system.api_key_file}"\nmodel = "{MODEL}"\n')
    return config


def test_hushcc_verify_and_ask_from_the_terminal(system: System, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    config = _client_config(system, tmp_path)
    assert hushcc(["verify", "--config", str(config)]) == 0
    table = capsys.readouterr().out
    assert "2 of 2 node(s) verified" in table
    assert "(7) log view" in table
    assert "FAIL" not in table
    assert hushcc(["ask", "hello", "--config", str(config), "--stream", "--max-tokens", "4"]
                  ) == 0
    out, err = capsys.readouterr()
    assert out.strip()
    assert "verified 2 of 2 node(s)" in err
    assert sorted(p.name for p in (tmp_path / "state").iterdir()) == ["checkpoint",
                                                                     "tokens.json"]


def test_hushcc_ask_refuses_with_one_line_when_nothing_verifies(
        system: System, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = _client_config(system, tmp_path)
    strict = tmp_path / "strict.toml"
    strict.write_text(f'log_key = "{system.log_key}"\n')  # simulated TEEs not allowed
    config.write_text(config.read_text().replace(str(system.policy_path), str(strict)))
    assert hushcc(["ask", "hello", "--config", str(config)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("hushcc: error: nothing was sent: verification failed")


def test_the_sync_client_reads_like_openai_python(system: System, tmp_path: Path) -> None:
    from attestation.policy import load_policy  # noqa: PLC0415
    from client.attest import PolicyVerifier  # noqa: PLC0415
    from client.session import Client, TokenSettings  # noqa: PLC0415
    from relay.issuer_keys import read_pinned_key  # noqa: PLC0415

    policy = load_policy(system.policy_path)
    tokens = TokenSettings(read_pinned_key(system.issuer_pub), ISSUER_NAME, ORIGIN_NAME,
                           system.api_key_file.read_text().strip())
    with Client(system.relay.url, system.issuer.url, system.log_key, policy, tokens=tokens,
                verifier=PolicyVerifier.from_policy(policy, system.log_key),
                log_url=system.log.url, state_dir=tmp_path) as client:
        assert len(client.verify().usable) == 2
        completion = client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=3)
        assert isinstance(completion, ChatCompletion)
        assert completion.choices[0].message.role == "assistant"
        assert completion.usage is not None
        assert completion.usage.completion_tokens <= 3
        stream = client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=3,
            stream=True)
        chunks = list(stream)  # type: ignore[arg-type]
        assert chunks
        assert all(isinstance(chunk, ChatCompletionChunk) for chunk in chunks)
        assert chunks[-1].choices[-1].finish_reason in {"stop", "length"}
