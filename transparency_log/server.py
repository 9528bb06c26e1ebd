"""The log's HTTP server (aiohttp): the tlog-tiles read API, proofs, and batched `POST /add`.

Routes:
* `GET /checkpoint` (text/plain; `Cache-Control: no-cache`);
* `GET /tile/<L>/<N>[.p/<W>]` and `GET /tile/entries/<N>[.p/<W>]` (application/octet-stream); full
  tiles are immutable (`Cache-Control: public, max-age=31536000, immutable`), partial tiles get a
  short cache; tiles beyond the published tree are 404;
* `GET /proof/inclusion?index=I&size=S` and `GET /proof/consistency?from=A&to=B`: JSON
  `{"hashes": [base64, ...], ...}` computed from the published tree;
* `POST /add`: a signed entry (`entry.py`); only entries whose release signature verifies under
  the configured release key are appended (400 malformed, 403 bad signature or key, 413 too
  large, 503 storage failure); returns `{"index", "checkpoint", "inclusion_proof"}`. An entry
  already in the log is not appended again: the answer carries its existing index and the
  current checkpoint, so a retried add is harmless.

Appends are batched: requests that arrive while a batch is being made durable form the next batch,
which costs one fsync and one new checkpoint however many entries it holds. Only the single
writer thread touches storage for writing; readers see only published checkpoints.
Nothing from a request body is logged; no input gives a 500 (malformed input is 400/404, and an
error a handler did not expect is a bare 500 without detail, `http_guard.py`).

Limits (`config.ServerConfig`, all range-checked): connections are capped and each request must
arrive whole within an absolute receipt deadline (`http_guard.py`); shutdown (SIGTERM/SIGINT in
`cli.py`) stops accepting, waits up to `SHUTDOWN_TIMEOUT` for requests in progress and up to
`DRAIN_TIMEOUT` for queued appends, fails whatever is left, and always returns.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from aiohttp import web

from hushcc.errors import ProtocolError, VerificationError
from transparency_log import merkle
from transparency_log.config import ServerConfig
from transparency_log.entry import verify_signed_entry
from transparency_log.http_guard import ConnectionGuard
from transparency_log.storage import StorageError
from transparency_log.tiles import (
    ENTRIES_LEVEL,
    TILE_WIDTH,
    Tile,
    encode_bundle,
    level_width,
    tile_hashes,
)

if TYPE_CHECKING:
    from transparency_log.note import Verifier
    from transparency_log.storage import LogStorage

FULL_TILE_CACHE = "public, max-age=31536000, immutable"
PARTIAL_TILE_CACHE = "public, max-age=5"
MAX_ADD_BODY = 256 * 1024
DRAIN_TIMEOUT = 30.0  # seconds a shutdown waits for queued appends to become durable
SHUTDOWN_TIMEOUT = 30.0  # seconds a shutdown waits for requests in progress


class Batcher:
    """Group concurrent appends into one durable batch each (one fsync, one checkpoint).

    An entry already in the log, or twice in one batch, is not appended again: its waiters get
    the index it already has and the checkpoint published now (so a retried add is harmless).
    """

    def __init__(self, storage: LogStorage, max_batch: int = 4096) -> None:
        """Append to `storage`, at most `max_batch` (>= 1) entries per batch."""
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self.storage = storage
        self.max_batch = max_batch
        self._pending: list[tuple[bytes, asyncio.Future[tuple[int, bytes]]]] = []
        self._wakeup = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tlog-writer")
        self._task: asyncio.Task[None] | None = None
        self.batches = 0

    def start(self) -> None:
        """Start the writer task."""
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def add(self, entry: bytes) -> tuple[int, bytes]:
        """Queue `entry`; return its index and the checkpoint of the batch that made it durable."""
        future: asyncio.Future[tuple[int, bytes]] = asyncio.get_running_loop().create_future()
        self._pending.append((entry, future))
        self._idle.clear()
        self._wakeup.set()
        return await future

    async def resign(self) -> bytes:
        """Durably re-sign the current tree (an empty batch)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self.storage.resign)

    def _dedupe(self, batch: list[tuple[bytes, asyncio.Future[tuple[int, bytes]]]]
                ) -> dict[bytes, list[asyncio.Future[tuple[int, bytes]]]]:
        """Answer entries already logged; group the rest by entry, in arrival order."""
        waiters: dict[bytes, list[asyncio.Future[tuple[int, bytes]]]] = {}
        for entry, fut in batch:
            index = self.storage.index_of(entry)
            if index is not None:
                if not fut.done():
                    fut.set_result((index, self.storage.checkpoint_note))
            else:
                waiters.setdefault(entry, []).append(fut)
        return waiters

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._pending:
                batch = self._pending[: self.max_batch]
                del self._pending[: self.max_batch]
                waiters = self._dedupe(batch)
                if not waiters:
                    continue
                entries = list(waiters)
                try:
                    first, note = await loop.run_in_executor(
                        self._executor, self.storage.append_batch, entries)
                except asyncio.CancelledError:
                    _fail([f for fs in waiters.values() for f in fs],
                          StorageError("the log is shutting down"))
                    raise
                except Exception as exc:  # noqa: BLE001 - every waiter must hear of any failure
                    error = exc if isinstance(exc, StorageError) else StorageError("append failed")
                    _fail([f for fs in waiters.values() for f in fs], error)
                    continue
                self.batches += 1
                for i, entry in enumerate(entries):
                    for fut in waiters[entry]:
                        if not fut.done():
                            fut.set_result((first + i, note))
            self._idle.set()

    async def close(self, drain_timeout: float = DRAIN_TIMEOUT) -> None:
        """Finish pending batches (for at most `drain_timeout` seconds), then stop the writer.

        Whatever is still queued after the timeout fails with `StorageError`, so closing always
        ends, whatever state storage is in.
        """
        drained = True
        try:
            await asyncio.wait_for(self._idle.wait(), drain_timeout)
        except TimeoutError:
            drained = False
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        pending, self._pending = self._pending, []
        _fail([f for _, f in pending], StorageError("the log is shutting down"))
        # A write stuck in the kernel must not hold the process: wait only for one that ended.
        self._executor.shutdown(wait=drained, cancel_futures=True)


