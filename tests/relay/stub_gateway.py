"""A small real OHTTP gateway stand-in for the relay's end-to-end tests (until `hushcc node serve`).

Run as `python -m tests.relay.stub_gateway --key FILE --record FILE [--mode MODE] --port 0`;
prints `listening on http://127.0.0.1:PORT`, stops on SIGTERM. It really decapsulates with the
OHTTP key in FILE and really encapsulates its answers (the relay under test cannot tell it from a
node), and appends one JSON line per request it receives to the record file: the headers it got
and the SHA-256 of the body, so tests can check exactly what the relay forwarded.

* `POST /ohttp` `message/ohttp-req` -> `message/ohttp-res` whose plaintext is b"echo:" + request.
* `POST /ohttp` `message/ohttp-chunked-req` -> `message/ohttp-chunked-res`: one chunk at once,
  then waits for `POST /release` before the rest (so a test sees streaming, not buffering).
* `GET /attestation[?nonce=]` -> a JSON object with a refresh counter and the nonce.
* modes: `reset` aborts the connection on `POST /ohttp` (R4); `hang` never answers it; `flood`
  streams 32 MiB and records how many 64 KiB chunks left before the relay cut it (R2 slow reader);
  `hold-attestation` keeps each `GET /attestation?nonce=` open until `POST /release`.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import signal
from pathlib import Path

from aiohttp import web

from ohttp.chunked import ChunkedRequestDecoder, ChunkedResponseEncoder
from ohttp.encapsulation import decapsulate_request, encapsulate_response
from ohttp.keyconfig import GatewayKey


class Stub:
    def __init__(self, key: GatewayKey, record: Path, mode: str) -> None:
        self.key, self.record, self.mode = key, record, mode
        self.attestations = 0
        self.release = asyncio.Event()

    def _log(self, request: web.Request, body: bytes) -> None:
        entry = {"method": request.method, "path": request.path_qs,
                 "headers": [[k, v] for k, v in request.headers.items()],
                 "body_sha256": hashlib.sha256(body).hexdigest()}
        with self.record.open("a") as f:
            f.write(json.dumps(entry) + "\n")

    async def ohttp(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self._log(request, body)
        if self.mode == "reset":
            assert request.transport is not None
            request.transport.abort()
            return web.Response(status=500)
        if self.mode == "hang":
            await asyncio.sleep(3600)
        if self.mode == "flood":
            return await self._flood(request)
        if request.content_type == "message/ohttp-chunked-req":
            decoder = ChunkedRequestDecoder(self.key)
            plaintext = b"".join(decoder.feed(body)) + decoder.finish()
            assert decoder.context is not None
            encoder = ChunkedResponseEncoder(decoder.context)
            response = web.StreamResponse(headers={"Content-Type": "message/ohttp-chunked-res",
                                                   "Incremental": "?1", "X-Gateway": "leak"})
            await response.prepare(request)
            await response.write(encoder.chunk(b"first:" + plaintext))
            await self.release.wait()
            self.release.clear()
            await response.write(encoder.chunk(b"second"))
            await response.write(encoder.final(b"last"))
            await response.write_eof()
            return response
        plaintext, ctx = decapsulate_request(body, self.key)
        return web.Response(body=encapsulate_response(ctx, b"echo:" + plaintext),
                            content_type="message/ohttp-res",
                            headers={"X-Gateway": "leak", "Set-Cookie": "a=b"})

    async def _flood(self, request: web.Request) -> web.StreamResponse:
        """Stream 32 MiB in 64 KiB chunks; record how many went out before the relay gave up."""
        response = web.StreamResponse(headers={"Content-Type": "message/ohttp-chunked-res"})
        await response.prepare(request)
        sent = 0
        try:
            for _ in range(512):
                await response.write(bytes(1 << 16))
                sent += 1
            await response.write_eof()
        except (ConnectionError, OSError):
            pass
        finally:
            with self.record.open("a") as f:
                f.write(json.dumps({"method": "FLOOD", "chunks_sent": sent}) + "\n")
        return response

    async def release_stream(self, _request: web.Request) -> web.Response:
        self.release.set()
        return web.Response(text="ok")

    async def attestation(self, request: web.Request) -> web.Response:
        self._log(request, b"")
        if self.mode == "hold-attestation" and "nonce" in request.query:
            await self.release.wait()
        self.attestations += 1
        return web.json_response({"node": "stub", "serial": self.attestations,
                                  "nonce": request.query.get("nonce")})


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--key", required=True)
    parser.add_argument("--record", required=True)
    parser.add_argument("--mode", default="normal")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    key = GatewayKey.from_key_file(Path(args.key).read_bytes())  # noqa: ASYNC240 - startup
    stub = Stub(key, Path(args.record), args.mode)
    app = web.Application(client_max_size=1 << 21)
    app.router.add_post("/ohttp", stub.ohttp)
    app.router.add_post("/release", stub.release_stream)
    app.router.add_get("/attestation", stub.attestation)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", args.port)
    await site.start()
    print(f"listening on http://127.0.0.1:{runner.addresses[0][1]}", flush=True)  # noqa: T201
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await runner.cleanup()


if __name__ == "__main__":
    asyncio.run(main())
