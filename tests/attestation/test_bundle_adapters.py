"""The bundle verifier wired to the real transparency-log client and the real TDX verifier."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from attestation.bundle import Binding, Bundle, Evidence, Release
from attestation.policy import Policy
from attestation.report import AttestationError, VerificationReport
from attestation.simulated import WITH_SIMULATED
from attestation.simulated_node import release_entry
from attestation.tdx import TdxPolicy
from attestation.tdx_quote import TdxQuote
from attestation.verify_bundle import (
    CpuClaims,
    DcapTdxVerifier,
    StapledLogVerifier,
    VerifiedBundle,
    verify_bundle,
)
from tests.attestation.bundle_helpers import (
    KEY_CONFIG,
    MEASUREMENT,
    NOW,
    SIM_POLICY,
    Node,
    make_node,
)
from transparency_log import merkle
from transparency_log.checkpoint import Checkpoint, sign_checkpoint
from transparency_log.cosignature import Cosigner, WitnessPolicy
from transparency_log.note import Signer

ORIGIN = "log.hushcc.test"


@pytest.fixture(scope="module")
def logged() -> tuple[Signer, Release]:
    """A log of 5 entries whose leaf 3 is the node's release, and the stapled proof of it."""
    signer = Signer.generate(ORIGIN)
    entries = [release_entry(bytes([i]) * 48) for i in range(3)] + [
        release_entry(MEASUREMENT), release_entry(b"\x09" * 48)]
    tree = merkle.MerkleTree()
    for entry in entries:
        tree.append(entry)
    return signer, _staple(signer, tree, entries[3], int(NOW.timestamp()) - 3600)


def _staple(signer: Signer, tree: merkle.MerkleTree, entry: bytes, stamp: int) -> Release:
    note = sign_checkpoint(Checkpoint(ORIGIN, tree.size, tree.root()).with_timestamp(stamp),
                           signer)
    return Release(entry, 3, note.decode(), tuple(merkle.inclusion_proof(tree, 3, tree.size)))


@pytest.fixture(scope="module")
def node() -> Node:
    return make_node()


def run(node: Node, data: bytes, log: StapledLogVerifier, *,
        policy: Policy = SIM_POLICY) -> VerifiedBundle:
    return verify_bundle(data, policy=policy, now=NOW + timedelta(minutes=1), log=log,
                         gpu_policy=node.gpu_policy, cpu_trust=WITH_SIMULATED)


def test_real_log_proof_verifies(node: Node, logged: tuple[Signer, Release]) -> None:
    signer, release = logged
    data = node.bundle(release=release).to_json()
    log = StapledLogVerifier(signer.verifier().to_string(), NOW)
    assert run(node, data, log).report.passed


# L4 on the bundle path (issue 9 item 7): the policy's max_checkpoint_age (default 2 days).
@pytest.mark.parametrize(("age", "policy", "passes"), [
    pytest.param(3600, SIM_POLICY, True, id="fresh"),
    pytest.param(int(NOW.timestamp()), SIM_POLICY, False, id="1970"),
    pytest.param(3 * 86400, SIM_POLICY, False, id="3-days"),
    pytest.param(3600, dataclasses.replace(SIM_POLICY, max_checkpoint_age=timedelta(minutes=10)),
                 False, id="older-than-policy"),
])
def test_checkpoint_freshness(node: Node, age: int, policy: Policy, passes: bool) -> None:
    signer = Signer.generate(ORIGIN)
    entries = [release_entry(bytes([i]) * 48) for i in range(3)] + [release_entry(MEASUREMENT)]
    tree = merkle.MerkleTree()
    for entry in entries:
        tree.append(entry)
    release = _staple(signer, tree, entries[3], int(NOW.timestamp()) - age)
    data = node.bundle(release=release).to_json()
    log = StapledLogVerifier(signer.verifier().to_string(), NOW + timedelta(minutes=1))
    if passes:
        assert run(node, data, log, policy=policy).report.passed
        return
    with pytest.raises(AttestationError) as exc:
        run(node, data, log, policy=policy)
    assert exc.value.report.first_failure is not None
    assert exc.value.report.first_failure.name == "(5) log inclusion"
    assert "older than the maximum age" in exc.value.report.first_failure.reason


@pytest.mark.parametrize("mutate", ["index", "proof", "key", "entry"])
def test_real_log_rejections(node: Node, logged: tuple[Signer, Release], mutate: str) -> None:
    signer, release = logged
    key = signer.verifier().to_string()
    if mutate == "index":
        release = Release(release.entry, 2, release.checkpoint, release.inclusion_proof)
    elif mutate == "proof":
        proof = list(release.inclusion_proof)
        proof[0] = bytes(32)
        release = Release(release.entry, 3, release.checkpoint, tuple(proof))
    elif mutate == "key":
        key = Signer.generate(ORIGIN).verifier().to_string()
    else:  # an entry for the same measurement that is not the logged one
        entry = json.loads(release.entry)
        entry["image"]["digest"] = "sha256:" + "1" * 64
        release = Release(json.dumps(entry, sort_keys=True, separators=(",", ":")).encode(),
                          3, release.checkpoint, release.inclusion_proof)
    data = node.bundle(release=release).to_json()
    with pytest.raises(AttestationError) as exc:
        run(node, data, StapledLogVerifier(key, NOW))
    assert exc.value.report.first_failure is not None
    assert exc.value.report.first_failure.name == "(5) log inclusion"


