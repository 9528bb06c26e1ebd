"""The client's view of the release log: consistency with the checkpoint it saw last (L2, L3).

Each node staples a checkpoint to its bundle; the client keeps the largest checkpoint it has
accepted (`transparency_log.client.LogClient` over a file store, mode 0600). A stapled checkpoint
counts only if it and the persisted one can both come from one append-only log: the client reads
the consistency proof from the log's tiles (`tlog-tiles`), which reveal tree sizes only, never
which entry it cares about (the inclusion proof is stapled; L9).

The tiles are fetched through the SDK's async `Transport`: the proof is computed from
`transparency_log.tiles.TileReader`, and every tile it asks for that is not fetched yet is fetched
and the computation run again (a proof needs at most a handful of tiles).

Invariants: a smaller or inconsistent tree never replaces the persisted one; a fork raises
`ForkDetectedError` carrying both signed notes (shown to the user as evidence).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hushcc.errors import ProtocolError, VerificationError
from transparency_log import merkle
from transparency_log.checkpoint import open_checkpoint
from transparency_log.client import LogClient, check_consistency, verify_checkpoint
from transparency_log.tiles import TileReader

if TYPE_CHECKING:
    from client.transport import Transport
    from transparency_log.checkpoint import Checkpoint

MAX_TILE_ROUNDS = 64


class _Missing(Exception):  # noqa: N818 - a control-flow signal inside this module, not an error
    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.path = path


async def fetch_consistency_proof(transport: Transport, log_url: str, old_size: int,
                                  new_size: int) -> list[bytes]:
    """RFC 9162 PROOF(old_size, D[new_size]) computed from the log's tiles.

    The proof is checked by the caller against both signed roots, so a lying log server can
    only make verification fail, never pass.

    Raises:
        TransportError: a tile could not be fetched.
        VerificationError: the log served malformed tiles or too many were needed.
    """
    if old_size in (0, new_size):
        return []
    tiles: dict[str, bytes] = {}

    def fetch(path: str) -> bytes:
        if path not in tiles:
            raise _Missing(path)
        return tiles[path]

    for _ in range(MAX_TILE_ROUNDS):
        try:
            return merkle.consistency_proof(TileReader(fetch, new_size), old_size, new_size)
        except _Missing as missing:
            reply = await transport.get(f"{log_url}/{missing.path}")
            if reply.status != 200:
                raise VerificationError(f"log answered {reply.status} for a tile") from None
            tiles[missing.path] = reply.body
        except (ProtocolError, ValueError) as exc:
            raise VerificationError("log served malformed tiles") from exc
    raise VerificationError("consistency proof needs too many tiles")


async def accept_checkpoint(log: LogClient, transport: Transport, log_url: str | None,
                            note: bytes, *, now: int) -> Checkpoint:
    """Check `note` against the persisted checkpoint; persist it when it is newer.

    Args:
        log: the pinned log trust and the client's persisted checkpoint.
        transport: for tiles.
        log_url: the log's tile server; without it only a checkpoint of the persisted size
            (same root) or the first one ever seen can be accepted.
        note: a node's stapled checkpoint (already signature-checked by bundle verification).
        now: Unix time, for the checkpoint's maximum age.

    Raises:
        ForkDetectedError: the two checkpoints cannot come from one append-only log.
        VerificationError: no way to prove consistency, or the proof does not verify.
    """
    new = verify_checkpoint(note, log.trust, now=now)
    old_note = log.store.load()
    if old_note is None:
        return log.update(note, [], now=now)
    old = open_checkpoint(old_note, log.trust.verifier, log.trust.origin).checkpoint
    if old.size != new.size and log_url is None:
        raise VerificationError("no log URL to prove the stapled checkpoint consistent")
    if new.size < old.size:
        # An older view than ours (the node stapled it at start-up): it must be a prefix.
        proof = await fetch_consistency_proof(transport, log_url or "", new.size, old.size)
        check_consistency(note, new, old_note, old, proof)
        return new
    proof = await fetch_consistency_proof(transport, log_url or "", old.size, new.size)
    return log.update(note, proof, now=now)
