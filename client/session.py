"""The SDK: `AsyncClient` and `Client`, openai-python's shape over verify-then-send.

```python
client = Client(relay_url, issuer_url, log_key, policy, tokens=TokenSettings(...))
report = client.verify()                      # every node, every step
answer = client.chat.completions.create(model="...", messages=[...])
for chunk in client.chat.completions.create(model="...", messages=[...], stream=True):
    print(chunk.choices[0].delta.content or "", end="")
```

One request (DESIGN.md data flow): (1) the relay's directory, every bundle verified, the log
view checked (`client.verification`); (2) a node chosen uniformly at random among the verified
ones; (3) a token from the wallet (refilled from the issuer in batches); (4) the request sealed
with a fresh HPKE context and sent through the relay (`client.exchange`); (5) the answer opened
as it arrives. A failed step before (4) raises `RefusedToSendError` naming the step, and no byte
of the request has left the machine (SECURITY.md C2, A8). The only retry is the one Date
correction RFC 9458 §6.5.2 allows, with a new context and a new token (C3).

Invariants: verification results are reused only until the earliest `not_after` of the verified
bundles or `reverify_after`, whichever comes first; nothing about requests is kept.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Self

from client import inner
from client.exchange import exchange_stream, exchange_whole, ohttp_url
from client.sse import SseDecoder
from client.tokens import TokenWallet
from client.transport import AiohttpTransport, TransportError
from client.types import ChatCompletion, ChatCompletionChunk
from client.verification import verify_directory
from hushcc.errors import HushError, ProtocolError, VerificationError
from ohttp.bhttp_stream import ResponseHead
from ohttp.keyconfig import parse_public_key_config
from relay.redemption import relay_challenge
from transparency_log.client import FileCheckpointStore, LogClient, LogTrust, MemoryCheckpointStore

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterator
    from pathlib import Path

    from client.transport import Transport
    from client.verification import BundleVerifier, DirectoryReport, NodeResult
    from ohttp.keyconfig import KeyConfig
    from relay.issuer_keys import PinnedKey


_SYSTEM_RANDOM = random.SystemRandom()  # node choice: uniform, from the OS's entropy


class RefusedToSendError(HushError):
    """A step before sending failed; nothing of the request left the machine."""

    def __init__(self, step: str, reason: str) -> None:
        """Name the step and why (public facts only)."""
        super().__init__(f"nothing was sent: {step} failed: {reason}")
        self.step = step


@dataclass(frozen=True, slots=True)
class TokenSettings:
    """How the client gets Privacy Pass tokens: the pinned key, the challenge, its API key."""

    issuer_key: PinnedKey
    issuer_name: str
    origin_name: str
    api_key: str = ""
    batch: int = 8


class AsyncClient:
    """Verify-then-send over a relay, in openai-python's async shape (`client.chat...`)."""

    def __init__(  # noqa: PLR0913 - the pinned values of one client, all named
        self, relay_url: str, issuer_url: str, log_key: str, policy: object, *,
        tokens: TokenSettings, verifier: BundleVerifier, log_url: str | None = None,
        state_dir: Path | None = None, transport: Transport | None = None,
        reverify_after: timedelta = timedelta(minutes=5),
        clock: Callable[[], float] = time.time,
        choose: Callable[[list[NodeResult]], NodeResult] = _SYSTEM_RANDOM.choice,
    ) -> None:
        """Pin the relay, issuer, log key and policy; keep state in `state_dir` (0600 files)."""
        self.relay_url, self.issuer_url, self.log_url = relay_url, issuer_url, log_url
        self.policy = policy
        self._verify = verifier
        self._transport = transport or AiohttpTransport()
        store = (MemoryCheckpointStore() if state_dir is None
                 else FileCheckpointStore(state_dir / "checkpoint"))
        self._log = LogClient(LogTrust.from_key(log_key), store)
        self._tokens = tokens
        self._wallet = TokenWallet(
            tokens.issuer_key, relay_challenge(tokens.issuer_name, tokens.origin_name),
            path=None if state_dir is None else state_dir / "tokens.json", clock=clock)
        self._reverify_after = reverify_after
        self._clock = clock
        self._choose = choose
        self._report: DirectoryReport | None = None
        self._report_until = 0.0
        self._clock_offset = timedelta(0)
        self.chat = _AsyncChat(self)

    def __repr__(self) -> str:
        """No secrets (the API key and tokens stay out of reprs)."""
        return f"AsyncClient(relay={self.relay_url!r})"

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._clock(), UTC)

    async def verify(self) -> DirectoryReport:
        """Fetch the directory through the relay and verify every node (no request is sent).

        Raises:
            RefusedToSendError: the directory could not be fetched or is malformed.
        """
        try:
            reply = await self._transport.get(f"{self.relay_url}/v1/nodes")
        except TransportError as exc:
            raise RefusedToSendError("node directory", str(exc)) from None
        if reply.status != 200:
            raise RefusedToSendError("node directory", f"relay answered {reply.status}")
        now = self._now()
        try:
            report = await verify_directory(reply.body, verify=self._verify, log=self._log,
                                            transport=self._transport, log_url=self.log_url,
                                            now=now)
        except (ProtocolError, TransportError) as exc:
            raise RefusedToSendError("node directory", str(exc)) from None
        self._report = report
        expiries = [n.verified.not_after.timestamp() for n in report.usable if n.verified]
        self._report_until = min([now.timestamp() + self._reverify_after.total_seconds(),
                                  *expiries])
        return report

    async def _pick_node(self) -> NodeResult:
        report = self._report
        if report is None or self._clock() >= self._report_until:
            report = await self.verify()
        usable = [node for node in report.usable if node.verified is not None]
        if not usable:
            first = report.nodes[0].report.first_failure if report.nodes else None
            reason = f"{first.name}: {first.reason}" if first else "the directory is empty"
            raise RefusedToSendError("verification", f"no node passed ({reason})")
        return self._choose(usable)

    async def _authorization(self) -> str:
        token = await self._wallet.take()
        if token is None:
            try:
                await self._wallet.refill(self._transport, self.issuer_url,
                                          self._tokens.api_key, self._tokens.batch)
            except (TransportError, VerificationError) as exc:
                raise RefusedToSendError("token issuance", str(exc)) from None
            token = await self._wallet.take()
        if token is None:
            raise RefusedToSendError("token issuance", "the issuer gave no usable token")
        return token

    async def _prepare(self, path: bytes, body: bytes) -> tuple[str, KeyConfig, str, bytes]:
        node = await self._pick_node()
        if node.verified is None:
            raise RefusedToSendError("verification", "the chosen node is not verified")
        config = parse_public_key_config(node.verified.key_config)
        authorization = await self._authorization()
        request = inner.inner_request(b"POST", path, body, now=self._now() + self._clock_offset)
        return ohttp_url(self.relay_url, node.node_id), config, authorization, request

    def _correct_clock(self, refusal: inner.DateCorrectionError, attempt: int) -> None:
        """The one retry RFC 9458 §6.5.2 allows: adopt the gateway's clock, or give up."""
        if attempt:
            raise refusal
        self._clock_offset = refusal.gateway_date - self._now()

    async def _whole(self, path: bytes, body: bytes) -> bytes:
        for attempt in range(2):
            url, config, authorization, request = await self._prepare(path, body)
            response = await exchange_whole(self._transport, url, config, request,
                                            authorization=authorization)
            try:
                inner.raise_for_status(response.status, response.headers, response.content)
            except inner.DateCorrectionError as exc:
                self._correct_clock(exc, attempt)
                continue
            return response.content
        raise AssertionError("unreachable")  # pragma: no cover

    async def _stream(self, path: bytes, body: bytes) -> AsyncIterator[str]:
        for attempt in range(2):
            url, config, authorization, request = await self._prepare(path, body)
            events = exchange_stream(self._transport, url, config, request,
                                     authorization=authorization)
            head = await anext(events)
            if not isinstance(head, ResponseHead):
                raise ProtocolError("inner response has no head")
            if head.status != 200:
                content = b"".join([e async for e in events if isinstance(e, bytes)])
                try:
                    inner.raise_for_status(head.status, head.headers, content)
                except inner.DateCorrectionError as exc:
                    self._correct_clock(exc, attempt)
                    continue
            decoder = SseDecoder()
            async for event in events:
                if isinstance(event, bytes):
                    for data in decoder.feed(event):
                        yield data
            for data in decoder.finish():
                yield data
            return

    async def close(self) -> None:
        """Close connections."""
        await self._transport.close()