# TDX: the sample quote verifies through the bundle's TDX route; its report_data is not ours, so
# the bundle is then rejected at the binding step (the positive part is step (1) passing).
TDX_AT = datetime.fromtimestamp(1751328000, tz=UTC)


def test_tdx_route(shared_vectors: Path) -> None:
    samples = shared_vectors / "attestation/intel_tdx/dcap_qvl_samples"
    quote = (samples / "tdx_quote").read_bytes()
    collateral = (samples / "tdx_quote_collateral.json").read_text()
    tdx = DcapTdxVerifier(collateral, TdxPolicy())
    claims, steps = tdx(quote, (), now=TDX_AT)
    parsed = TdxQuote.from_bytes(quote).report
    assert steps.passed
    registers = parsed.mr_td + parsed.rtmr0 + parsed.rtmr1 + parsed.rtmr2 + parsed.rtmr3
    assert (claims.report_data, claims.measurement) == (parsed.report_data, registers)
    entry = json.loads(release_entry(MEASUREMENT))
    entry["measurements"] = {"tdx": registers.hex()}
    bundle = Bundle(b"\xab" * 32, KEY_CONFIG, TDX_AT - timedelta(hours=1),
                    TDX_AT + timedelta(hours=1), Evidence("tdx", quote), (),
                    Release(json.dumps(entry, sort_keys=True, separators=(",", ":")).encode(),
                            0, "", ()))
    policy = SIM_POLICY.__class__(require_gpu=False)
    with pytest.raises(AttestationError) as exc:
        verify_bundle(bundle.to_json(), policy=policy, now=TDX_AT, log=None, tdx=tdx)
    names = [(s.name, s.passed) for s in exc.value.report.steps]
    assert ("(1) tdx: dcap-qvl", True) in names
    assert exc.value.report.first_failure is not None
    assert exc.value.report.first_failure.name == "(3) binding"
    with pytest.raises(AttestationError) as exc:
        verify_bundle(bundle.to_json(), policy=policy, now=TDX_AT, log=None)
    assert exc.value.report.first_failure is not None
    assert exc.value.report.first_failure.name == "(1) CPU evidence"


def test_witness_policy(node: Node, logged: tuple[Signer, Release]) -> None:
    signer, release = logged
    witness, other = Cosigner.generate("witness.test"), Cosigner.generate("other.test")
    stamp = int(NOW.timestamp())
    cosigned = witness.cosign(release.checkpoint.encode(), stamp).decode()
    wrong = other.cosign(release.checkpoint.encode(), stamp).decode()
    require = WitnessPolicy((witness.verifier(),), 1)
    key = signer.verifier().to_string()
    ok = Release(release.entry, release.index, cosigned, release.inclusion_proof)
    log = StapledLogVerifier(key, NOW, witness_policy=require)
    assert run(node, node.bundle(release=ok).to_json(), log).report.passed
    for note in (release.checkpoint, wrong):
        bad = Release(release.entry, release.index, note, release.inclusion_proof)
        with pytest.raises(AttestationError) as exc:
            run(node, node.bundle(release=bad).to_json(), log)
        assert exc.value.report.first_failure is not None
        assert exc.value.report.first_failure.name == "(5) log inclusion"


# Issue 9 item 6: the entry's `tdx` value pins MRTD and RTMR0-3, each compared at its own step.
# The quote's own checks are the DCAP verifier's (above); here a TDX verifier stands in that
# reports claims bound to the bundle, so the bundle verifier reaches step (4).
REGISTERS = b"".join(bytes([i + 1]) * 48 for i in range(5))


@dataclasses.dataclass(frozen=True)
class _BoundTdx:
    report_data: bytes

    def __call__(self, quote: bytes, certs: Sequence[bytes], *, now: datetime
                 ) -> tuple[CpuClaims, VerificationReport]:
        steps = VerificationReport("tdx quote")
        steps.ok("stand-in", "claims handed out by the test")
        return CpuClaims(self.report_data, REGISTERS), steps


@pytest.mark.parametrize("register", [None, "MRTD", "RTMR0", "RTMR1", "RTMR2", "RTMR3"])
def test_tdx_registers_each_compared(register: str | None) -> None:
    logged = bytearray(REGISTERS)
    if register is not None:
        logged[48 * ["MRTD", "RTMR0", "RTMR1", "RTMR2", "RTMR3"].index(register)] ^= 1
    entry = json.loads(release_entry(MEASUREMENT))
    entry["measurements"] = {"tdx": bytes(logged).hex()}
    release = Release(json.dumps(entry, sort_keys=True, separators=(",", ":")).encode(), 0, "", ())
    binding = Binding(KEY_CONFIG, b"\xab" * 32, NOW, NOW + timedelta(hours=1))
    bundle = Bundle(binding.node_id, KEY_CONFIG, NOW, NOW + timedelta(hours=1),
                    Evidence("tdx", b"quote"), (), release)
    policy = Policy(require_gpu=False)
    tdx = _BoundTdx(binding.report_data(()))
    with pytest.raises(AttestationError) as exc:
        verify_bundle(bundle.to_json(), policy=policy, now=NOW, log=None, tdx=tdx)
    failure = exc.value.report.first_failure
    assert failure is not None
    # unmutated: every register matches and the bundle gets to the log step (positive twin)
    assert failure.name == (f"(4) measurement: {register}" if register else "(5) log inclusion")
