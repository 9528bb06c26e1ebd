"""Client verification: stapled inclusion, freshness, witnesses, fork detection (L1-L5)."""

from __future__ import annotations

import base64
import json
from typing import TYPE_CHECKING

import pytest

from hushcc.errors import ProtocolError, VerificationError
from tests.transparency_log.tlog_helpers import ORIGIN, release, signed_tree
from transparency_log import merkle
from transparency_log.client import (
    FileCheckpointStore,
    ForkDetectedError,
    LogClient,
    LogTrust,
    MemoryCheckpointStore,
    RollbackError,
    verify_checkpoint,
    verify_entry_measurement,
    verify_stapled_inclusion,
)
from transparency_log.cosignature import Cosigner, WitnessPolicy, witness_policy
from transparency_log.entry import ReleaseEntry, sign_entry, verify_signed_entry
from transparency_log.note import Signer

if TYPE_CHECKING:
    from pathlib import Path

NOW = 1_800_000_000


@pytest.fixture(scope="module")
def log() -> Signer:
    return Signer.generate(ORIGIN)


def _entries(n: int) -> list[bytes]:
    return [release(i).to_bytes() for i in range(n)]


def test_stapled_inclusion_positive_and_wrong_entry_l5(log: Signer) -> None:
    entries = _entries(11)
    tree, note = signed_tree(log, entries)
    proof = merkle.inclusion_proof(tree, 7, 11)
    key = log.verifier().to_string()
    cp = verify_stapled_inclusion(entries[7], 7, note.decode(), proof, log_verifier_key=key,
                                  origin=ORIGIN)
    assert cp.size == 11
    # A valid proof, but for a *different* release: rejected.
    with pytest.raises(VerificationError):
        verify_stapled_inclusion(entries[6], 7, note, proof, log_verifier_key=key)
    with pytest.raises(VerificationError):
        verify_stapled_inclusion(entries[7], 7, note, proof, log_verifier_key=key,
                                 origin="other.origin")
    other = Signer.generate(ORIGIN)
    with pytest.raises(VerificationError):
        verify_stapled_inclusion(entries[7], 7, note, proof,
                                 log_verifier_key=other.verifier().to_string())
    with pytest.raises(VerificationError):
        verify_stapled_inclusion(entries[7], 7, note + b"garbage", proof, log_verifier_key=key)


def test_entry_measurement_binding_l5() -> None:
    entry = release(3, measurement="ab" * 48)
    assert verify_entry_measurement(entry.to_bytes(), "AB" * 48).measurements["sim"] == "ab" * 48
    with pytest.raises(VerificationError, match="measurement"):
        verify_entry_measurement(entry.to_bytes(), "cd" * 48)
    with pytest.raises(VerificationError):
        verify_entry_measurement(b'{"schema":"x"}', "ab" * 48)


def test_max_age_l4(log: Signer) -> None:
    entries = _entries(3)
    _, fresh = signed_tree(log, entries, timestamp=NOW - 10)
    _, stale = signed_tree(log, entries, timestamp=NOW - 7200)
    _, untimed = signed_tree(log, entries)
    _, future = signed_tree(log, entries, timestamp=NOW + 3600)
    trust = LogTrust(log.verifier(), ORIGIN, max_age=3600)
    assert verify_checkpoint(fresh, trust, now=NOW).size == 3
    for note in (stale, untimed, future):
        with pytest.raises(VerificationError):
            verify_checkpoint(note, trust, now=NOW)
    with pytest.raises(VerificationError):
        verify_checkpoint(fresh, trust)  # no clock given


