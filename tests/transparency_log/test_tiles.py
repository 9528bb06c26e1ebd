"""C2SP tlog-tiles paths, contents and entry bundles; proofs computed from tiles alone."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hushcc.errors import ProtocolError
from transparency_log import merkle
from transparency_log.tiles import (
    ENTRIES_LEVEL,
    Tile,
    TileReader,
    decode_bundle,
    encode_bundle,
    encode_index,
    tile_for,
    tile_hashes,
    tiles_for_size,
)

if TYPE_CHECKING:
    from pathlib import Path


def _examples(shared_vectors: Path) -> dict[str, Any]:
    data = json.loads((shared_vectors / "signed_note_checkpoint_vectors.json").read_text())
    examples: dict[str, Any] = data["tile_path_examples"]
    return examples


def test_c2sp_index_encoding_example(shared_vectors: Path) -> None:
    ex = _examples(shared_vectors)["c2sp"][0]
    assert encode_index(ex["index"]) == ex["encoded"]
    assert Tile.from_path(f"tile/0/{ex['encoded']}") == Tile(0, ex["index"])


def test_c2sp_tile_count_facts(shared_vectors: Path) -> None:
    facts = [f["fact"] for f in _examples(shared_vectors)["c2sp"][1:]]
    assert facts[0].startswith("tree size 70000")
    tiles = tiles_for_size(70000)
    level0 = [t for t in tiles if t.level == 0]
    assert sum(t.full for t in level0) == 273
    assert [t.width for t in level0 if not t.full] == [112]
    assert [(t.full, t.width) for t in tiles if t.level == 1] == [(True, 256), (False, 17)]
    assert [(t.full, t.width) for t in tiles if t.level == 2] == [(False, 1)]
    assert facts[1].startswith("tree size 256")
    assert tiles_for_size(256) == [Tile(0, 0), Tile(1, 0, 1)]


def test_go_sumdb_paths_without_height(shared_vectors: Path) -> None:
    """Go's paths carry the height (tile/H/L/N); C2SP omits it: compare after dropping H."""
    for ex in _examples(shared_vectors)["go_sumdb_tlog_with_height_H"]:
        parts = ex["path"].split("/")
        c2sp_path = "/".join([parts[0], *parts[2:]])
        if ex.get("invalid"):
            with pytest.raises(ProtocolError):
                Tile.from_path(c2sp_path)
            continue
        level = ENTRIES_LEVEL if ex["L"] == -1 else ex["L"]
        width = ex["W"] if ex["W"] != 1 << ex["H"] else 256
        if "data" in c2sp_path:
            c2sp_path = c2sp_path.replace("/data/", "/entries/")
        tile = Tile(level, ex["N"], width)
        assert tile.path() == c2sp_path
        assert Tile.from_path(c2sp_path) == tile


@pytest.mark.parametrize("path", [
    "tile/0/1", "tile/0/0001", "tile/0/001.p/256", "tile/0/001.p/0", "tile/0/001.p/007",
    "tile/00/001", "tile/-1/001", "tile/0/x000/001", "tile/0/001/x002", "tile/0/x01/002",
    "tile/a/001", "tiles/0/001", "tile/0/00a", "tile/0", "tile/entries/001.p/",
])
def test_non_canonical_tile_paths_rejected(path: str) -> None:
    with pytest.raises(ProtocolError):
        Tile.from_path(path)
    assert Tile.from_path("tile/0/x001/002.p/7") == Tile(0, 1002, 7)  # positive twin


def test_tile_path_with_thousands_of_groups_is_refused_before_any_int_parse() -> None:
    """1,434 `x999` groups once reached `int()` past its 4,300-digit limit (a ValueError)."""
    for groups in (7, 1_434, 5_000):
        with pytest.raises(ProtocolError):
            Tile.from_path("tile/0/" + "x999/" * groups + "999")
    with pytest.raises(ProtocolError):
        Tile(0, 1 << 55)
    largest = Tile(0, (1 << 55) - 1)  # positive twin: the largest index any tree can have
    assert largest.path().count("/") == 2 + 5
    assert Tile.from_path(largest.path()) == largest


@settings(max_examples=200)
@given(level=st.integers(-1, 63), index=st.integers(0, (1 << 55) - 1),
       width=st.integers(1, 256))
def test_tile_path_roundtrip(level: int, index: int, width: int) -> None:
    tile = Tile(level, index, width)
    assert Tile.from_path(tile.path()) == tile


@settings(max_examples=100)
@given(st.lists(st.binary(max_size=300), max_size=20))
def test_bundle_roundtrip(entries: list[bytes]) -> None:
    assert decode_bundle(encode_bundle(entries)) == entries


def test_bundle_truncation_and_oversize() -> None:
    data = encode_bundle([b"abc", b"de"])
    assert data == b"\x00\x03abc\x00\x02de"
    for cut in range(1, len(data)):
        if cut == 5:
            assert decode_bundle(data[:cut]) == [b"abc"]
            continue
        with pytest.raises(ProtocolError):
            decode_bundle(data[:cut])
    with pytest.raises(ProtocolError):
        encode_bundle([b"x" * 65536])
    assert decode_bundle(encode_bundle([b"x" * 65535])) == [b"x" * 65535]


@pytest.mark.parametrize("size", [1, 2, 255, 256, 257, 1000, 65536 + 300, 70000])
def test_proofs_from_tiles_alone_equal_tree_proofs(size: int) -> None:
    tree = merkle.MerkleTree(merkle.leaf_hash(i.to_bytes(4, "big")) for i in range(size))
    published = {t.path(): tile_hashes(tree, t) for t in tiles_for_size(size)}
    fetched: list[str] = []

    def fetch(path: str) -> bytes:
        fetched.append(path)
        return published[path]

    reader = TileReader(fetch, size)
    assert merkle.root_hash(reader, size) == tree.root()
    for index in {0, size // 3, size - 1}:
        assert merkle.inclusion_proof(reader, index, size) == merkle.inclusion_proof(
            tree, index, size)
    for old in {1, size // 2, size - 1} - {0}:
        assert merkle.consistency_proof(reader, old, size) == merkle.consistency_proof(
            tree, old, size)
    assert fetched  # the reader did go through the tiles


def test_tile_reader_rejects_wrong_sized_tiles() -> None:
    tree = merkle.MerkleTree(merkle.leaf_hash(bytes([i])) for i in range(10))
    reader = TileReader(lambda _p: b"\x00" * 31, 10)
    with pytest.raises(ProtocolError):
        merkle.root_hash(reader, 10)
    ok = TileReader(lambda p: tile_hashes(tree, Tile.from_path(p)), 10)
    assert merkle.root_hash(ok, 10) == tree.root()
    assert tile_for(10, 0, 0) == Tile(0, 0, 10)
    assert tile_for(10, 1, 0) is None
