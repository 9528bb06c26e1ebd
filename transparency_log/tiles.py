"""C2SP tlog-tiles: tile paths, tile contents, entry bundles, and proofs from tiles (pure).

c2sp.org/tlog-tiles, fixed tile height 8 (width 256):
* hash tile `tile/<L>/<N>[.p/<W>]`: the hashes of the tree nodes at Merkle level `8 * L`, indices
  `[N * 256, N * 256 + W)`, 32 bytes each, concatenated; full tiles have W = 256 and no `.p/`.
* entry bundle `tile/entries/<N>[.p/<W>]`: entries `[N * 256, N * 256 + W)`, each prefixed with
  its length as a 2-byte big-endian integer (so entries are at most 65535 bytes).
* `<N>` is written in 3-digit decimal groups, every group but the last prefixed with `x`
  (`1234067` -> `x001/x234/067`).

`TileReader` is a `merkle.NodeSource` built on a fetch function, so a client computes any
inclusion or consistency proof from tiles alone; it is tested against proofs from the tree.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from hushcc.errors import ProtocolError
from transparency_log.merkle import HASH_SIZE, NodeSource, node_hash

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

TILE_HEIGHT = 8
TILE_WIDTH = 1 << TILE_HEIGHT
MAX_ENTRY_SIZE = 0xFFFF
ENTRIES_LEVEL = -1
# Tile indices stay below 2**63 / 256 (a tree has fewer than 2**63 leaves): 17 decimal digits,
# 6 groups of 3; a path with more groups is not a tile of any tree.
MAX_INDEX_GROUPS = 6


def encode_index(n: int) -> str:
    """Encode a tile index as `x`-prefixed 3-digit groups."""
    if n < 0:
        raise ValueError("negative tile index")
    groups = []
    while True:
        groups.append(f"{n % 1000:03d}")
        n //= 1000
        if n == 0:
            break
    groups.reverse()
    return "/".join([*("x" + g for g in groups[:-1]), groups[-1]])


@dataclass(frozen=True, slots=True)
class Tile:
    """One tile: level (`ENTRIES_LEVEL` for entry bundles), index and width (1..256)."""

    level: int
    index: int
    width: int = TILE_WIDTH

    def __post_init__(self) -> None:
        """Validate ranges."""
        if self.level < ENTRIES_LEVEL or self.level > 63 or not 0 <= self.index < 1 << 55:
            raise ProtocolError("tile level or index out of range")
        if not 1 <= self.width <= TILE_WIDTH:
            raise ProtocolError("tile width out of range")

    @property
    def full(self) -> bool:
        """Whether the tile is full (immutable forever)."""
        return self.width == TILE_WIDTH

    def path(self) -> str:
        """Return the tile's path (without a URL prefix)."""
        level = "entries" if self.level == ENTRIES_LEVEL else str(self.level)
        suffix = "" if self.full else f".p/{self.width}"
        return f"tile/{level}/{encode_index(self.index)}{suffix}"

    @classmethod
    def from_path(cls, path: str) -> Tile:
        """Parse a tile path.

        Raises:
            ProtocolError: not a canonical tile path.
        """
        parts = path.split("/")
        if len(parts) < 3 or parts[0] != "tile":
            raise ProtocolError("not a tile path")
        level = ENTRIES_LEVEL if parts[1] == "entries" else _decimal(parts[1], 2)
        rest, width = parts[2:], TILE_WIDTH
        if len(rest) >= 2 and rest[-2].endswith(".p"):
            width = _decimal(rest[-1], 3)
            if width >= TILE_WIDTH:
                raise ProtocolError("partial tile width must be below 256")
            rest = [*rest[:-2], rest[-2][:-2]]
        if len(rest) > MAX_INDEX_GROUPS:  # bounded before any int(): no 4,300-digit parse
            raise ProtocolError("tile index out of range")
        if any(len(g) != 4 or g[0] != "x" for g in rest[:-1]) or len(rest[-1]) != 3:
            raise ProtocolError("malformed tile index")
        digits = "".join(g.removeprefix("x") for g in rest)
        if not digits.isascii() or not digits.isdigit():
            raise ProtocolError("malformed tile index")
        index = int(digits)
        tile = cls(level, index, width)
        if tile.path() != path:
            raise ProtocolError("tile path is not canonical")
        return tile