class _AsyncChat:
    def __init__(self, client: AsyncClient) -> None:
        self.completions = _AsyncCompletions(client)


class _AsyncCompletions:
    def __init__(self, client: AsyncClient) -> None:
        self._client = client

    async def create(self, *, model: str, messages: list[dict[str, str]], stream: bool = False,
                     **options: Any) -> ChatCompletion | AsyncIterator[ChatCompletionChunk]:  # noqa: ANN401
        """`POST /v1/chat/completions` on a verified node, as openai-python's `create`."""
        body = inner.chat_body(model, messages, stream=stream, options=options)
        if not stream:
            content = await self._client._whole(inner.CHAT_PATH, body)  # noqa: SLF001
            return ChatCompletion.parse(inner.parse_json(content))
        return _chunks(self._client._stream(inner.CHAT_PATH, body))  # noqa: SLF001


async def _chunks(events: AsyncIterator[str]) -> AsyncIterator[ChatCompletionChunk]:
    async for data in events:
        if data == "[DONE]":
            return
        yield ChatCompletionChunk.parse(inner.parse_json(data.encode()))


class Client:
    """The synchronous SDK: the same client, driven on a private event loop thread."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:  # noqa: ANN401
        """Take `AsyncClient`'s arguments."""
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True,
                                        name="hushcc-client")
        self._thread.start()
        self._async = self._run(_construct(args, kwargs))
        self.chat = _SyncChat(self)

    def _run(self, coroutine: Any) -> Any:  # noqa: ANN401
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    def verify(self) -> DirectoryReport:
        """See `AsyncClient.verify`."""
        report: DirectoryReport = self._run(self._async.verify())
        return report

    def _iterate(self, stream: AsyncIterator[ChatCompletionChunk]) -> Iterator[ChatCompletionChunk]:
        while True:
            try:
                yield self._run(anext(stream))
            except StopAsyncIteration:
                return

    def close(self) -> None:
        """Close connections and stop the loop thread."""
        self._run(self._async.close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    def __enter__(self) -> Self:
        """Use as `with Client(...) as client:`."""
        return self

    def __exit__(self, *exc: object) -> None:
        """Close on exit."""
        self.close()


async def _construct(args: tuple[Any, ...], kwargs: dict[str, Any]) -> AsyncClient:
    return AsyncClient(*args, **kwargs)  # built on the loop thread that will drive it


class _SyncChat:
    def __init__(self, client: Client) -> None:
        self.completions = _SyncCompletions(client)


class _SyncCompletions:
    def __init__(self, client: Client) -> None:
        self._client = client

    def create(self, **kwargs: Any) -> ChatCompletion | Iterator[ChatCompletionChunk]:  # noqa: ANN401
        """See `AsyncClient.chat.completions.create`."""
        result = self._client._run(self._client._async.chat.completions.create(**kwargs))  # noqa: SLF001
        if isinstance(result, ChatCompletion):
            return result
        return self._client._iterate(result)  # noqa: SLF001
