"""Deterministic keys and entropy for the ohttp tests (no shared vectors needed)."""

from __future__ import annotations

import hashlib
from itertools import count, pairwise
from typing import TYPE_CHECKING

from ohttp.keyconfig import GatewayKey
from ohttp.suites import AeadId, KdfId, SymmetricSuite

if TYPE_CHECKING:
    from collections.abc import Callable

ALL_SUITES = tuple(SymmetricSuite(k, a) for k in KdfId for a in AeadId)


def counter_rng(seed: bytes = b"seed") -> Callable[[int], bytes]:
    """A deterministic entropy source: SHA-256 in counter mode, never repeating."""
    counter = count()

    def rng(n: int) -> bytes:
        out = b""
        while len(out) < n:
            out += hashlib.sha256(seed + next(counter).to_bytes(8, "big")).digest()
        return out[:n]

    return rng


def split_at(data: bytes, cuts: list[int]) -> list[bytes]:
    """`data` cut at the positions `cuts` (taken modulo len + 1, deduplicated); empty ends kept."""
    points = sorted({c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in pairwise([0, *points, len(data)])]


def make_key(
    key_id: int = 1, seed: bytes = b"gateway", suites: tuple[SymmetricSuite, ...] = ALL_SUITES
) -> GatewayKey:
    return GatewayKey.generate(key_id, suites, rng=counter_rng(seed))
