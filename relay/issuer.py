"""The Privacy Pass issuer service (aiohttp): RFC 9578 §4 directory and §6 `POST /token-request`.

Routes:
* `GET /.well-known/private-token-issuer-directory`: `application/private-token-issuer-directory`
  JSON with `issuer-request-uri` `/token-request` and the one token key (with `not-before`),
  `Cache-Control: max-age=...` (§4);
* `POST /token-request`: `Content-Type: application/private-token-request`, one TokenRequest;
  answers 200 `application/private-token-response` with the TokenResponse; 422 for a request
  §6.2 says to refuse (type, truncated key id, size); 415 wrong media type; 413 too large;
  401 without a valid API key (`Authorization: Bearer KEY`, keys from a 0600 file); 429 with
  `Retry-After` once a key has used its batch (`quota` tokens per `window` seconds);
* the same URL with `Content-Type: application/private-token-generic-batch-request`: a
  GenericBatchTokenRequest (draft-ietf-privacypass-batched-tokens §5, `batched.py`) answered
  with a GenericBatchTokenResponse: 200 when every request is issued, 206 when some are (a
  request for another key or token type, or past the quota, gets an absent entry), 400 when
  none is (with `Retry-After` if the quota was the reason), 422 when the batch does not parse
  (an unknown token type included), 413 above `MAX_BATCH` type-2 requests' worth of bytes (the
  draft's per-request limit, §7.2). Every token issued counts against the quota.

Invariants:
* The issuer authenticates users but never sees redemption: it holds no spent set and learns
  nothing but the blinded message (RFC 9578 §6.2).
* Signing runs on a worker thread so a batch of concurrent requests does not stall the loop;
  the §4.3 fault check runs before any byte leaves (500 otherwise).
* Logs: nothing per request. Error bodies name the failure, never key material or content.
"""

from __future__ import annotations

import asyncio
import hashlib
import stat
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from aiohttp import web

from hushcc.errors import ConfigError, ProtocolError, VerificationError
from hushcc.files import read_text
from relay.authscheme import (
    DIRECTORY_MEDIA_TYPE,
    DIRECTORY_PATH,
    REQUEST_MEDIA_TYPE,
    RESPONSE_MEDIA_TYPE,
    IssuerDirectory,
    TokenKeyEntry,
)
from relay.batched import (
    GENERIC_BATCH_REQUEST_MEDIA_TYPE,
    GENERIC_BATCH_RESPONSE_MEDIA_TYPE,
    MAX_BATCH,
    REQUEST_SIZES,
    GenericBatchTokenRequest,
    GenericBatchTokenResponse,
    GenericTokenResponse,
)
from relay.privacypass import NK, TOKEN_TYPE_BLIND_RSA, TokenRequest, TokenResponse, issue

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from relay.blindrsa import BlindSigner
    from relay.issuer_keys import PinnedKey

REQUEST_PATH = "/token-request"
MAX_REQUEST = 3 + NK
MAX_BATCH_REQUEST = 8 + MAX_BATCH * REQUEST_SIZES[TOKEN_TYPE_BLIND_RSA]


def read_api_keys(path: Path) -> frozenset[bytes]:
    """Read the API-key file (one key per line, `#` comments): SHA-256 digests of the keys.

    Raises:
        ConfigError: missing, readable by others, or empty.
    """
    text = read_text(path, "API key file")  # missing, a directory, empty: named as such
    if stat.S_IMODE(path.stat().st_mode) & 0o077:
        raise ConfigError(f"API key file is readable by others (chmod 600): {path}")
    keys = frozenset(hashlib.sha256(line.strip().encode()).digest()
                     for line in text.splitlines()
                     if line.strip() and not line.lstrip().startswith("#"))
    if not keys:
        raise ConfigError(f"API key file holds no keys: {path}")
    return keys


@dataclass(slots=True)
class Quota:
    """Fixed-window batch allowance per API key: `limit` tokens per `window` seconds."""

    limit: int
    window: float
    clock: Callable[[], float] = time.monotonic
    _used: dict[bytes, tuple[float, int]] = field(default_factory=dict)

    def take(self, who: bytes) -> float:
        """Count one token for `who`; return 0, or the seconds until its next window."""
        now = self.clock()
        start, used = self._used.get(who, (now, 0))
        if now - start >= self.window:
            start, used = now, 0
        if used >= self.limit:
            return start + self.window - now
        self._used[who] = (start, used + 1)
        return 0.0


@dataclass(frozen=True, slots=True)
class IssuerConfig:
    """What the issuer serves and whom it serves."""

    pinned: PinnedKey
    api_keys: frozenset[bytes]
    quota: int = 1000
    window: float = 3600.0
    directory_max_age: int = 3600