def _decimal(text: str, max_len: int) -> int:
    if not text.isascii() or not text.isdigit() or len(text) > max_len or (
        len(text) > 1 and text[0] == "0"
    ):
        raise ProtocolError("malformed tile path number")
    return int(text)


def level_width(tree_size: int, level: int) -> int:
    """Number of nodes at tile level `level` (Merkle level 8 * level) in a tree of `tree_size`."""
    return tree_size >> (TILE_HEIGHT * level)


def tile_for(tree_size: int, level: int, index: int) -> Tile | None:
    """Return the tile at (level, index) as it is in a tree of `tree_size`, or None if empty."""
    count = level_width(tree_size, max(level, 0))
    width = min(TILE_WIDTH, count - index * TILE_WIDTH)
    return Tile(level, index, width) if width > 0 else None


def tiles_for_size(tree_size: int) -> list[Tile]:
    """Every hash tile of a tree of `tree_size` (full ones plus the rightmost partials)."""
    out: list[Tile] = []
    level = 0
    while (count := level_width(tree_size, level)) > 0:
        full, rem = divmod(count, TILE_WIDTH)
        out.extend(Tile(level, n) for n in range(full))
        if rem:
            out.append(Tile(level, full, rem))
        level += 1
    return out


def tile_hashes(source: NodeSource, tile: Tile) -> bytes:
    """Return the contents of a hash tile read from `source`."""
    if tile.level == ENTRIES_LEVEL:
        raise ValueError("entry bundles are not hash tiles")
    merkle_level = TILE_HEIGHT * tile.level
    start = tile.index * TILE_WIDTH
    return b"".join(source.node(merkle_level, i) for i in range(start, start + tile.width))


def encode_bundle(entries: Sequence[bytes]) -> bytes:
    """Return an entry bundle: each entry with a 2-byte big-endian length prefix."""
    out = bytearray()
    for e in entries:
        if len(e) > MAX_ENTRY_SIZE:
            raise ProtocolError("entry too large for an entry bundle")
        out += len(e).to_bytes(2, "big") + e
    return bytes(out)


def decode_bundle(data: bytes) -> list[bytes]:
    """Split an entry bundle into entries.

    Raises:
        ProtocolError: truncated bundle.
    """
    out, pos = [], 0
    while pos < len(data):
        if pos + 2 > len(data):
            raise ProtocolError("truncated entry bundle")
        n = int.from_bytes(data[pos : pos + 2], "big")
        if pos + 2 + n > len(data):
            raise ProtocolError("truncated entry bundle")
        out.append(data[pos + 2 : pos + 2 + n])
        pos += 2 + n
    return out


class TileReader:
    """A `NodeSource` over a tlog-tiles server for a tree of a known (verified) size.

    Any full aligned subtree of the tree is computed from one hash tile: the node at Merkle
    level `l = 8 * L + r` covers `2**r` consecutive hashes of tile level `L`.
    """

    def __init__(self, fetch: Callable[[str], bytes], tree_size: int) -> None:
        """Read tiles with `fetch(path) -> bytes` for a tree of `tree_size` leaves."""
        self._fetch = fetch
        self.tree_size = tree_size
        self._cache: dict[Tile, bytes] = {}

    def tile(self, level: int, index: int) -> bytes:
        """Fetch (and cache) the hash tile at (level, index) for this tree size."""
        tile = tile_for(self.tree_size, level, index)
        if tile is None:
            raise ProtocolError("tile outside the tree")
        if tile not in self._cache:
            data = self._fetch(tile.path())
            if len(data) != tile.width * HASH_SIZE:
                raise ProtocolError("tile has the wrong size")
            self._cache[tile] = data
        return self._cache[tile]

    def node(self, level: int, index: int) -> bytes:
        """Return the hash of the full aligned subtree at (level, index)."""
        if ((index + 1) << level) > self.tree_size:
            raise ProtocolError("node outside the tree")
        tile_level, r = divmod(level, TILE_HEIGHT)
        first = index << r  # first node at Merkle level 8 * tile_level
        data = self.tile(tile_level, first // TILE_WIDTH)
        offset = first % TILE_WIDTH
        hashes = [data[(offset + i) * HASH_SIZE : (offset + i + 1) * HASH_SIZE]
                  for i in range(1 << r)]
        while len(hashes) > 1:
            hashes = [node_hash(hashes[i], hashes[i + 1]) for i in range(0, len(hashes), 2)]
        return hashes[0]
