"""The OHTTP gateway: an encapsulated request's bytes in, sealed response chunks out.

No sockets and no clocks of its own (time, sleeping and randomness are parameters); the aiohttp
shell (`node.server`) reads the body under its limits and writes what this returns. One request:

1. media type `message/ohttp-req` or `message/ohttp-chunked-req` (else 415);
2. key id known and live (else 422 `ohttp-key` problem, before any DH; RFC 9458 §5.3, §6.4);
3. decapsulate (any failure: plain 400 with no body detail);
4. binary HTTP decode; `Date` inside the window (§6.5.1, encapsulated `date` problem). A missing
   `Date` is refused the same way unless `require_date` is off (the SDK always sends one);
5. replay check on `enc` in the key's epoch (§6.5), remembered until Date + window (the last
   instant the Date check could pass again), through ohttp's `ReplayStore` protocol -- before the
   request's content is read (routing, JSON) and before the engine sees it;
6. route: `POST /v1/chat/completions`, `POST /v1/completions`, `GET /v1/models`; anything else
   an encapsulated 404 (never forwarded: G15);
7. engine; the answer as OpenAI JSON, or as SSE events each sealed in its own chunk of a chunked
   OHTTP response (`node.sealing`), every chunk padded to a fixed size bucket (R7). With
   `pace` set, streamed chunks leave on a fixed clock instead, one per tick (`node.pacing`).

Error placement (§5.2, G14): before decapsulation a plain 4xx (RFC 9457 problem types of RFC 9458,
no detail); after it, every error is an encapsulated OpenAI error. Nothing here logs, and no
error message carries request content.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from hushcc.errors import DecryptError, HushError, ProtocolError
from node.engine.engine import GenerateRequest
from node.engine.sampling import SamplingParams
from node.openai_api import (
    CHAT_PATH,
    COMPLETIONS_PATH,
    DONE_EVENT,
    MODELS_PATH,
    ApiError,
    ApiLimits,
    Call,
    completion_body,
    models_body,
    pad_event,
    parse_call,
    stream_event,
)
from node.pacing import Inbox, Slice, Ticker, paced, sleep_until
from node.sealing import ResponseWriter
from ohttp import chunked, encapsulation
from ohttp.bhttp import Limits as BhttpLimits
from ohttp.bhttp import decode_request
from ohttp.encapsulation import UnknownKeyError
from ohttp.header import RequestHeader
from ohttp.problems import DATE, OHTTP_KEY
from ohttp.replay import ReplayError, ReplayStoreFullError, check_date, remember_until

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable
    from datetime import datetime

    from node.engine.engine import Engine
    from node.keys import KeyRing
    from ohttp.bhttp import Fields, Request
    from ohttp.encapsulation import GatewayContext
    from ohttp.replay import ReplayStore

JSON = ((b"content-type", b"application/json"),)
SSE = ((b"content-type", b"text/event-stream"), (b"cache-control", b"no-store"))
SALT_LABEL = b"hushcc/tenant-salt/v1"


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    """Gateway policy: API caps, the Date window and the padding bucket."""

    api: ApiLimits = field(default_factory=ApiLimits)
    bhttp: BhttpLimits = field(default_factory=lambda: BhttpLimits(max_message=1 << 20))
    date_window: timedelta = timedelta(seconds=60)
    require_date: bool = True
    pad_bucket: int = 256
    pace: float = 0.0  # seconds between streamed chunks on a fixed clock; 0: one per delta


@dataclass(frozen=True, slots=True)
class Plain:
    """An answer outside the encapsulation (before decapsulation): status, headers, body."""

    status: int
    headers: Fields = ()
    body: bytes = b""


@dataclass(frozen=True, slots=True)
class Sealed:
    """An encapsulated answer: its media type and the sealed chunks, flushed one by one."""

    media_type: str
    chunks: AsyncIterator[bytes]


@dataclass(frozen=True, slots=True)
class ServedModel:
    """What the gateway needs of the model: its name and tokenizer (with chat template)."""

    name: str
    tokenizer: Any


class Gateway:
    """The node's request handler (see the module docstring)."""

    def __init__(self, *, keys: KeyRing, engine: Engine, model: ServedModel,  # noqa: PLR0913
                 replay: ReplayStore, clock: Callable[[], datetime],
                 rng: Callable[[int], bytes], salt_key: bytes,
                 config: GatewayConfig | None = None,
                 monotonic: Callable[[], float] = time.monotonic,
                 sleep_until: Callable[[float], Awaitable[None]] = sleep_until) -> None:
        """Wire the gateway to the node's key ring, engine, model and replay store.

        `monotonic` and `sleep_until` are the fixed-pace policy's clock (`node.pacing`).
        """
        self.keys, self.engine, self.model, self.replay = keys, engine, model, replay
        self.clock, self.rng, self.config = clock, rng, config or GatewayConfig()
        self.monotonic, self.sleep_until = monotonic, sleep_until
        self._salt_key = salt_key
        self.counts: Counter[str] = Counter()  # aggregate outcomes, for the metrics

    def __repr__(self) -> str:
        """No secrets."""
        return "Gateway(<redacted>)"

    async def handle(self, media_type: str, body: bytes) -> Plain | Sealed:
        """Answer one encapsulated request (steps 1-7 of the module docstring)."""
        if media_type not in (encapsulation.REQUEST_MEDIA_TYPE, chunked.REQUEST_MEDIA_TYPE):
            self.counts["rejected_media_type"] += 1
            return Plain(415)
        chunked_mode = media_type == chunked.REQUEST_MEDIA_TYPE
        ring = self.keys.keys()
        try:
            header = RequestHeader.from_bytes(body)
            inner, ctx = self._decapsulate(body, ring, chunked_mode=chunked_mode)
        except UnknownKeyError:
            self.counts["rejected_key"] += 1
            return Plain(OHTTP_KEY.status, OHTTP_KEY.headers(self.clock()), OHTTP_KEY.body())
        except (DecryptError, ProtocolError):
            self.counts["rejected_decrypt"] += 1
            return Plain(400)
        media = chunked.RESPONSE_MEDIA_TYPE if chunked_mode else encapsulation.RESPONSE_MEDIA_TYPE
        writer = ResponseWriter(ctx, chunked_mode=chunked_mode, bucket=self.config.pad_bucket,
                         rng=self.rng)
        epoch = self.keys.epoch_serial(header.key_id)
        return Sealed(media, self._respond(inner, ctx.enc, epoch or 0, writer))

    def _decapsulate(self, body: bytes, ring: dict[int, Any], *, chunked_mode: bool
                     ) -> tuple[bytes, GatewayContext]:
        if body[0] not in ring:  # the key id, checked before any DH (RFC 9458 §4.3, §5.3)
            raise UnknownKeyError
        if not chunked_mode:
            return encapsulation.decapsulate_request(body, ring.values())
        decoder = chunked.ChunkedRequestDecoder(ring.values())
        pieces = decoder.feed(body)
        pieces.append(decoder.finish())
        if decoder.context is None:
            raise DecryptError
        return b"".join(pieces), decoder.context

    async def _respond(self, inner: bytes, enc: bytes, epoch: int, writer: ResponseWriter
                       ) -> AsyncIterator[bytes]:
        now = self.clock()
        try:
            try:
                request = decode_request(inner, limits=self.config.bhttp)
            except ProtocolError:
                self.counts["rejected_request"] += 1
                raise ApiError(400, "malformed binary HTTP", "bad_request") from None
            until = self._check_date(request, now)
            await self._check_replay(enc, epoch, now.timestamp(), until)
            call = self._route(request)
        except _DateError:
            self.counts["rejected_date"] += 1
            problem = DATE.to_response(now)
            for c in writer.whole(problem.status, problem.headers, problem.content):
                yield c
            return
        except ApiError as exc:
            for c in self._error(writer, exc):
                yield c
            return
        if call is None:
            self.counts["models"] += 1
            for c in writer.whole(200, JSON, models_body(self.model.name, int(now.timestamp()))):
                yield c
            return
        async for c in self._generate(call, writer, int(now.timestamp())):
            yield c

    async def _check_replay(self, enc: bytes, epoch: int, now: float, until: float) -> None:
        try:
            await self.replay.remember(enc, epoch=epoch, now=now, until=until)
        except ReplayError:
            self.counts["rejected_replay"] += 1
            raise ApiError(400, "replayed request", "replayed_request") from None
        except ReplayStoreFullError:
            self.counts["rejected_busy"] += 1
            raise ApiError(503, "busy", "unavailable", "server_error") from None

    def _check_date(self, request: Request, now: datetime) -> float:
        """Check the Date (§6.5.1); return until when the request's `enc` must be remembered."""
        window = self.config.date_window
        date = next((v for k, v in request.headers if k.lower() == b"date"), None)
        if date is None and not self.config.require_date:  # the latest a Date could pass
            return now.timestamp() + 2 * window.total_seconds()
        try:
            return remember_until(check_date(date, now=now, window=window), window)
        except ProtocolError:
            raise _DateError from None

    def _route(self, request: Request) -> Call | None:
        route = (request.method, request.path)
        if route == (b"GET", MODELS_PATH):
            return None
        if route in ((b"POST", CHAT_PATH), (b"POST", COMPLETIONS_PATH)):
            try:
                return parse_call(request.path, request.content, self.config.api)
            except ApiError:
                self.counts["rejected_request"] += 1
                raise
        self.counts["rejected_request"] += 1
        raise ApiError(404, "unknown route (this node serves only its inference API)",
                       "unknown_url")

    def _error(self, writer: ResponseWriter, exc: ApiError) -> list[bytes]:
        return writer.whole(exc.status, JSON, exc.body())

    def _tenant_salt(self, call: Call) -> bytes:
        if call.cache_salt is None:  # no salt asked for: nothing shared with anyone
            return self.rng(32)
        return hmac.new(self._salt_key, SALT_LABEL + call.cache_salt.encode(),
                        hashlib.sha256).digest()

    def _prompt(self, call: Call) -> list[int]:
        tokenizer = self.model.tokenizer
        if call.chat:
            from node.engine.tokenizer import encode_chat  # noqa: PLC0415

            return encode_chat(tokenizer, call.messages)
        if call.prompt_ids:
            return list(call.prompt_ids)  # the engine checks them against the vocabulary
        return [int(t) for t in tokenizer.encode(call.prompt, add_special_tokens=False)]

    async def _generate(self, call: Call, writer: ResponseWriter, created: int
                        ) -> AsyncIterator[bytes]:
        try:
            params = SamplingParams(max_tokens=call.max_tokens, temperature=call.temperature,
                                    top_k=call.top_k, top_p=call.top_p, seed=call.seed,
                                    stop=call.stop, ignore_eos=call.ignore_eos)
            stream = self.engine.submit(GenerateRequest(tuple(self._prompt(call)), params),
                                        self._tenant_salt(call))
        except ProtocolError as exc:  # a limit: its message names the rule, never content
            self.counts["rejected_limits"] += 1
            for c in self._error(writer, ApiError(400, str(exc), "invalid_value")):
                yield c
            return
        self.counts["submitted"] += 1
        meta = {"model": self.model.name, "response_id": _response_id(call, self.rng),
                "created": created}
        echo = call.prompt if call.echo else ""
        try:
            if call.stream:
                async for c in self._stream(call, stream, writer, meta, echo):
                    yield c
                return
            text, reason, counts = [echo], "stop", (0, 0)
            async for delta in stream:
                text.append(delta.text)
                counts = (delta.prompt_tokens, delta.completion_tokens)
                reason = delta.finish_reason or reason
            body = completion_body(call, text="".join(text), finish_reason=reason,
                                   counts=counts, **meta)  # type: ignore[arg-type]
            self.counts["completed"] += 1
            for c in writer.whole(200, JSON, body):
                yield c
        except HushError:  # EngineError: the engine failed this request (no content in it)
            self.counts["failed"] += 1
            for c in self._error(writer, ApiError(500, "generation failed", "engine_error",
                                                  "server_error")):
                yield c
        finally:
            await stream.aclose()  # a consumer gone mid-stream cancels in the engine (E5)

    async def _stream(self, call: Call, stream: AsyncIterator[Any], writer: ResponseWriter,
                      meta: dict[str, Any], echo: str) -> AsyncIterator[bytes]:
        head = writer.head(200, SSE)
        first = [stream_event(call, text=echo, finish_reason=None, **meta)] if echo else []
        paced_mode = self.config.pace > 0 and head is not None  # chunked: one chunk per tick
        events = (self._paced(call, stream, meta) if paced_mode
                  else self._per_delta(call, stream, meta))
        for chunk in (head, *map(writer.event, first)):
            if chunk is not None:
                yield chunk
        async for event in events:
            chunk = writer.event(event)
            if chunk is not None:
                yield chunk
        yield writer.end()

    async def _per_delta(self, call: Call, stream: AsyncIterator[Any], meta: dict[str, Any]
                         ) -> AsyncIterator[bytes]:
        """One event per engine delta, as it comes; then the closing events."""
        counts, failed = (0, 0), False
        try:
            async for delta in stream:
                counts = (delta.prompt_tokens, delta.completion_tokens)
                yield stream_event(call, text=delta.text, finish_reason=delta.finish_reason,
                                   **meta)
        except HushError:
            failed = True
        for event in self._closing(call, meta, counts, failed=failed):
            yield event

    async def _paced(self, call: Call, stream: AsyncIterator[Any], meta: dict[str, Any]
                     ) -> AsyncIterator[bytes]:
        """The events on the fixed clock of `node.pacing` (R7's optional policy).

        One event per tick, the closing ones included; returns on the tick of the last chunk.
        """
        ticker = Ticker(self.config.pace, monotonic=self.monotonic, sleep=self.sleep_until)
        inbox, bucket = Inbox(), self.config.pad_bucket

        def event(piece: Slice) -> bytes:
            return stream_event(call, text=piece.text, finish_reason=piece.finish_reason, **meta)

        def fits(text: str) -> bool:  # sized as if it carried the longest finish reason
            return len(pad_event(event(Slice(text, "cancelled")), bucket)) <= bucket

        async for data in paced(stream, inbox, ticker, event=event, fits=fits):
            yield data
        for i, data in enumerate(self._closing(call, meta, inbox.counts, failed=inbox.failed)):
            if i:  # the first on the tick that found the stream drained, the rest one per tick
                await ticker.wait()
            yield data
        await ticker.wait()  # the final chunk on a tick of its own

    def _closing(self, call: Call, meta: dict[str, Any], counts: tuple[int, int], *,
                 failed: bool) -> list[bytes]:
        """The events after the text: an error or the usage (if asked for), then `[DONE]`."""
        if failed:
            self.counts["failed"] += 1
            error = ApiError(500, "generation failed", "engine_error", "server_error")
            return [b"data: " + error.body() + b"\n\n", DONE_EVENT]
        self.counts["completed"] += 1
        if not call.include_usage:
            return [DONE_EVENT]
        return [stream_event(call, text=None, finish_reason=None, counts=counts, **meta),
                DONE_EVENT]


class _DateError(Exception):
    """The request's Date is outside the window (answered with the `date` problem)."""


def _response_id(call: Call, rng: Callable[[int], bytes]) -> str:
    """A random response id (never a counter: E9)."""
    prefix = "chatcmpl-" if call.chat else "cmpl-"
    return prefix + rng(12).hex()