class IssuerServer:
    """The aiohttp application around one issuer key."""

    def __init__(self, signer: BlindSigner, config: IssuerConfig,
                 clock: Callable[[], float] = time.time) -> None:
        """Issue with `signer`, whose public key must be `config.pinned.key`.

        Raises:
            ConfigError: the signer's key is not the pinned key.
        """
        if signer.public_key.public_numbers() != config.pinned.key.rsa_key.public_numbers():
            raise ConfigError("issuer private key does not match its .pub record")
        self.signer = signer
        self.config = config
        self.clock = clock
        self.quota = Quota(config.quota, config.window)
        entry = TokenKeyEntry(config.pinned.key, config.pinned.not_before)
        self.directory = IssuerDirectory(REQUEST_PATH, (entry,)).to_bytes()

    def app(self) -> web.Application:
        """Build the aiohttp application."""
        app = web.Application(client_max_size=MAX_BATCH_REQUEST)
        app.router.add_get(DIRECTORY_PATH, self.get_directory)
        app.router.add_post(REQUEST_PATH, self.post_token_request)
        return app

    async def get_directory(self, _request: web.Request) -> web.Response:
        """Serve the issuer directory."""
        return web.Response(body=self.directory, content_type=DIRECTORY_MEDIA_TYPE,
                            headers={"Cache-Control":
                                     f"max-age={self.config.directory_max_age}"})

    def _client(self, request: web.Request) -> bytes | None:
        scheme, _, key = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            return None
        digest = hashlib.sha256(key.strip().encode()).digest()
        return digest if digest in self.config.api_keys else None

    @staticmethod
    async def _read(request: web.Request, limit: int) -> web.Response | bytes:
        """The request body, or the 413 answer once it exceeds `limit` bytes."""
        too_large = web.Response(status=413, text="request too large")
        if request.content_length is not None and request.content_length > limit:
            return too_large
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return too_large
        return too_large if len(body) > limit else body

    def _outside_epoch(self) -> web.Response | None:
        now = self.clock()
        if not self.config.pinned.not_before <= now < self.config.pinned.not_after:
            return web.Response(status=503, text="issuer key is outside its epoch")
        return None

    async def post_token_request(self, request: web.Request) -> web.Response:
        """The Issuer Request URL: one RFC 9578 TokenRequest, or a generic batch of them."""
        who = self._client(request)
        if who is None:
            return web.Response(status=401, text="API key required",
                                headers={"WWW-Authenticate": 'Bearer realm="issuer"'})
        if request.content_type == GENERIC_BATCH_REQUEST_MEDIA_TYPE:
            return await self._post_batch(request, who)
        if request.content_type != REQUEST_MEDIA_TYPE:
            return web.Response(status=415, text=f"expected {REQUEST_MEDIA_TYPE} or "
                                f"{GENERIC_BATCH_REQUEST_MEDIA_TYPE}")
        return await self._post_single(request, who)

    async def _post_single(self, request: web.Request, who: bytes) -> web.Response:  # noqa: PLR0911
        """RFC 9578 §6.2: one TokenRequest in, one TokenResponse out."""
        body = await self._read(request, MAX_REQUEST)
        if isinstance(body, web.Response):
            return body
        if (refused := self._outside_epoch()) is not None:
            return refused
        try:
            token_request = TokenRequest.from_bytes(body)
        except ProtocolError as exc:
            return web.Response(status=422, text=str(exc))
        if token_request.truncated_token_key_id != self.config.pinned.key.truncated_token_key_id:
            return web.Response(status=422, text="unknown token key")
        wait = self.quota.take(who)  # only well-formed requests count against the batch
        if wait > 0:
            return web.Response(status=429, text="token batch used up",
                                headers={"Retry-After": str(max(1, int(wait + 0.999)))})
        loop = asyncio.get_running_loop()
        try:
            response = await loop.run_in_executor(
                None, issue, self.signer, self.config.pinned.key, token_request)
        except ProtocolError as exc:
            return web.Response(status=422, text=str(exc))
        except VerificationError:
            return web.Response(status=500, text="signing failure")
        return web.Response(body=response.to_bytes(), content_type=RESPONSE_MEDIA_TYPE)

    async def _post_batch(self, request: web.Request, who: bytes) -> web.Response:
        """Draft-ietf-privacypass-batched-tokens §5.2: a generic batch in, optional answers out."""
        body = await self._read(request, MAX_BATCH_REQUEST)
        if isinstance(body, web.Response):
            return body
        if (refused := self._outside_epoch()) is not None:
            return refused
        try:
            batch = GenericBatchTokenRequest.from_bytes(body)
        except ProtocolError as exc:
            return web.Response(status=422, text=str(exc))
        admitted: list[TokenRequest | None] = []
        wait = 0.0
        for item in batch.requests:
            admitted.append(None)
            if item.token_type != TOKEN_TYPE_BLIND_RSA or wait > 0:
                continue
            parsed = TokenRequest.from_bytes(item.token_request)
            if parsed.truncated_token_key_id != self.config.pinned.key.truncated_token_key_id:
                continue
            wait = self.quota.take(who)  # only requests it would sign count against the batch
            if wait == 0:
                admitted[-1] = parsed
        if all(r is None for r in admitted):
            headers = {"Retry-After": str(max(1, int(wait + 0.999)))} if wait > 0 else None
            return web.Response(status=400, text="no token issued", headers=headers)
        try:
            signed = await asyncio.get_running_loop().run_in_executor(None, self._sign, admitted)
        except VerificationError:
            return web.Response(status=500, text="signing failure")
        answer = GenericBatchTokenResponse(tuple(
            None if r is None else GenericTokenResponse(TOKEN_TYPE_BLIND_RSA, r.to_bytes())
            for r in signed))
        return web.Response(status=200 if None not in signed else 206, body=answer.to_bytes(),
                            content_type=GENERIC_BATCH_RESPONSE_MEDIA_TYPE)

    def _sign(self, requests: list[TokenRequest | None]) -> list[TokenResponse | None]:
        """Sign every admitted request (on a worker thread); a fault check failure raises."""
        return [None if r is None else issue(self.signer, self.config.pinned.key, r)
                for r in requests]
