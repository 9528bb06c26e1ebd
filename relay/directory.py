"""The relay's node directory: every configured node's attestation bundle, refreshed on a schedule.

Not pure (HTTP client); the clock is a parameter. The relay fetches `GET {gateway}/attestation`
for each configured node every `refresh_interval` seconds, never on a client's request, and
serves the same bytes to every client until the next refresh (K2, non-targetability).

Invariants:
* Bundles are opaque: the relay checks only that each is a JSON object of bounded size and embeds
  its bytes unchanged, `{"nodes": [bundle, ...]}`, in configuration order.
* A node that fails a refresh keeps its last good bundle for `max_stale` seconds, then drops
  out; the client verifies freshness itself.
* Node ids and gateway URLs come only from the relay's configuration (an allowlist).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import re
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import aiohttp

from hushcc.errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

NODE_ID = re.compile(r"[0-9a-f]{64}")
MAX_BUNDLE = 1 << 20


@dataclass(frozen=True, slots=True)
class NodeEntry:
    """One allowlisted node: its id (hex SHA-256 of its identity key) and gateway base URL."""

    node_id: str
    url: str

    def __post_init__(self) -> None:
        """Check the id's form and the URL's scheme."""
        if NODE_ID.fullmatch(self.node_id) is None:
            raise ConfigError("node id must be 64 lowercase hex digits")
        if not self.url.startswith(("http://", "https://")):
            raise ConfigError("node URL must be http(s)")


class NodeDirectory:
    """The current directory bytes and the refresh loop that renews them."""

    def __init__(self, nodes: Sequence[NodeEntry], *, refresh_interval: float = 60.0,
                 max_stale: float = 600.0, fetch_timeout: float = 10.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        """Serve the bundles of `nodes`."""
        self.nodes = {n.node_id: n for n in nodes}
        if len(self.nodes) != len(nodes):
            raise ConfigError("duplicate node id")
        self.order = [n.node_id for n in nodes]
        self.refresh_interval = refresh_interval
        self.max_stale = max_stale
        self.fetch_timeout = fetch_timeout
        self.clock = clock
        self._good: dict[str, tuple[float, bytes]] = {}
        self.body = b'{"nodes": []}'
        self.etag = self._etag(self.body)
        self.refreshes = 0

    @staticmethod
    def _etag(body: bytes) -> str:
        return '"' + hashlib.sha256(body).hexdigest()[:32] + '"'

    async def _fetch(self, session: aiohttp.ClientSession, node: NodeEntry) -> bytes | None:
        timeout = aiohttp.ClientTimeout(total=self.fetch_timeout)
        try:
            async with session.get(node.url + "/attestation", timeout=timeout,
                                   allow_redirects=False) as response:
                if response.status != 200:
                    return None
                body = await response.content.read(MAX_BUNDLE + 1)
        except (aiohttp.ClientError, TimeoutError):
            return None
        if len(body) > MAX_BUNDLE:
            return None
        try:
            value = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError):
            return None
        return body.strip() if isinstance(value, dict) else None

    async def refresh(self, session: aiohttp.ClientSession) -> None:
        """Fetch every node once and publish the new directory bytes."""
        results = await asyncio.gather(*(self._fetch(session, self.nodes[i]) for i in self.order))
        now = self.clock()
        for node_id, body in zip(self.order, results, strict=True):
            if body is not None:
                self._good[node_id] = (now, body)
            elif node_id in self._good and now - self._good[node_id][0] > self.max_stale:
                del self._good[node_id]
        bundles = [self._good[i][1] for i in self.order if i in self._good]
        self.body = b'{"nodes": [' + b", ".join(bundles) + b"]}"
        self.etag = self._etag(self.body)
        self.refreshes += 1

    async def run(self, session: aiohttp.ClientSession) -> None:
        """Refresh every `refresh_interval` seconds until cancelled."""
        while True:
            await asyncio.sleep(self.refresh_interval)
            with contextlib.suppress(Exception):  # a failed round keeps the last directory
                await self.refresh(session)
