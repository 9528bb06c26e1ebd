"""Test helpers for the SDK: transports that record, fail, or serve a log's tiles."""

from __future__ import annotations

from typing import TYPE_CHECKING

from client.transport import Reply, StreamHead, Transport, TransportError
from transparency_log import merkle
from transparency_log.tiles import Tile, tile_hashes

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Mapping


class TileServer(Transport):
    """Serves a Merkle tree's `tlog-tiles` hash tiles (full and partial) from memory."""

    def __init__(self, tree: merkle.MerkleTree) -> None:
        self.tree = tree
        self.paths: list[str] = []

    async def get(self, url: str, *, headers: Mapping[str, str] | None = None) -> Reply:
        path = url.split("/", 3)[3]
        self.paths.append(path)
        try:
            tile = Tile.from_path(path)
        except Exception:
            return Reply(404, {}, b"")
        return Reply(200, {}, tile_hashes(self.tree, tile))

    async def post(self, url: str, body: bytes, *, headers: Mapping[str, str]) -> Reply:
        raise TransportError("not a POST route")

    async def post_stream(self, url: str, body: bytes, *, headers: Mapping[str, str]
                          ) -> AsyncIterator[StreamHead | bytes]:
        raise TransportError("not a POST route")
        yield b""  # pragma: no cover - makes this an async generator

    async def close(self) -> None:
        return None