def test_witness_policy_k_of_n(log: Signer) -> None:
    witnesses = [Cosigner.generate(f"witness{i}.example") for i in range(3)]
    _, note = signed_tree(log, _entries(5))
    one = witnesses[0].cosign(note, NOW - 5)
    two = witnesses[1].cosign(one, NOW - 4)
    policy = WitnessPolicy(tuple(w.verifier() for w in witnesses), 2)
    assert policy.verify(two, now=NOW) == [NOW - 5, NOW - 4]
    with pytest.raises(VerificationError, match="1 of 2"):
        policy.verify(one, now=NOW)
    # The same witness twice does not count twice.
    with pytest.raises(VerificationError):
        policy.verify(witnesses[0].cosign(one, NOW - 3), now=NOW)
    # A cosignature over another checkpoint does not count.
    _, other_note = signed_tree(log, _entries(6))
    foreign = witnesses[1].cosign(other_note, NOW)
    forged = one + foreign.decode().splitlines(keepends=True)[-1].encode()
    with pytest.raises(VerificationError):
        policy.verify(forged, now=NOW)
    # Through the trust object, with freshness from witness timestamps.
    trust = LogTrust(log.verifier(), ORIGIN, witness_policy=policy, max_age=60)
    assert verify_checkpoint(two, trust, now=NOW).size == 5
    with pytest.raises(VerificationError):
        verify_checkpoint(two, trust, now=NOW + 3600)
    # vkey strings round-trip.
    assert witness_policy([w.verifier().to_string() for w in witnesses], 3).threshold == 3
    with pytest.raises(ProtocolError):
        witness_policy([witnesses[0].verifier().to_string()], 2)


def test_log_client_accepts_growth_and_detects_forks_l2_l3(log: Signer, tmp_path: Path) -> None:
    entries = _entries(20)
    tree, note5 = signed_tree(log, entries, 5)
    _, note12 = signed_tree(log, entries, 12)
    store = FileCheckpointStore(tmp_path / "seen" / "checkpoint")
    client = LogClient(LogTrust(log.verifier(), ORIGIN), store)
    client.update(note5, [])
    assert client.update(note12, merkle.consistency_proof(tree, 5, 12)).size == 12
    assert store.load() == note12
    assert client.update(note12, []).size == 12  # same view again is fine

    # Split view: a second tree of the same size with a different entry.
    forked_entries = [*entries[:9], release(999).to_bytes(), *entries[10:]]
    ftree, fnote12 = signed_tree(log, forked_entries, 12)
    with pytest.raises(ForkDetectedError) as info:
        client.update(fnote12, [])
    assert info.value.old_note == note12
    assert info.value.new_note == fnote12
    # A larger forked tree whose proof cannot link to the persisted view.
    _, fnote15 = signed_tree(log, forked_entries, 15)
    with pytest.raises(ForkDetectedError):
        client.update(fnote15, merkle.consistency_proof(ftree, 12, 15))
    # Rollback to a smaller tree.
    with pytest.raises(RollbackError):
        client.update(note5, [])
    assert store.load() == note12  # nothing was replaced by a rejected view
    # A second client persisted from another process sees the same state.
    assert LogClient(client.trust, FileCheckpointStore(store.path)).last_seen() is not None


def test_memory_store_and_first_use(log: Signer) -> None:
    _, note = signed_tree(log, _entries(2))
    client = LogClient(LogTrust(log.verifier(), ORIGIN), MemoryCheckpointStore())
    assert client.last_seen() is None
    client.update(note, [])
    seen = client.last_seen()
    assert seen is not None
    assert seen.size == 2


def test_signed_entry_release_key() -> None:
    release_key = Signer.generate("release.hushcc")
    other = Signer.generate("release.hushcc")
    entry = release(1)
    body = sign_entry(entry, release_key)
    assert verify_signed_entry(body, release_key.verifier()) == entry
    with pytest.raises(VerificationError):
        verify_signed_entry(sign_entry(entry, other), release_key.verifier())
    value = json.loads(body)
    value["entry"] = base64.b64encode(release(2).to_bytes()).decode()
    with pytest.raises(VerificationError):
        verify_signed_entry(json.dumps(value).encode(), release_key.verifier())
    with pytest.raises(ProtocolError):
        verify_signed_entry(b"{}", release_key.verifier())


