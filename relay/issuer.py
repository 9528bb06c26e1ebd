"""The Privacy Pass issuer service (aiohttp): RFC 9578 §4 directory and §6 `POST /token-request`.

Routes:
* `GET /.well-known/private-token-issuer-directory`: `application/private-token-issuer-directory`
  JSON with `issuer-request-uri` `/token-request` and the one token key (with `not-before`),
  `Cache-Control: max-age=...` (§4);
* `POST /token-request`: `Content-Type: application/private-token-request`, one TokenRequest;
  answers 200 `application/private-token-response` with the TokenResponse; 422 for a request
  §6.2 says to refuse (type, truncated key id, size); 415 wrong media type; 413 too large;
  401 without a valid API key (`Authorization: Bearer KEY`, keys from a 0600 file); 429 with
  `Retry-After` once a key has used its batch (`quota` tokens per `window` seconds).

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
from relay.privacypass import NK, TokenRequest, issue

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from relay.blindrsa import BlindSigner
    from relay.issuer_keys import PinnedKey

REQUEST_PATH = "/token-request"
MAX_REQUEST = 3 + NK


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
        app = web.Application(client_max_size=MAX_REQUEST)
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

    async def _read(self, request: web.Request) -> web.Response | bytes:
        """The request body, or the 415 / 413 answer."""
        if request.content_type != REQUEST_MEDIA_TYPE:
            return web.Response(status=415, text=f"expected {REQUEST_MEDIA_TYPE}")
        if request.content_length is not None and request.content_length > MAX_REQUEST:
            return web.Response(status=413, text="request too large")
        try:
            return await request.read()
        except web.HTTPRequestEntityTooLarge:
            return web.Response(status=413, text="request too large")

    async def post_token_request(self, request: web.Request) -> web.Response:  # noqa: PLR0911
        """RFC 9578 §6.2: one TokenRequest in, one TokenResponse out."""
        who = self._client(request)
        if who is None:
            return web.Response(status=401, text="API key required",
                                headers={"WWW-Authenticate": 'Bearer realm="issuer"'})
        body = await self._read(request)
        if isinstance(body, web.Response):
            return body
        now = self.clock()
        if not self.config.pinned.not_before <= now < self.config.pinned.not_after:
            return web.Response(status=503, text="issuer key is outside its epoch")
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
