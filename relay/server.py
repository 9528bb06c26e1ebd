"""The OHTTP relay service (aiohttp): node directory, token-gated forwarding, streamed responses.

Routes:
* `GET /v1/nodes`: the directory (`directory.py`), identical bytes for everyone between refreshes;
* `POST /v1/nodes/{node_id}/ohttp`: `message/ohttp-req` or `message/ohttp-chunked-req`, with
  `Authorization: PrivateToken token=...`; forwarded to that node's configured gateway
  (`POST {url}/ohttp`) and the response streamed back chunk by chunk as it arrives;
* `GET /v1/nodes/{node_id}/attestation?nonce=HEX`: forwarded to `GET {url}/attestation?nonce=`.
  Each one makes the node produce and sign fresh evidence, and no token pays for it, so the
  relay meters them on their own: at most `max_attestation_inflight` at once and
  `attestation_rate` per second (burst `attestation_burst`) for all clients together; above
  either, a fast 503 with Retry-After before anything reaches the node.

Invariants (RFC 9458 §6.2, §6.5; SECURITY.md R1-R6):
* Never an open proxy: the target is the configured URL of a configured node id, nothing from
  the client but that id chooses it.
* Header allowlist both ways: to the gateway only Content-Type (the bare media type),
  Content-Length and `Incremental: ?1` (canonical values, nothing client-chosen; no client
  address, no Forwarded/Via, no cookies, no Authorization: the relay consumes the token);
  back to the client only Content-Type, Incremental, Cache-Control and, on error statuses,
  Date (the client's clock correction, RFC 9458 §6.5.2).
* Every admitted request is forwarded with the same bytes and headers however it got in (no
  marker for a client that was rate-limited first, R6). A chunked answer keeps the gateway's
  HTTP chunk boundaries, and with them its padded sizes (R7).
* Never retried: a gateway that fails to answer (reset, refused, timeout) gives 502 and the
  request is not resent (R4). A stream that breaks after headers aborts the client connection.
* Limits: body size (413), absolute receipt deadline and connection cap (`guard.py`), in-flight
  cap and redemption rate (fast 503 + Retry-After, checked before a token is spent).
* Logs only counters and durations (`stats`), never bodies, tokens or addresses.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import re
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import aiohttp
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from relay.directory import NODE_ID
from relay.guard import GuardState, TokenBucket
from relay.redemption import TokenRejectedError
from relay.spent import SpentStoreUnavailableError

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from relay.directory import NodeDirectory, NodeEntry
    from relay.redemption import Redeemer

log = logging.getLogger("hushcc.relay")

OHTTP_MEDIA_TYPES = frozenset({"message/ohttp-req", "message/ohttp-chunked-req"})
RESPONSE_HEADERS = ("Content-Type", "Incremental", "Cache-Control")
NONCE = re.compile(r"[0-9a-fA-F]{2,128}")
READ_CHUNK = 1 << 16
FLUSH_AT = 1 << 16  # a gateway chunk larger than this is passed on in pieces


@dataclass(frozen=True, slots=True)
class RelayLimits:
    """The relay's limits (all configurable, `[limits]` in the TOML)."""

    max_body: int = 1 << 20  # bytes of one encapsulated request
    receipt_deadline: float = 10.0  # seconds from a request's first byte to its last
    max_connections: int = 1024  # open client connections; above -> canned 503
    max_inflight: int = 256  # requests being forwarded; above -> 503
    redemption_rate: float = 1000.0  # tokens accepted per second, all clients together
    redemption_burst: float = 2000.0
    gateway_timeout: float = 30.0  # seconds until the gateway's response headers
    stream_idle_timeout: float = 300.0  # seconds between two chunks of a streamed response
    write_timeout: float = 10.0  # seconds a slow reader may stall one chunk write
    retry_after: int = 1  # seconds, on every 503 (or more, until the rate admits one)
    attestation_rate: float = 10.0  # fresh attestations forwarded per second, all clients
    attestation_burst: float = 20.0
    max_attestation_inflight: int = 4  # fresh attestations the nodes produce at once


