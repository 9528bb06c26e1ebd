"""image.verity agrees with `veritysetup format` byte for byte (root hash and hash device)."""

from __future__ import annotations

import hashlib

import pytest

from hushcc.errors import ConfigError
from image import tools
from image.verity import (
    BLOCK_SIZE,
    HASHES_PER_BLOCK,
    blocks_of,
    compute_for_bytes,
    compute_tree,
    content_salt,
    content_uuid,
)


def _data(size: int) -> bytes:
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(counter.to_bytes(8, "big")).digest()
        counter += 1
    return bytes(out[:size])


# 1 block (no hash level), 3 blocks, exactly one full hash block (128), 129 blocks (two
# levels: the smallest multi-level tree), 128*128+1 blocks (three levels), and sizes that are
# not a multiple of the block size (the file handed to veritysetup is zero-padded first).
SIZES = [
    pytest.param(BLOCK_SIZE, id="one-block"),
    pytest.param(3 * BLOCK_SIZE, id="three-blocks"),
    pytest.param(HASHES_PER_BLOCK * BLOCK_SIZE, id="one-full-hash-block"),
    pytest.param((HASHES_PER_BLOCK + 1) * BLOCK_SIZE, id="two-levels"),
    pytest.param((HASHES_PER_BLOCK**2 + 1) * BLOCK_SIZE, id="three-levels"),
    pytest.param(5 * BLOCK_SIZE + 1234, id="unaligned-padded"),
    pytest.param(100, id="shorter-than-a-block"),
]


@pytest.mark.parametrize("size", SIZES)
def test_pure_tree_equals_veritysetup(tmp_path, size):
    data = _data(size)
    salt = content_salt(hashlib.sha256(data).digest())
    uuid = content_uuid(salt)
    ours = compute_for_bytes(data, salt, uuid)
    padded = tmp_path / "data.img"
    padded.write_bytes(b"".join(blocks_of(data)))  # veritysetup counts whole blocks only
    hash_dev = tmp_path / "hash.img"
    root = tools.veritysetup_format(padded, hash_dev, salt, uuid)
    assert ours.root_hash == root
    assert ours.hash_device == hash_dev.read_bytes()
    assert ours.data_blocks == -(-size // BLOCK_SIZE)


def test_salt_and_uuid_follow_the_content():
    a, b = hashlib.sha256(b"a").digest(), hashlib.sha256(b"b").digest()
    assert content_salt(a) == content_salt(a) != content_salt(b)
    assert content_uuid(content_salt(a)) == content_uuid(content_salt(a))
    assert content_uuid(content_salt(a)) != content_uuid(content_salt(b))


def test_one_flipped_data_byte_changes_the_root():
    data = bytearray(_data(7 * BLOCK_SIZE))
    salt = b"\x01" * 32
    before = compute_for_bytes(bytes(data), salt, content_uuid(salt)).root_hash
    data[5 * BLOCK_SIZE + 17] ^= 1
    assert compute_for_bytes(bytes(data), salt, content_uuid(salt)).root_hash != before


def test_the_cmdline_carries_the_root_hash_and_salt():
    tree = compute_for_bytes(_data(3 * BLOCK_SIZE), b"\x02" * 32, content_uuid(b"\x02"))
    line = tree.cmdline()
    assert tree.root_hash.hex() in line
    assert tree.salt.hex() in line
    assert " 3 1 sha256 " in line  # 3 data blocks, hash tree from block 1 (after the superblock)


@pytest.mark.parametrize(("blocks", "salt"), [
    pytest.param([], b"", id="no-data"),
    pytest.param([b"x" * 100], b"", id="short-block"),
    pytest.param([bytes(BLOCK_SIZE)], bytes(257), id="salt-too-long"),
])
def test_invalid_inputs_are_refused(blocks, salt):
    with pytest.raises(ConfigError):
        compute_tree(blocks, salt, content_uuid(b""))
