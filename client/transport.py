"""The SDK's one I/O seam: HTTP GET and streaming POST, behind a small interface.

`Transport` is what the SDK calls; `AiohttpTransport` is the real one. Tests plug in a
recording wrapper to prove that nothing leaves before verification (SECURITY.md C2), and a
faulty one for infrastructure faults (A8), instead of mocking the SDK's internals.

Invariants:
* Every call has a total timeout; a response larger than `max_body` (whole) or a streamed
  piece larger than `max_chunk` is cut off with `TransportError`.
* No cookies are kept (a `DummyCookieJar`), no redirects are followed, nothing identifying
  is added: the only headers sent are the ones the caller passes.
* Every failure (connection, timeout, truncation, a status the caller did not expect) is a
  `TransportError` naming the step and the URL's host, never a body or a header value.
"""

from __future__ import annotations

import abc
import urllib.parse
from dataclasses import dataclass
from typing import TYPE_CHECKING, Self

import aiohttp

from hushcc.errors import HushError

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Mapping
    from types import TracebackType

MAX_BODY = 8 << 20
MAX_CHUNK = 1 << 20


class TransportError(HushError):
    """The relay, issuer or log could not be reached, timed out, or answered wrongly."""


@dataclass(frozen=True, slots=True)
class Reply:
    """A whole response: status, headers (lower-cased names) and body."""

    status: int
    headers: Mapping[str, str]
    body: bytes


@dataclass(frozen=True, slots=True)
class StreamHead:
    """The status and headers of a streamed response, before its body."""

    status: int
    headers: Mapping[str, str]


class Transport(abc.ABC):
    """HTTP as the SDK needs it."""

    @abc.abstractmethod
    async def get(self, url: str, *, headers: Mapping[str, str] | None = None) -> Reply:
        """GET `url` and read the whole body."""

    @abc.abstractmethod
    async def post(self, url: str, body: bytes, *, headers: Mapping[str, str]) -> Reply:
        """POST `body` and read the whole response."""

    @abc.abstractmethod
    def post_stream(self, url: str, body: bytes, *, headers: Mapping[str, str]
                    ) -> AsyncIterator[StreamHead | bytes]:
        """POST `body`; yield the head, then each body piece as it arrives."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Release connections."""


def _host(url: str) -> str:
    return urllib.parse.urlsplit(url).hostname or "?"


class AiohttpTransport(Transport):
    """The real transport: one aiohttp session, no cookies, no redirects, bounded reads."""

    def __init__(self, *, timeout: float = 30.0, max_body: int = MAX_BODY,
                 max_chunk: int = MAX_CHUNK) -> None:
        """Use a total timeout per call and the size limits above."""
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._max_body = max_body
        self._max_chunk = max_chunk
        self._session: aiohttp.ClientSession | None = None

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=self._timeout, cookie_jar=aiohttp.DummyCookieJar(),
                auto_decompress=False, skip_auto_headers=("User-Agent",))
        return self._session

    async def _read(self, response: aiohttp.ClientResponse, url: str) -> bytes:
        body = bytearray()
        async for piece in response.content.iter_chunked(64 << 10):
            body += piece
            if len(body) > self._max_body:
                raise TransportError(f"answer from {_host(url)} is too large")
        return bytes(body)

    async def _request(self, method: str, url: str, body: bytes | None,
                       headers: Mapping[str, str] | None) -> Reply:
        try:
            async with self._open().request(method, url, data=body, headers=headers,
                                            allow_redirects=False) as response:
                data = await self._read(response, url)
                return Reply(response.status, _lower(response.headers), data)
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise TransportError(f"{method} to {_host(url)} failed "
                                 f"({type(exc).__name__})") from None

    async def get(self, url: str, *, headers: Mapping[str, str] | None = None) -> Reply:
        """GET `url` and read the whole body (bounded)."""
        return await self._request("GET", url, None, headers)

    async def post(self, url: str, body: bytes, *, headers: Mapping[str, str]) -> Reply:
        """POST `body` and read the whole response (bounded)."""
        return await self._request("POST", url, body, headers)

    async def post_stream(self, url: str, body: bytes, *, headers: Mapping[str, str]
                          ) -> AsyncIterator[StreamHead | bytes]:
        """POST `body`; yield the head, then each body piece as it arrives (bounded)."""
        try:
            async with self._open().post(url, data=body, headers=headers,
                                         allow_redirects=False) as response:
                yield StreamHead(response.status, _lower(response.headers))
                while True:
                    piece, _ = await response.content.readchunk()
                    if not piece:
                        break
                    if len(piece) > self._max_chunk:
                        raise TransportError(f"a piece from {_host(url)} is too large")
                    yield piece
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise TransportError(f"POST to {_host(url)} failed ({type(exc).__name__})") from None

    async def close(self) -> None:
        """Close the session."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> Self:
        """Use as `async with AiohttpTransport() as transport:`."""
        return self

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        """Close on exit."""
        await self.close()


def _lower(headers: Mapping[str, str]) -> dict[str, str]:
    return {name.lower(): value for name, value in headers.items()}