def _fail(futures: list[asyncio.Future[tuple[int, bytes]]], error: StorageError) -> None:
    for fut in futures:
        if not fut.done():
            fut.set_exception(error)


def _int_param(request: web.Request, name: str) -> int:
    text = request.query.get(name, "")
    if not text.isascii() or not text.isdigit() or len(text) > 19:
        raise web.HTTPBadRequest(text=f"query parameter {name} must be a non-negative integer")
    return int(text)


def _error(status: int, message: str) -> web.Response:
    """A JSON error response; messages name what failed, never request content."""
    return web.json_response({"error": message}, status=status)


class LogServer:
    """The aiohttp application around one `LogStorage`."""

    def __init__(self, storage: LogStorage, release_key: Verifier,
                 config: ServerConfig | None = None) -> None:
        """Serve `storage`, accepting entries signed by `release_key`."""
        self.storage = storage
        self.release_key = release_key
        self.config = config or ServerConfig()
        self.guard = ConnectionGuard(receipt_timeout=self.config.receipt_timeout,
                                     max_connections=self.config.max_connections)
        self.batcher: Batcher | None = None
        self._resigner: asyncio.Task[None] | None = None

    def app(self) -> web.Application:
        """Build the aiohttp application."""
        app = web.Application(client_max_size=MAX_ADD_BODY)
        self.guard.install(app)
        app.router.add_get("/checkpoint", self.get_checkpoint)
        app.router.add_get("/tile/{path:.+}", self.get_tile)
        app.router.add_get("/proof/inclusion", self.get_inclusion)
        app.router.add_get("/proof/consistency", self.get_consistency)
        app.router.add_post("/add", self.post_add)
        app.on_startup.append(self._startup)
        app.on_cleanup.append(self._cleanup)
        return app

    async def _startup(self, _app: web.Application) -> None:
        self.batcher = Batcher(self.storage, self.config.max_batch)
        self.batcher.start()
        self._resigner = asyncio.get_running_loop().create_task(self._resign_loop())

    async def _cleanup(self, _app: web.Application) -> None:
        if self._resigner is not None:
            self._resigner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._resigner
        if self.batcher is not None:
            await self.batcher.close()

    async def _resign_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.resign_interval / 4)
            stamp = self.storage.checkpoint.timestamp or 0
            if self.batcher is not None and (
                self.storage.clock() - stamp >= self.config.resign_interval
            ):
                with contextlib.suppress(StorageError):
                    await self.batcher.resign()

    async def get_checkpoint(self, _request: web.Request) -> web.Response:
        """Serve the published signed checkpoint."""
        return web.Response(body=self.storage.checkpoint_note, content_type="text/plain",
                            charset="utf-8", headers={"Cache-Control": "no-cache"})

    async def get_tile(self, request: web.Request) -> web.Response:
        """Serve a hash tile or an entry bundle of the published tree."""
        try:
            tile = Tile.from_path("tile/" + request.match_info["path"])
        except ProtocolError as exc:
            raise web.HTTPNotFound(text="no such tile") from exc
        available = level_width(self.storage.size, max(tile.level, 0))
        if tile.index * TILE_WIDTH + tile.width > available:
            raise web.HTTPNotFound(text="tile is beyond the published tree")
        start = tile.index * TILE_WIDTH
        if tile.level == ENTRIES_LEVEL:
            body = encode_bundle(self.storage.entries(start, start + tile.width))
        else:
            body = tile_hashes(self.storage.tree, tile)
        cache = FULL_TILE_CACHE if tile.full else PARTIAL_TILE_CACHE
        response = web.Response(body=body, content_type="application/octet-stream",
                                headers={"Cache-Control": cache})
        if tile.level == ENTRIES_LEVEL:
            response.enable_compression()  # tlog-tiles: bundles SHOULD be compressed (gzip)
        return response

    async def get_inclusion(self, request: web.Request) -> web.Response:
        """Serve an inclusion proof for `index` in the tree of `size`."""
        index, size = _int_param(request, "index"), _int_param(request, "size")
        if not index < size <= self.storage.size:
            raise web.HTTPBadRequest(text="need index < size <= published tree size")
        hashes = merkle.inclusion_proof(self.storage.tree, index, size)
        return web.json_response({"index": index, "size": size,
                                  "hashes": [base64.b64encode(h).decode() for h in hashes]})

    async def get_consistency(self, request: web.Request) -> web.Response:
        """Serve a consistency proof between two published tree sizes."""
        old, new = _int_param(request, "from"), _int_param(request, "to")
        if not 0 < old <= new <= self.storage.size:
            raise web.HTTPBadRequest(text="need 0 < from <= to <= published tree size")
        hashes = merkle.consistency_proof(self.storage.tree, old, new)
        return web.json_response({"from": old, "to": new,
                                  "hashes": [base64.b64encode(h).decode() for h in hashes]})

    async def post_add(self, request: web.Request) -> web.Response:  # noqa: PLR0911
        """Append a release entry signed by the release key."""
        if request.content_length is not None and request.content_length > MAX_ADD_BODY:
            return _error(413, "entry too large")
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return _error(413, "entry too large")
        try:
            entry = verify_signed_entry(body, self.release_key)
        except ProtocolError as exc:
            return _error(400, str(exc))
        except VerificationError as exc:
            return _error(403, str(exc))
        if self.batcher is None:
            return _error(503, "log is not running")
        try:
            index, note = await self.batcher.add(entry.canonical)
        except StorageError:
            return _error(503, "log could not append durably")
        size = int(note.split(b"\n", 2)[1])
        proof = merkle.inclusion_proof(self.storage.tree, index, size)
        return web.json_response({
            "index": index,
            "checkpoint": note.decode(),
            "inclusion_proof": [base64.b64encode(h).decode() for h in proof],
        })


async def serve(server: LogServer, host: str, port: int, stop: asyncio.Event) -> None:
    """Run `server` on host:port, print the ready line, and drain when `stop` is set.

    Connections go through the server's `ConnectionGuard` (cap and receipt deadline); aiohttp's
    keep-alive timeout closes idle connections after the same number of seconds.
    """
    timeout = server.config.receipt_timeout
    runner = web.AppRunner(server.app(), access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT,
                           keepalive_timeout=timeout)
    await runner.setup()
    assert runner.server is not None
    listener = await asyncio.get_running_loop().create_server(
        server.guard.protocol_factory(runner.server), host, port, backlog=1024)
    try:
        bound = listener.sockets[0].getsockname()[1]
        shown = f"[{host}]" if ":" in host else host
        print(f"listening on http://{shown}:{bound}", flush=True)  # noqa: T201 - the ready line
        await stop.wait()
    finally:
        listener.close()
        await runner.cleanup()
