"""RFC 9162 Merkle tree hashing, proof generation and proof verification (pure).

Invariants:
* Leaf hashes are `SHA-256(0x00 || entry)` and interior nodes `SHA-256(0x01 || left || right)`
  (RFC 9162 §2.1.1), so an interior node can never be presented as a leaf (L6).
* Proof generation reads the tree only through a `NodeSource`: `node(level, index)` returns the
  hash of the *full, aligned* subtree covering leaves `[index * 2**level, (index + 1) * 2**level)`.
  The in-memory `MerkleTree`, the storage layer and a tiles client all provide one, so every
  proof can be computed from any of them.
* Verification follows RFC 9162 §2.1.3.2 and §2.1.4.2 step by step, with the transparency-dev
  edge rules (a consistency proof from size 0 is an error); `verify_*` returns `None` or raises
  `VerificationError`. Every verifier checks that every hash it is given (leaf, roots, proof
  hashes) is exactly 32 bytes before any other rule, on every path (equal sizes, index 0 ...).
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Protocol

from hushcc.errors import VerificationError

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

HASH_SIZE = 32
LEAF_PREFIX = b"\x00"
NODE_PREFIX = b"\x01"
EMPTY_ROOT = hashlib.sha256(b"").digest()


def leaf_hash(entry: bytes) -> bytes:
    """Return the RFC 9162 §2.1.1 leaf hash `SHA-256(0x00 || entry)`."""
    return hashlib.sha256(LEAF_PREFIX + entry).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """Return the RFC 9162 §2.1.1 interior node hash `SHA-256(0x01 || left || right)`."""
    return hashlib.sha256(NODE_PREFIX + left + right).digest()


class NodeSource(Protocol):
    """Anything that returns the hash of a full aligned subtree of the tree."""

    def node(self, level: int, index: int) -> bytes:
        """Return the hash of leaves `[index << level, (index + 1) << level)`."""
        ...


def _split(n: int) -> int:
    """Return the largest power of two strictly smaller than `n` (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


def range_hash(source: NodeSource, start: int, end: int) -> bytes:
    """Return MTH of leaves `[start, end)` where `start` is aligned as in the RFC recursion.

    Args:
        source: where full aligned subtree hashes come from.
        start: first leaf; a multiple of the largest power of two not above `end - start`.
        end: one past the last leaf; `end > start`.

    Returns:
        The RFC 9162 §2.1.1 Merkle tree hash of that range.
    """
    size = end - start
    if size & (size - 1) == 0:
        level = size.bit_length() - 1
        return source.node(level, start >> level)
    k = _split(size)
    return node_hash(range_hash(source, start, start + k), range_hash(source, start + k, end))


def root_hash(source: NodeSource, size: int) -> bytes:
    """Return the root hash of the first `size` leaves (the empty root for size 0)."""
    if size < 0:
        raise ValueError("negative tree size")
    return EMPTY_ROOT if size == 0 else range_hash(source, 0, size)


def inclusion_proof(source: NodeSource, index: int, size: int) -> list[bytes]:
    """Return PATH(index, D[size]) of RFC 9162 §2.1.3.1.

    Raises:
        ValueError: `index` is not below `size`.
    """
    if not 0 <= index < size:
        raise ValueError("leaf index out of range")
    path: list[bytes] = []
    start, end = 0, size
    while end - start > 1:
        k = _split(end - start)
        if index < start + k:
            path.append(range_hash(source, start + k, end))
            end = start + k
        else:
            path.append(range_hash(source, start, start + k))
            start += k
    path.reverse()
    return path


def consistency_proof(source: NodeSource, old_size: int, new_size: int) -> list[bytes]:
    """Return PROOF(old_size, D[new_size]) of RFC 9162 §2.1.4.1 (empty when sizes are equal).

    Raises:
        ValueError: not `0 < old_size <= new_size`.
    """
    if not 0 < old_size <= new_size:
        raise ValueError("consistency sizes out of range")
    path: list[bytes] = []
    start, end, whole = 0, new_size, True
    while True:
        if old_size == end:
            if not whole:
                path.append(range_hash(source, start, end))
            break
        k = _split(end - start)
        if old_size <= start + k:
            path.append(range_hash(source, start + k, end))
            end = start + k
        else:
            path.append(range_hash(source, start, start + k))
            start += k
            whole = False
    path.reverse()
    return path


class MerkleTree:
    """An append-only in-memory tree keeping every full subtree hash (a `NodeSource`).

    Level `l` holds the hashes of full aligned subtrees of `2**l` leaves, concatenated in a
    bytearray (32 bytes each), so a 10^6-leaf tree costs about 64 MB and any node is O(1).
    """

    __slots__ = ("_levels",)

    def __init__(self, leaf_hashes: Iterable[bytes] = ()) -> None:
        """Create a tree holding the given leaf hashes."""
        self._levels: list[bytearray] = [bytearray()]
        for h in leaf_hashes:
            self.append_hash(h)

    @property
    def size(self) -> int:
        """Number of leaves."""
        return len(self._levels[0]) // HASH_SIZE

    def append_hash(self, h: bytes) -> int:
        """Append a leaf hash; return its index."""
        if len(h) != HASH_SIZE:
            raise ValueError("leaf hash must be 32 bytes")
        index = self.size
        self._levels[0] += h
        level, i = 0, index
        while i & 1:
            left = self._levels[level][(i - 1) * HASH_SIZE : i * HASH_SIZE]
            right = self._levels[level][i * HASH_SIZE : (i + 1) * HASH_SIZE]
            level, i = level + 1, i >> 1
            if level == len(self._levels):
                self._levels.append(bytearray())
            self._levels[level] += node_hash(bytes(left), bytes(right))
        return index

    def append(self, entry: bytes) -> int:
        """Append an entry (hashing it as a leaf); return its index."""
        return self.append_hash(leaf_hash(entry))

    def truncate(self, size: int) -> None:
        """Drop every leaf at or after `size` (used by crash recovery before publishing)."""
        for level, data in enumerate(self._levels):
            del data[(size >> level) * HASH_SIZE :]

    def node(self, level: int, index: int) -> bytes:
        """Return the full aligned subtree hash at `level`, `index`."""
        if level >= len(self._levels) or (index + 1) * HASH_SIZE > len(self._levels[level]):
            raise IndexError("no such full subtree")
        return bytes(self._levels[level][index * HASH_SIZE : (index + 1) * HASH_SIZE])

    def level_count(self, level: int) -> int:
        """Number of full subtree hashes stored at `level`."""
        return len(self._levels[level]) // HASH_SIZE if level < len(self._levels) else 0

    def root(self, size: int | None = None) -> bytes:
        """Root hash of the first `size` leaves (default: all)."""
        return root_hash(self, self.size if size is None else size)


def _check_hashes(*hashes: bytes) -> None:
    for h in hashes:
        if len(h) != HASH_SIZE:
            raise VerificationError("hash has the wrong length")


def root_from_inclusion_proof(
    index: int, size: int, leaf: bytes, proof: Sequence[bytes]
) -> bytes:
    """Recompute the root from an inclusion proof (RFC 9162 §2.1.3.2 steps 1-6).

    Raises:
        VerificationError: the proof is malformed for this index and size.
    """
    _check_hashes(leaf, *proof)
    # (1) leaf_index must be below tree_size.
    if not 0 <= index < size:
        raise VerificationError("leaf index is not below the tree size")
    # (2) fn = leaf_index, sn = tree_size - 1, r = hash.
    fn, sn, r = index, size - 1, leaf
    # (3) for each p in inclusion_path:
    for p in proof:
        # (3a) if sn is 0, stop and fail.
        if sn == 0:
            raise VerificationError("inclusion proof is too long")
        # (3b) if LSB(fn) is set or fn == sn: r = HASH(0x01 || p || r), shift past zero bits.
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        # (3c) otherwise r = HASH(0x01 || r || p).
        else:
            r = node_hash(r, p)
        # (3d) right-shift fn and sn once.
        fn >>= 1
        sn >>= 1
    # (4) sn must be 0 at the end.
    if sn != 0:
        raise VerificationError("inclusion proof is too short")
    return r


def verify_inclusion(
    index: int, size: int, leaf: bytes, proof: Sequence[bytes], root: bytes
) -> None:
    """Verify that `leaf` (a leaf hash) is at `index` in the tree of `size` with `root`.

    Raises:
        VerificationError: the proof does not verify (or a hash is not 32 bytes).
    """
    _check_hashes(leaf, root, *proof)
    if root_from_inclusion_proof(index, size, leaf, proof) != root:
        raise VerificationError("inclusion proof does not match the root")


def verify_consistency(  # noqa: C901, PLR0912 - the RFC 9162 §2.1.4.2 steps, kept in one place
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> None:
    """Verify a consistency proof between two tree heads (RFC 9162 §2.1.4.2).

    Raises:
        VerificationError: the proof does not verify (including size2 < size1 and size1 = 0).
    """
    _check_hashes(old_root, new_root, *proof)  # every branch below, equal sizes included
    if old_size < 0 or new_size < old_size:
        raise VerificationError("new tree is smaller than the old tree")
    if old_size == 0:
        raise VerificationError("consistency from the empty tree is not provable")
    if old_size == new_size:
        if proof:
            raise VerificationError("consistency proof between equal sizes must be empty")
        if old_root != new_root:
            raise VerificationError("equal tree sizes with different roots")
        return
    # (1) an empty proof cannot link two different sizes.
    if not proof:
        raise VerificationError("empty consistency proof")
    # (2) if first is an exact power of 2, prepend first_hash to the path.
    path = list(proof)
    if old_size & (old_size - 1) == 0:
        path.insert(0, old_root)
    # (3) fn = first - 1, sn = second - 1.
    fn, sn = old_size - 1, new_size - 1
    # (4) if LSB(fn) is set, right-shift fn and sn until LSB(fn) is not set.
    while fn & 1:
        fn >>= 1
        sn >>= 1
    # (5) fr = sr = first value of the path.
    fr = sr = path[0]
    # (6) for each subsequent value c in the path:
    for c in path[1:]:
        # (6a) if sn is 0, stop and fail.
        if sn == 0:
            raise VerificationError("consistency proof is too long")
        # (6b) if LSB(fn) is set or fn == sn: hash c on the left of both.
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        # (6c) otherwise hash c on the right of sr only.
        else:
            sr = node_hash(sr, c)
        # (6d) right-shift both.
        fn >>= 1
        sn >>= 1
    # (7) fr == first_hash, sr == second_hash and sn == 0.
    if sn != 0:
        raise VerificationError("consistency proof is too short")
    if fr != old_root or sr != new_root:
        raise VerificationError("consistency proof does not match the roots")
