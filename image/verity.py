r"""dm-verity hash tree and root hash, format v1, computed in pure Python (no cryptsetup needed).

Agrees byte for byte with `veritysetup format --hash=sha256 --data-block-size=4096
--hash-block-size=4096 --format=1 --salt=S --uuid=U DATA HASHDEV` (cryptsetup's
`lib/verity/verity_hash.c` and the kernel's `Documentation/admin-guide/device-mapper/verity.rst`):

* Every data block is hashed as SHA-256(salt || block) (format 1 puts the salt first).
* Level 0 holds the data blocks' digests, 128 per 4096-byte hash block, the last block padded
  with zeros; each further level hashes the blocks of the one below, until one block remains.
  The number of levels is the smallest L with (blocks - 1) >> (7 * L) == 0, so a single data
  block has no hash blocks and its own digest is the root.
* On the hash device the levels are stored top (nearest the root) first, after a 4096-byte area
  holding the 512-byte superblock (`verity\0\0`, version 1, hash type 1, UUID, algorithm name,
  block sizes, data block count, salt) padded with zeros.
* Root hash = SHA-256(salt || the top level's single block) (or of the only data block).

Data whose size is not a multiple of 4096 is treated as if zero-padded to the next block
(`veritysetup` counts whole blocks only, so the image file itself is padded before formatting;
mksquashfs already pads to 4 KiB). Invariants: pure; memory is 32 bytes per data block.
"""

from __future__ import annotations

import hashlib
import struct
import uuid as uuidlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

from hushcc.errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import Iterable

BLOCK_SIZE = 4096
DIGEST_SIZE = 32
HASHES_PER_BLOCK = BLOCK_SIZE // DIGEST_SIZE
_PER_BLOCK_BITS = HASHES_PER_BLOCK.bit_length() - 1
SUPERBLOCK_SIZE = 512
MAX_SALT = 256
ALGORITHM = "sha256"
SALT_CONTEXT = b"hushcc/image/verity-salt/v1\n"
_UUID_NAMESPACE = uuidlib.UUID("6c1b1f0e-5a0c-4c39-9b43-7f1d2b0a8e51")


@dataclass(frozen=True, slots=True)
class VerityTree:
    """A computed dm-verity tree: root hash, salt, UUID, and the whole hash device."""

    root_hash: bytes
    salt: bytes
    uuid: str
    data_blocks: int
    hash_device: bytes

    def cmdline(self) -> str:
        """The kernel command-line fragment that maps the verity root (`dm-mod.create`).

        One read-only `verity` target over /dev/vda (data) and /dev/vdb (hash device); the
        guest kernel refuses any block whose hash does not chain to this root.
        """
        sectors = self.data_blocks * BLOCK_SIZE // 512
        table = (f"0 {sectors} verity 1 /dev/vda /dev/vdb {BLOCK_SIZE} {BLOCK_SIZE} "
                 f"{self.data_blocks} 1 {ALGORITHM} {self.root_hash.hex()} {self.salt.hex()}")
        return f'dm-mod.create="hushcc-root,,,ro,{table}" root=/dev/dm-0 ro'


def content_salt(image_digest: bytes) -> bytes:
    """The salt derived from the image's SHA-256: SHA-256(SALT_CONTEXT || digest)."""
    return hashlib.sha256(SALT_CONTEXT + image_digest).digest()


def content_uuid(salt: bytes) -> str:
    """A UUID derived from the salt (RFC 4122 version 5), so formatting draws no randomness."""
    return str(uuidlib.uuid5(_UUID_NAMESPACE, salt.hex()))


def blocks_of(data: bytes) -> list[bytes]:
    """Split data into 4096-byte blocks, zero-padding the last one."""
    if not data:
        return []
    padded = data + bytes(-len(data) % BLOCK_SIZE)
    return [padded[i:i + BLOCK_SIZE] for i in range(0, len(padded), BLOCK_SIZE)]


def superblock(data_blocks: int, salt: bytes, uuid: str) -> bytes:
    """The 512-byte on-disk verity superblock (cryptsetup `struct verity_sb`)."""
    raw_uuid = uuidlib.UUID(uuid).bytes
    return (b"verity\0\0"
            + struct.pack("<II", 1, 1) + raw_uuid
            + ALGORITHM.encode().ljust(32, b"\0")
            + struct.pack("<IIQH", BLOCK_SIZE, BLOCK_SIZE, data_blocks, len(salt))
            + bytes(6) + salt.ljust(MAX_SALT, b"\0") + bytes(168))


def _level_blocks(digests: list[bytes]) -> list[bytes]:
    return [b"".join(digests[i:i + HASHES_PER_BLOCK]).ljust(BLOCK_SIZE, b"\0")
            for i in range(0, len(digests), HASHES_PER_BLOCK)]


def compute_tree(blocks: Iterable[bytes], salt: bytes, uuid: str) -> VerityTree:
    """Compute the hash tree, root hash and hash device over 4096-byte data blocks.

    Args:
        blocks: the data, block by block (each exactly 4096 bytes; pad the last one).
        salt: the salt (at most 256 bytes).
        uuid: the UUID written into the superblock.

    Returns:
        The tree.

    Raises:
        ConfigError: no data, a block of the wrong size, or a salt that is too long.
    """
    if len(salt) > MAX_SALT:
        raise ConfigError("a verity salt holds at most 256 bytes")
    digests = []
    for block in blocks:
        if len(block) != BLOCK_SIZE:
            raise ConfigError("verity data blocks must be exactly 4096 bytes")
        digests.append(hashlib.sha256(salt + block).digest())
    count = len(digests)
    if count == 0:
        raise ConfigError("verity needs at least one data block")
    levels = 0
    while (count - 1) >> (_PER_BLOCK_BITS * levels):
        levels += 1
    stored: list[list[bytes]] = []
    for _ in range(levels):
        level = _level_blocks(digests)
        stored.append(level)
        digests = [hashlib.sha256(salt + b).digest() for b in level]
    header = superblock(count, salt, uuid).ljust(BLOCK_SIZE, b"\0")
    body = b"".join(b"".join(level) for level in reversed(stored))
    return VerityTree(digests[0], salt, uuid, count, header + body)


def compute_for_bytes(data: bytes, salt: bytes, uuid: str) -> VerityTree:
    """`compute_tree` over bytes, zero-padded to a whole number of blocks."""
    return compute_tree(blocks_of(data), salt, uuid)