@pytest.mark.parametrize("mutate", [
    pytest.param(lambda v: v | {"extra": 1}, id="unknown-top-level-key"),
    pytest.param(lambda v: {k: x for k, x in v.items() if k != "model"}, id="missing-model"),
    pytest.param(lambda v: v | {"schema": "hushcc.release/v2"}, id="wrong-schema"),
    pytest.param(lambda v: v | {"measurements": {}}, id="no-measurements"),
    pytest.param(lambda v: v | {"measurements": {"sim": "XYZ"}}, id="non-hex-measurement"),
    pytest.param(lambda v: v | {"image": []}, id="image-not-object"),
    pytest.param(lambda v: v | {"image": {"verity_root": "00"}}, id="image-without-digest"),
    pytest.param(lambda v: v | {"model": {"n": 1.5}}, id="float-value"),
    pytest.param(lambda v: v | {"model": {"n": True}}, id="bool-value"),
    pytest.param(lambda v: v | {"model": {"n": 1 << 60}}, id="unsafe-int"),
    pytest.param(lambda v: v | {"source": {"n": {"nested": "x"}}}, id="nested-value"),
])
def test_entry_schema_rejects(mutate: object) -> None:
    value = json.loads(release(1).to_bytes())
    assert ReleaseEntry.from_value(value).to_bytes() == release(1).to_bytes()  # positive twin
    with pytest.raises(ProtocolError):
        ReleaseEntry.from_value(mutate(value))  # type: ignore[operator]


def test_entry_bytes_must_be_canonical() -> None:
    good = release(1).to_bytes()
    assert ReleaseEntry.from_bytes(good).to_bytes() == good
    spaced = json.dumps(json.loads(good), indent=1).encode()
    with pytest.raises(ProtocolError, match="canonical"):
        ReleaseEntry.from_bytes(spaced)
    with pytest.raises(ProtocolError, match="duplicate"):
        ReleaseEntry.from_bytes(b'{"schema":"a","schema":"b"}')
    with pytest.raises(ProtocolError):
        ReleaseEntry.from_bytes(b"\xff")


def test_gossip_cross_check_detects_split_view_l3(log: Signer) -> None:
    from transparency_log.client import cross_check  # noqa: PLC0415

    entries = _entries(9)
    tree, note_a = signed_tree(log, entries, 6)
    _, note_b = signed_tree(log, entries, 9)
    trust = LogTrust(log.verifier(), ORIGIN)
    proof = merkle.consistency_proof(tree, 6, 9)
    cross_check(trust, note_a, note_b, proof)  # the honest twin, in either order
    cross_check(trust, note_b, note_a, proof)
    _, split = signed_tree(log, [*entries[:5], release(77).to_bytes()], 6)
    with pytest.raises(ForkDetectedError) as info:
        cross_check(trust, note_a, split, [])
    assert {info.value.old_note, info.value.new_note} == {note_a, split}
    with pytest.raises(ForkDetectedError):
        cross_check(trust, split, note_b, proof)


def test_malformed_pinned_key_is_a_config_error(log: Signer) -> None:
    from hushcc.errors import ConfigError  # noqa: PLC0415

    entries = _entries(2)
    tree, note = signed_tree(log, entries)
    proof = merkle.inclusion_proof(tree, 1, 2)
    with pytest.raises(ConfigError):
        verify_stapled_inclusion(entries[1], 1, note, proof, log_verifier_key="not-a-key")
    verify_stapled_inclusion(entries[1], 1, note, proof, log_verifier_key=log.verifier())


def test_same_tree_persists_only_fresher_notes(log: Signer) -> None:
    entries = _entries(4)
    _, older = signed_tree(log, entries, timestamp=NOW - 100)
    _, newer = signed_tree(log, entries, timestamp=NOW - 10)
    store = MemoryCheckpointStore()
    client = LogClient(LogTrust(log.verifier(), ORIGIN), store)
    client.update(newer, [])
    client.update(older, [])  # same tree, replayed older note: accepted but not persisted
    assert store.load() == newer
    _, newest = signed_tree(log, entries, timestamp=NOW)
    client.update(newest, [])
    assert store.load() == newest