@dataclass(slots=True)
class Stats:
    """Counters and total durations: the only things the relay logs."""

    counts: dict[str, int] = field(default_factory=dict)
    forward_seconds: float = 0.0

    def add(self, name: str) -> None:
        """Count one event."""
        self.counts[name] = self.counts.get(name, 0) + 1


def _problem(status: int, title: str, headers: dict[str, str] | None = None) -> web.Response:
    """An RFC 9457 problem response with a fixed title and no request detail."""
    return web.json_response({"type": "about:blank", "title": title, "status": status},
                             status=status, content_type="application/problem+json",
                             headers=headers)


class _HeadWithBodyResponse(web.StreamResponse):
    """A streamed response whose head leaves with its first body bytes.

    The status line and headers go in the same write as the first body bytes (one segment),
    not on their own when the response is prepared.
    """

    _send_headers_immediately = False


class RelayServer:
    """The aiohttp application of one relay."""

    def __init__(self, directory: NodeDirectory, redeemer: Redeemer,
                 limits: RelayLimits | None = None) -> None:
        """Relay to the nodes of `directory`, admitting requests that `redeemer` accepts."""
        self.directory = directory
        self.redeemer = redeemer
        self.limits = limits or RelayLimits()
        self.guard = GuardState(self.limits.receipt_deadline, self.limits.max_connections)
        self.bucket = TokenBucket(self.limits.redemption_rate, self.limits.redemption_burst)
        self.attestation_bucket = TokenBucket(self.limits.attestation_rate,
                                              self.limits.attestation_burst)
        self.attesting = 0
        self.stats = Stats()
        self.inflight = 0
        self.session: aiohttp.ClientSession | None = None
        self._refresher: asyncio.Task[None] | None = None

    def app(self) -> web.Application:
        """Build the aiohttp application."""
        app = web.Application(client_max_size=self.limits.max_body,
                              middlewares=[self._receipt_middleware])
        app.router.add_get("/v1/nodes", self.get_nodes)
        app.router.add_post("/v1/nodes/{node_id}/ohttp", self.post_ohttp)
        app.router.add_get("/v1/nodes/{node_id}/attestation", self.get_attestation)
        app.on_startup.append(self._startup)
        app.on_cleanup.append(self._cleanup)
        return app

    async def _startup(self, _app: web.Application) -> None:
        # One pooled keep-alive session for every gateway; its timeouts are set once here, not
        # built per request: `sock_connect` bounds the connect, `sock_read` the gap between two
        # chunks of an answer (the time to the answer's head is `_forward`'s own deadline).
        connector = aiohttp.TCPConnector(limit=self.limits.max_inflight + 16)
        self.session = aiohttp.ClientSession(
            connector=connector, auto_decompress=False,
            skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding"),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=self.limits.gateway_timeout,
                                          sock_read=self.limits.stream_idle_timeout))
        await self.directory.refresh(self.session)
        self._refresher = asyncio.get_running_loop().create_task(
            self.directory.run(self.session))

    async def _cleanup(self, _app: web.Application) -> None:
        if self._refresher is not None:
            self._refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresher
        if self.session is not None:
            await self.session.close()
        await self.redeemer.store.close()
        self.log_stats()

    @web.middleware
    async def _receipt_middleware(self, request: web.Request,
                                  handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
                                  ) -> web.StreamResponse:
        """Close the request's receipt window when its handler returns; contain any error.

        An unexpected exception becomes a bare 500 and one log line with its class name only
        (aiohttp's own error log would name the client's address).
        """
        try:
            return await handler(request)
        except web.HTTPException:
            raise
        except Exception as exc:  # noqa: BLE001 - the containment boundary
            self.stats.add("handler_error")
            log.warning("relay.error %s", type(exc).__name__)
            return _problem(500, "internal error")
        finally:
            self.guard.received(request.transport)

    def log_stats(self) -> None:
        """Log the counters and the total forwarding time (nothing per request)."""
        log.info("relay.stats %s forward_seconds=%.3f deadline_aborts=%d overload_rejects=%d",
                 " ".join(f"{k}={v}" for k, v in sorted(self.stats.counts.items())),
                 self.stats.forward_seconds, self.guard.deadline_aborts,
                 self.guard.overload_rejects)

    def _overloaded(self, wait: float = 0.0, counter: str = "overloaded") -> web.Response:
        self.stats.add(counter)
        retry_after = max(self.limits.retry_after, math.ceil(wait))
        return _problem(503, "overloaded", {"Retry-After": str(retry_after)})

    def _node(self, request: web.Request) -> NodeEntry | None:
        node_id = request.match_info["node_id"]
        return self.directory.nodes.get(node_id) if NODE_ID.fullmatch(node_id) else None

    async def get_nodes(self, request: web.Request) -> web.Response:
        """Serve the directory bytes of the last refresh."""
        self.guard.received(request.transport)
        self.stats.add("directory")
        if request.headers.get("If-None-Match") == self.directory.etag:
            return web.Response(status=304, headers={"ETag": self.directory.etag})
        max_age = int(self.directory.refresh_interval)
        return web.Response(body=self.directory.body, content_type="application/json",
                            headers={"ETag": self.directory.etag,
                                     "Cache-Control": f"public, max-age={max_age}"})

    async def _read_body(self, request: web.Request) -> bytes | web.Response:
        """Read the whole body; a 413 once it exceeds `max_body`, a 400 if the client is gone.

        A connection cut mid-body (the receipt deadline, or the client) raises inside the read:
        a partial body is never forwarded.
        """
        body = bytearray()
        try:
            while chunk := await request.content.read(READ_CHUNK):
                body += chunk
                if len(body) > self.limits.max_body:
                    self.stats.add("too_large")
                    return _problem(413, "request too large")
        except (ConnectionError, OSError, aiohttp.ClientPayloadError, HttpProcessingError):
            self.stats.add("client_aborted")
            return _problem(400, "incomplete request")
        self.guard.received(request.transport)
        return bytes(body)

    async def post_ohttp(self, request: web.Request) -> web.StreamResponse:  # noqa: PLR0911
        """Redeem the token, then forward the encapsulated request and stream the answer."""
        node = self._node(request)
        if node is None:
            self.stats.add("unknown_node")
            return _problem(404, "unknown node")
        if request.content_type not in OHTTP_MEDIA_TYPES:
            return _problem(415, "expected message/ohttp-req or message/ohttp-chunked-req")
        if request.content_length is not None and request.content_length > self.limits.max_body:
            self.stats.add("too_large")
            return _problem(413, "request too large")
        if self.inflight >= self.limits.max_inflight or self.bucket.take() > 0:
            return self._overloaded()
        try:
            await self.redeemer.redeem(request.headers.get("Authorization"))
        except TokenRejectedError:
            self.stats.add("token_rejected")
            return _problem(401, "token required",
                            {"WWW-Authenticate": self.redeemer.challenge_header})
        except SpentStoreUnavailableError:
            self.stats.add("store_unavailable")
            return _problem(503, "token store unavailable",
                            {"Retry-After": str(self.limits.retry_after)})
        self.inflight += 1
        try:
            body = await self._read_body(request)
            if isinstance(body, web.Response):
                return body
            # Canonical values only: the bare media type, and `Incremental: ?1` or nothing, so
            # no client-chosen bytes ride along in a header (R1, R6).
            headers = {"Content-Type": request.content_type}
            if request.headers.get("Incremental") == "?1":
                headers["Incremental"] = "?1"
            return await self._forward(request, "POST", node.url + "/ohttp", body, headers)
        finally:
            self.inflight -= 1

    async def get_attestation(self, request: web.Request) -> web.StreamResponse:
        """Forward a fresh-attestation request with the client's nonce."""
        self.guard.received(request.transport)
        node = self._node(request)
        if node is None:
            self.stats.add("unknown_node")
            return _problem(404, "unknown node")
        nonce = request.query.get("nonce")
        if nonce is not None and NONCE.fullmatch(nonce) is None:
            return _problem(400, "nonce must be hex")
        if (self.inflight >= self.limits.max_inflight
                or self.attesting >= self.limits.max_attestation_inflight):
            return self._overloaded(counter="attestation_limited")
        wait = self.attestation_bucket.take()
        if wait > 0:
            return self._overloaded(wait, "attestation_limited")
        url = node.url + "/attestation" + (f"?nonce={nonce}" if nonce is not None else "")
        self.inflight += 1
        self.attesting += 1
        try:
            return await self._forward(request, "GET", url, None, {})
        finally:
            self.inflight -= 1
            self.attesting -= 1

    async def _forward(self, request: web.Request, method: str, url: str, body: bytes | None,
                       headers: dict[str, str]) -> web.StreamResponse:
        """Send once; stream the answer back; 502 if the gateway does not answer (R4)."""
        if self.session is None:
            return self._overloaded()
        started = time.monotonic()
        try:
            async with asyncio.timeout(self.limits.gateway_timeout):
                upstream = await self.session.request(method, url, data=body, headers=headers,
                                                      allow_redirects=False)
        except (aiohttp.ClientError, TimeoutError, OSError):
            self.stats.add("gateway_failed")
            return _problem(502, "gateway unavailable")
        try:
            return await self._stream_back(request, upstream)
        finally:
            upstream.release()
            self.stats.forward_seconds += time.monotonic() - started

    async def _stream_back(self, request: web.Request,
                           upstream: aiohttp.ClientResponse) -> web.StreamResponse:
        keep = RESPONSE_HEADERS + (("Date",) if upstream.status >= 400 else ())
        # A chunked answer is passed on HTTP chunk for HTTP chunk, so the sizes the gateway
        # padded its chunks to (R7) are the sizes the client's network observers see; its head
        # goes out at once. An answer of known length leaves with its head in the same write.
        chunked = upstream.headers.get("Transfer-Encoding", "").lower() == "chunked"
        response = (web.StreamResponse if chunked else _HeadWithBodyResponse)(
            status=upstream.status,
            headers={h: upstream.headers[h] for h in keep if h in upstream.headers})
        if upstream.content_length is not None:
            response.content_length = upstream.content_length
        await response.prepare(request)
        pending = bytearray()  # a gateway chunk that arrived in several reads
        try:
            async for data, end_of_chunk in upstream.content.iter_chunks():
                if not pending and (end_of_chunk or not chunked):
                    if data:  # the usual case: one read is one chunk, passed on uncopied
                        await self._write(request, response, data)
                    continue
                pending += data
                if pending and (end_of_chunk or not chunked or len(pending) >= FLUSH_AT):
                    await self._write(request, response, bytes(pending))
                    pending.clear()
            if pending:
                await self._write(request, response, bytes(pending))
            await response.write_eof()
        except (aiohttp.ClientError, TimeoutError, OSError, ConnectionError):
            # Gateway broke mid-stream or the client stopped reading: cut the client off so it
            # sees a truncated stream, never a complete-looking one.
            self.stats.add("stream_aborted")
            if request.transport is not None:
                request.transport.abort()
            return response
        self.stats.add(f"forwarded_{upstream.status // 100}xx")
        return response

    async def _write(self, request: web.Request, response: web.StreamResponse,
                     data: bytes) -> None:
        """Write one piece to the client; only a write that can wait on it has a deadline.

        A write can wait only if the connection's writing is paused (its send buffer went past
        the high-water mark and has not yet fallen to the low one) or this write pauses it.
        While the buffer stays at or under the low-water mark neither can happen, so no timer
        is armed (one per streamed chunk otherwise).
        """
        transport = request.transport
        if transport is not None and (transport.get_write_buffer_size() + len(data)
                                      <= transport.get_write_buffer_limits()[0]):
            await response.write(data)
            return
        async with asyncio.timeout(self.limits.write_timeout):
            await response.write(data)
