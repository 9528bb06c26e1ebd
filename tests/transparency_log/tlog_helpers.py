"""Shared helpers for the transparency-log tests: a signed tree and release entries."""

from __future__ import annotations

from transparency_log import merkle
from transparency_log.checkpoint import Checkpoint, sign_checkpoint
from transparency_log.entry import ReleaseEntry
from transparency_log.note import Signer

ORIGIN = "log.test.hushcc"


def release(n: int, measurement: str | None = None) -> ReleaseEntry:
    return ReleaseEntry.from_value({
        "schema": "hushcc.release/v1",
        "image": {"digest": f"sha256:{n:064x}", "verity_root": f"{n:064x}"},
        "measurements": {"sim": measurement or f"{n + 1:096x}"},
        "model": {"name": "SmolLM2-135M-Instruct"},
        "source": {"commit": f"{n:040x}"},
    })


def signed_tree(signer: Signer, entries: list[bytes], size: int | None = None,
                timestamp: int | None = None) -> tuple[merkle.MerkleTree, bytes]:
    tree = merkle.MerkleTree(merkle.leaf_hash(e) for e in entries)
    n = tree.size if size is None else size
    cp = Checkpoint(signer.name, n, tree.root(n))
    if timestamp is not None:
        cp = cp.with_timestamp(timestamp)
    return tree, sign_checkpoint(cp, signer)
