"""The OHTTP gateway: an encapsulated request's bytes in, sealed response chunks out.

No sockets and no clocks of its own (time and randomness are parameters); the aiohttp shell
(`node.server`) reads the body under its limits and writes what this returns. One request:

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
   OHTTP response, every chunk padded to a fixed size bucket (R7).

Error placement (§5.2, G14): before decapsulation a plain 4xx (RFC 9457 problem types of RFC 9458,
no detail); after it, every error is an encapsulated OpenAI error. Nothing here logs, and no
error message carries request content.
"""

from __future__ import annotations

import hashlib
import hmac
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
    padded_chunk_size,
    parse_call,
    stream_event,
)
from ohttp import chunked, encapsulation
from ohttp.bhttp import Limits as BhttpLimits
from ohttp.bhttp import Response, decode_request, encode_response
from ohttp.bhttp_stream import encode_response_end, encode_response_head
from ohttp.encapsulation import UnknownKeyError
from ohttp.header import RequestHeader
from ohttp.problems import DATE, OHTTP_KEY
from ohttp.replay import ReplayError, ReplayStoreFullError, check_date, remember_until

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable
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


class _Writer:
    """Seals a response: one chunk per event (chunked OHTTP), or one message at the end."""

    def __init__(self, ctx: GatewayContext, *, chunked_mode: bool, bucket: int,
                 rng: Callable[[int], bytes]) -> None:
        self._chunked = (chunked.ChunkedResponseEncoder(ctx, rng=rng) if chunked_mode
                         else None)
        self._ctx, self._rng, self._bucket = ctx, rng, bucket
        self._status, self._body = 200, bytearray()
        self._headers: Fields = ()

    def head(self, status: int, headers: Fields) -> bytes | None:
        if self._chunked is not None:
            return self._chunked.chunk(encode_response_head(status, headers))
        self._status, self._headers = status, headers
        return None

    def event(self, data: bytes) -> bytes | None:
        if self._chunked is not None:
            return self._chunked.chunk(pad_event(data, self._bucket))
        self._body += data
        return None

    def end(self) -> bytes:
        if self._chunked is not None:
            return self._chunked.final(encode_response_end())
        whole = encode_response(Response(self._status, self._headers, bytes(self._body)))
        whole += bytes(padded_chunk_size(len(whole), self._bucket) - len(whole))  # RFC 9292 §3.8
        return encapsulation.encapsulate_response(self._ctx, whole, rng=self._rng)

    def whole(self, status: int, headers: Fields, body: bytes) -> list[bytes]:
        out = [self.head(status, headers), self.event(body) if body else None, self.end()]
        return [c for c in out if c is not None]


class Gateway:
    """The node's request handler (see the module docstring)."""

    def __init__(self, *, keys: KeyRing, engine: Engine, model: ServedModel,  # noqa: PLR0913
                 replay: ReplayStore, clock: Callable[[], datetime],
                 rng: Callable[[int], bytes], salt_key: bytes,
                 config: GatewayConfig | None = None) -> None:
        """Wire the gateway to the node's key ring, engine, model and replay store."""
        self.keys, self.engine, self.model, self.replay = keys, engine, model, replay
        self.clock, self.rng, self.config = clock, rng, config or GatewayConfig()
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
        writer = _Writer(ctx, chunked_mode=chunked_mode, bucket=self.config.pad_bucket,
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

    async def _respond(self, inner: bytes, enc: bytes, epoch: int, writer: _Writer
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

    def _error(self, writer: _Writer, exc: ApiError) -> list[bytes]:
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

    async def _generate(self, call: Call, writer: _Writer, created: int) -> AsyncIterator[bytes]:
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

    async def _stream(self, call: Call, stream: AsyncIterator[Any], writer: _Writer,
                      meta: dict[str, Any], echo: str) -> AsyncIterator[bytes]:
        head = writer.head(200, SSE)
        if head is not None:
            yield head
        counts = (0, 0)
        if echo:
            chunk = writer.event(stream_event(call, text=echo, finish_reason=None, **meta))
            if chunk is not None:
                yield chunk
        try:
            async for delta in stream:
                counts = (delta.prompt_tokens, delta.completion_tokens)
                event = stream_event(call, text=delta.text, finish_reason=delta.finish_reason,
                                     **meta)
                chunk = writer.event(event)
                if chunk is not None:
                    yield chunk
        except HushError:
            self.counts["failed"] += 1
            error = ApiError(500, "generation failed", "engine_error", "server_error")
            chunk = writer.event(b"data: " + error.body() + b"\n\n")
        else:
            self.counts["completed"] += 1
            chunk = (writer.event(stream_event(call, text=None, finish_reason=None,
                                               counts=counts, **meta))
                     if call.include_usage else None)
        if chunk is not None:
            yield chunk
        done = writer.event(DONE_EVENT)
        if done is not None:
            yield done
        yield writer.end()


class _DateError(Exception):
    """The request's Date is outside the window (answered with the `date` problem)."""


def _response_id(call: Call, rng: Callable[[int], bytes]) -> str:
    """A random response id (never a counter: E9)."""
    prefix = "chatcmpl-" if call.chat else "cmpl-"
    return prefix + rng(12).hex()

