"""The client's log view: consistency proofs from tiles; forks and rollbacks refused (L2, L3)."""

from __future__ import annotations

import asyncio

import pytest

from client.logview import accept_checkpoint, fetch_consistency_proof
from hushcc.errors import VerificationError
from tests.client.client_helpers import TileServer
from tests.transparency_log.tlog_helpers import ORIGIN, release
from transparency_log import merkle
from transparency_log.checkpoint import Checkpoint, sign_checkpoint
from transparency_log.client import (
    ForkDetectedError,
    LogClient,
    LogTrust,
    MemoryCheckpointStore,
)
from transparency_log.note import Signer

URL = "http://log.test"
NOW = 1_800_000_000


def _tree(n: int, salt: int = 0) -> merkle.MerkleTree:
    tree = merkle.MerkleTree()
    for i in range(n):
        tree.append(release(i + salt).to_bytes())
    return tree


def _note(signer: Signer, tree: merkle.MerkleTree, size: int) -> bytes:
    return sign_checkpoint(Checkpoint(ORIGIN, size, tree.root(size)), signer)


@pytest.fixture(scope="module")
def signer() -> Signer:
    return Signer.generate(ORIGIN)


@pytest.mark.parametrize(("old", "new"), [(1, 2), (3, 300), (255, 256), (256, 700), (5, 5)])
def test_a_proof_from_tiles_equals_the_trees_own(old: int, new: int) -> None:
    tree = _tree(new)
    proof = asyncio.run(fetch_consistency_proof(TileServer(tree), URL, old, new))
    assert proof == (merkle.consistency_proof(tree, old, new) if old != new else [])
    merkle.verify_consistency(old, new, tree.root(old), tree.root(new), proof)


def test_a_newer_checkpoint_is_accepted_and_persisted(signer: Signer) -> None:
    tree = _tree(300)
    log = LogClient(LogTrust(signer.verifier(), ORIGIN), MemoryCheckpointStore())
    server = TileServer(tree)
    assert asyncio.run(accept_checkpoint(log, server, URL, _note(signer, tree, 3),
                                         now=NOW)).size == 3
    assert asyncio.run(accept_checkpoint(log, server, URL, _note(signer, tree, 300),
                                         now=NOW)).size == 300
    assert log.store.load() == _note(signer, tree, 300)
    # an older stapled view is fine (a prefix of ours) and does not roll the store back
    assert asyncio.run(accept_checkpoint(log, server, URL, _note(signer, tree, 40),
                                         now=NOW)).size == 40
    assert log.store.load() == _note(signer, tree, 300)


def test_a_forked_log_is_refused_with_both_notes(signer: Signer) -> None:
    honest, forked = _tree(10), _tree(12, salt=100)
    log = LogClient(LogTrust(signer.verifier(), ORIGIN), MemoryCheckpointStore())
    asyncio.run(accept_checkpoint(log, TileServer(honest), URL, _note(signer, honest, 10),
                                  now=NOW))
    fork = _note(signer, forked, 12)
    with pytest.raises(ForkDetectedError) as caught:
        asyncio.run(accept_checkpoint(log, TileServer(forked), URL, fork, now=NOW))
    assert fork in (caught.value.args + tuple(vars(caught.value).values()))
    assert log.store.load() == _note(signer, honest, 10)


def test_an_older_forked_view_is_refused_too(signer: Signer) -> None:
    honest, forked = _tree(10), _tree(10, salt=100)
    log = LogClient(LogTrust(signer.verifier(), ORIGIN), MemoryCheckpointStore())
    asyncio.run(accept_checkpoint(log, TileServer(honest), URL, _note(signer, honest, 10),
                                  now=NOW))
    with pytest.raises(ForkDetectedError):
        asyncio.run(accept_checkpoint(log, TileServer(honest), URL, _note(signer, forked, 4),
                                      now=NOW))


def test_without_a_log_url_only_the_same_size_is_provable(signer: Signer) -> None:
    tree = _tree(20)
    log = LogClient(LogTrust(signer.verifier(), ORIGIN), MemoryCheckpointStore())
    server = TileServer(tree)
    asyncio.run(accept_checkpoint(log, server, None, _note(signer, tree, 10), now=NOW))
    asyncio.run(accept_checkpoint(log, server, None, _note(signer, tree, 10), now=NOW))
    with pytest.raises(VerificationError):
        asyncio.run(accept_checkpoint(log, server, None, _note(signer, tree, 20), now=NOW))
    assert server.paths == []
