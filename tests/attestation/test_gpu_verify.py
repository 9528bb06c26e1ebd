"""NVIDIA H100 evidence verification against nvtrust's real samples and the simulated GPU.

Vectors: ../shared/vectors/attestation/nvidia_h100.json (sets A, B, C from NVIDIA/nvtrust).
Every negative case has a positive twin in the same module.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import json
from typing import TYPE_CHECKING, Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from attestation.gpu import GpuPolicy, RevocationStatus, verify_gpu_evidence
from attestation.gpu.anchors import load_root
from attestation.gpu.rim import merge_references, verify_rim
from attestation.gpu.simulated import SIM_CC_MODE_INDEX, SimulatedGpu
from attestation.gpu.spdm import OPAQUE_FWID, GpuEvidence, build_evidence, verify_signature
from attestation.gpu.verify import _check_fwid
from attestation.report import AttestationError, Step, VerificationReport
from attestation.x509chain import parse_pem_chain, verify_chain
from hushcc.errors import ProtocolError, VerificationError

if TYPE_CHECKING:
    from pathlib import Path


def _failure(err: pytest.ExceptionInfo[AttestationError]) -> Step:
    step = err.value.report.first_failure
    assert step is not None
    return step


NONCE_A = bytes.fromhex("4cff7f5380ead8fad8ec2c531c110aca4302a88f603792801a8ca29ee151af2e")
NONCE_B = bytes.fromhex("931d8dd0add203ac3d8b4fbde75e115278eefcdceac5b87671a748f32364dfcb")
RIM_VALID = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)  # RIM L4 signers: 2023-06-27 .. 2025-06-22
RIM_EXPIRED = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
SIM_NOW = dt.datetime(2026, 11, 23, tzinfo=dt.UTC)


def _ec_key(cert: x509.Certificate) -> ec.EllipticCurvePublicKey:
    key = cert.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey)
    return key


def _der(chain: list[x509.Certificate]) -> list[bytes]:
    return [c.public_bytes(Encoding.DER) for c in chain]


@dataclasses.dataclass(frozen=True)
class SetA:
    evidence: bytes
    certs: list[bytes]
    driver_rim: bytes
    vbios_rim: bytes


@pytest.fixture(scope="module")
def set_a(shared_vectors: Path) -> SetA:
    d = shared_vectors / "attestation" / "nvidia_h100" / "nvtrust_initial_test_no_gpu"
    return SetA(
        evidence=bytes.fromhex((d / "attestationReport.txt").read_text().strip()),
        certs=_der(parse_pem_chain((d / "gpuAkCertChain.txt").read_bytes())),
        driver_rim=(d / "Driver_RIM_test_no_gpu.swidtag").read_bytes(),
        vbios_rim=(d / "1010_0200_882_96005E0001_test_no_gpu.swidtag").read_bytes(),
    )


@pytest.fixture(scope="module")
def set_b(shared_vectors: Path) -> tuple[bytes, list[x509.Certificate]]:
    d = shared_vectors / "attestation" / "nvidia_h100" / "nvtrust_v2.3.0_sample"
    evidence = bytes.fromhex((d / "hopperAttestationReport.txt").read_text().strip())
    return evidence, parse_pem_chain((d / "hopperCertChain.txt").read_bytes())


def _policy_a(set_a: SetA, **kw: Any) -> GpuPolicy:
    policy = GpuPolicy(
        driver_rim=set_a.driver_rim,
        vbios_rim=set_a.vbios_rim,
        expected_driver_version="545.00",
        expected_vbios_version="96.00.5E.00.01",
    )
    return dataclasses.replace(policy, **kw)


def _verify_a(
    set_a: SetA,
    *,
    evidence: bytes | None = None,
    certs: list[bytes] | None = None,
    policy: GpuPolicy | None = None,
    expected_nonce: bytes = NONCE_A,
    now: dt.datetime = RIM_VALID,
    **kw: Any,
) -> VerificationReport:
    kw.setdefault("revocation_required", False)  # offline: no OCSP answers for the 2023 chain
    return verify_gpu_evidence(
        set_a.evidence if evidence is None else evidence,
        set_a.certs if certs is None else certs,
        expected_nonce=expected_nonce,
        policy=_policy_a(set_a) if policy is None else policy,
        now=now,
        **kw,
    )


# --- set A: full verification, and each reference value / input mutated in turn ---------------


def test_set_a_fully_verifies(set_a: SetA) -> None:
    report = _verify_a(set_a)
    assert report.passed
    names = [s.name for s in report.steps]
    assert names == [
        "parse",
        "nonce",
        "chain",
        "revocation",
        "signature",
        "fwid",
        "rims",
        "rim revocation",
        "versions",
        "measurements",
    ]
    assert "33 reference indices" in report.steps[-1].reason  # 21 driver + 12 VBIOS
    # best-effort offline: revocation is a WARNING, never a pass
    assert [s.name for s in report.warnings] == ["revocation", "rim revocation"]
    assert "NOT checked" in report.steps[3].reason
    assert "[WARN] revocation" in report.render()
    assert "WARNING" in report.render().splitlines()[0]
    assert "no FWID" in report.steps[5].reason  # 2023 firmware predates the FWID field


def test_set_a_revocation_required_without_source_fails(set_a: SetA) -> None:
    with pytest.raises(AttestationError) as err:
        _verify_a(set_a, revocation_required=True)
    assert _failure(err).name == "revocation"


def test_set_a_rejected_with_wrong_nonce(set_a: SetA) -> None:
    with pytest.raises(AttestationError) as err:
        _verify_a(set_a, expected_nonce=NONCE_B)
    assert _failure(err).name == "nonce"


def test_set_a_rejected_when_rim_signers_expired(set_a: SetA) -> None:
    with pytest.raises(AttestationError) as err:
        _verify_a(set_a, now=RIM_EXPIRED)
    assert _failure(err).name == "rims"
    assert "not valid at this time" in _failure(err).reason


@pytest.mark.parametrize(
    ("field", "value", "step"),
    [
        ("expected_driver_version", "545.01", "versions"),
        ("expected_vbios_version", "96.00.5e.00.02", "versions"),
        ("driver_rim", None, "rims"),
    ],
)
def test_set_a_policy_values_each_compared(
    set_a: SetA, field: str, value: object, step: str
) -> None:
    with pytest.raises(AttestationError) as err:
        _verify_a(set_a, policy=_policy_a(set_a, **{field: value}))
    assert _failure(err).name == step


def test_set_a_rims_swapped_is_version_mismatch(set_a: SetA) -> None:
    policy = _policy_a(set_a, driver_rim=set_a.vbios_rim, vbios_rim=set_a.driver_rim)
    with pytest.raises(AttestationError) as err:
        _verify_a(set_a, policy=policy)
    assert _failure(err).name == "rims"


def test_set_a_each_measurement_mutated_fails(set_a: SetA) -> None:
    ev = GpuEvidence.from_bytes(set_a.evidence)
    references = dict(
        merge_references(
            verify_rim(set_a.driver_rim, now=RIM_VALID),
            verify_rim(set_a.vbios_rim, now=RIM_VALID),
        )
    )
    assert len(references) == 33
    for index, refs in references.items():
        pinned = dict(references)
        pinned[index] = tuple(bytes([r[0] ^ 1]) + r[1:] for r in refs)
        with pytest.raises(AttestationError) as err:
            verify_gpu_evidence(
                set_a.evidence,
                set_a.certs,
                expected_nonce=NONCE_A,
                policy=GpuPolicy(reference_measurements=pinned),
                now=RIM_VALID,
                revocation_required=False,
            )
        assert _failure(err).reason == (f"measurement index {index} matches no reference value")
    # positive twin: the same pinned references, unmutated, verify
    report = verify_gpu_evidence(
        set_a.evidence,
        set_a.certs,
        expected_nonce=NONCE_A,
        policy=GpuPolicy(reference_measurements=references),
        now=RIM_VALID,
        revocation_required=False,
    )
    assert report.passed
    assert ev.measurements[1] in references[1]


def test_set_a_one_byte_mutation_rejected_everywhere(set_a: SetA) -> None:
    evidence = set_a.evidence
    assert isinstance(evidence, bytes)
    # every 7th byte (and the last) keeps the test fast; each must be rejected
    for pos in [*range(0, len(evidence), 7), len(evidence) - 1]:
        mutated = bytearray(evidence)
        mutated[pos] ^= 0x01
        with pytest.raises(AttestationError):
            _verify_a(set_a, evidence=bytes(mutated))


def test_set_a_rim_one_byte_mutation_rejected(set_a: SetA) -> None:
    rim = set_a.driver_rim
    assert isinstance(rim, bytes)
    target = rim.index(b'ns2:Hash0="', rim.index(b'index="21"')) + 12
    mutated = (
        rim[:target] + (b"0" if rim[target : target + 1] != b"0" else b"1") + rim[target + 1 :]
    )
    with pytest.raises(AttestationError) as err:
        _verify_a(set_a, policy=_policy_a(set_a, driver_rim=mutated))
    assert "digest does not match" in _failure(err).reason


# --- chain: wrong root, revocation --------------------------------------------------------------


def test_set_a_chain_with_foreign_root_rejected(set_a: SetA) -> None:
    sim = SimulatedGpu()
    certs = [*set_a.certs[:-1], sim.cert_chain[-1]]
    with pytest.raises(AttestationError) as err:
        _verify_a(set_a, certs=certs, allow_simulated=True)
    assert _failure(err).name == "chain"


class _Revocation:
    def __init__(self, answer: RevocationStatus, depth: int = 0) -> None:
        self.answer, self.depth, self.asked = answer, depth, 0

    def status(
        self, cert: x509.Certificate, issuer: x509.Certificate, *, now: dt.datetime
    ) -> RevocationStatus:
        self.asked += 1
        return self.answer if self.asked - 1 == self.depth else RevocationStatus.GOOD


@pytest.mark.parametrize("answer", [RevocationStatus.REVOKED, RevocationStatus.UNKNOWN])
def test_revoked_or_unknown_certificate_rejected(set_a: SetA, answer: RevocationStatus) -> None:
    with pytest.raises(AttestationError) as err:
        _verify_a(set_a, revocation=_Revocation(answer, depth=2), revocation_required=True)
    assert _failure(err).name == "revocation"
    report = _verify_a(set_a, revocation=_Revocation(RevocationStatus.GOOD))
    assert "good per the revocation source" in report.steps[3].reason


# --- set B and set C: signature + chain ---------------------------------------------------------


def test_set_b_signature_and_chain(set_b: tuple[bytes, list[x509.Certificate]]) -> None:
    evidence, chain = set_b
    verify_chain(chain, load_root("device_identity_root.pem"), now=SIM_NOW)
    ev = GpuEvidence.from_bytes(evidence)
    verify_signature(ev, _ec_key(chain[0]))
    assert ev.request_nonce == NONCE_B
    assert (ev.driver_version, ev.vbios_version) == ("550.90.07", "96.00.9f.00.01")
    for pos in (0, 40, len(evidence) // 2, len(evidence) - 97, len(evidence) - 1):
        mutated = bytearray(evidence)
        mutated[pos] ^= 0x80
        with pytest.raises((ProtocolError, VerificationError)):
            verify_signature(GpuEvidence.from_bytes(bytes(mutated)), _ec_key(chain[0]))


def test_set_b_mutated_certificate_rejected(set_b: tuple[bytes, list[x509.Certificate]]) -> None:
    _, chain = set_b
    der = bytearray(chain[1].public_bytes(Encoding.DER))
    der[-10] ^= 0x01  # inside the issuer's signature
    broken = [chain[0], x509.load_der_x509_certificate(bytes(der)), *chain[2:]]
    with pytest.raises(VerificationError):
        verify_chain(broken, load_root("device_identity_root.pem"), now=SIM_NOW)


def test_set_c_eight_gpus(shared_vectors: Path) -> None:
    entries = json.loads(
        (shared_vectors / "attestation" / "nvidia_h100" / "ppcie_gpu_evidence.json").read_text()
    )
    assert len(entries) == 8
    root = load_root("device_identity_root.pem")
    for entry in entries:
        chain = parse_pem_chain(base64.b64decode(entry["certificate"]))
        verify_chain(chain, root, now=SIM_NOW)
        ev = GpuEvidence.from_bytes(base64.b64decode(entry["evidence"]))
        verify_signature(ev, _ec_key(chain[0]))
        assert ev.request_nonce.hex() == entry["nonce"]
        assert ev.driver_version == entry["driver_version"]
        assert ev.vbios_version == entry["vbios_version"].lower()


# --- simulated GPU: same code path, trusted only when allowed, CC mode ---------------------------


@pytest.fixture(scope="module")
def sim() -> SimulatedGpu:
    return SimulatedGpu()


def _verify_sim(
    gpu: SimulatedGpu,
    nonce: bytes = b"\x07" * 32,
    *,
    policy: GpuPolicy | None = None,
    allow_simulated: bool = True,
    expected_nonce: bytes | None = None,
    cert_chain: list[bytes] | None = None,
) -> VerificationReport:
    """Verify `gpu`'s evidence for `nonce`; the verifier side can be given other values."""
    evidence, certs = gpu.attest(nonce)
    return verify_gpu_evidence(
        evidence,
        cert_chain if cert_chain is not None else certs,
        expected_nonce=nonce if expected_nonce is None else expected_nonce,
        policy=policy or GpuPolicy(reference_measurements=gpu.reference_measurements()),
        now=SIM_NOW,
        allow_simulated=allow_simulated,
    )


def test_simulated_verifies_when_allowed(sim: SimulatedGpu) -> None:
    report = _verify_sim(sim)
    assert report.passed
    assert "SIMULATED" in report.steps[2].reason


def test_simulated_refused_by_default(sim: SimulatedGpu) -> None:
    with pytest.raises(AttestationError) as err:
        _verify_sim(sim, allow_simulated=False)
    assert _failure(err).name == "chain"


def test_simulated_not_in_cc_mode_rejected(sim: SimulatedGpu) -> None:
    off = SimulatedGpu(cc_mode=False)
    with pytest.raises(AttestationError) as err:
        _verify_sim(off, policy=GpuPolicy(reference_measurements=sim.reference_measurements()))
    assert _failure(err).reason == (
        f"measurement index {SIM_CC_MODE_INDEX} matches no reference value"
    )


def test_simulated_nonce_bound(sim: SimulatedGpu) -> None:
    with pytest.raises(AttestationError) as err:
        _verify_sim(sim, b"\x01" * 32, expected_nonce=b"\x02" * 32)
    assert _failure(err).name == "nonce"


def test_simulated_other_device_key_rejected(sim: SimulatedGpu) -> None:
    with pytest.raises(AttestationError) as err:
        _verify_sim(sim, cert_chain=SimulatedGpu().cert_chain)
    assert _failure(err).name == "signature"


def test_policy_without_reference_values_rejected(sim: SimulatedGpu) -> None:
    with pytest.raises(AttestationError) as err:
        _verify_sim(sim, policy=GpuPolicy())
    assert _failure(err).name == "rims"


def test_evidence_round_trip(sim: SimulatedGpu) -> None:
    evidence, _ = sim.attest(b"\x05" * 32)
    ev = GpuEvidence.from_bytes(evidence)
    assert ev.to_bytes() == evidence
    assert ev.vbios_version == sim.vbios_version
    assert ev.driver_version == sim.driver_version


# --- FWID: report opaque field 20 bound to the leaf's DICE TcbInfo ------------------------------


def test_fwid_bound_to_leaf_for_set_b_and_c(set_b: tuple[bytes, list[x509.Certificate]]) -> None:
    evidence, chain = set_b
    ev = GpuEvidence.from_bytes(evidence)
    assert "equals" in _check_fwid(ev, chain[0])
    other = SimulatedGpu()  # a leaf with a different FWID
    leaf = x509.load_der_x509_certificate(other.cert_chain[0])
    with pytest.raises(VerificationError, match="FWID differs"):
        _check_fwid(ev, leaf)
    sim_root = x509.load_der_x509_certificate(other.cert_chain[-1])  # no DICE extension at all
    with pytest.raises(VerificationError, match="no DICE TcbInfo"):
        _check_fwid(ev, sim_root)


def test_simulated_report_with_other_fwid_rejected(sim: SimulatedGpu) -> None:
    nonce = b"\x09" * 32
    good, certs = sim.attest(nonce)
    ev = GpuEvidence.from_bytes(good)
    opaque = tuple((t, bytes(48) if t == OPAQUE_FWID else v) for t, v in ev.opaque)
    forged = build_evidence(
        nonce=nonce,
        blocks=ev.blocks,
        responder_nonce=ev.responder_nonce,
        opaque=opaque,
        sign=sim._keys[0],  # the device's own key: only the FWID differs
    )
    policy = GpuPolicy(reference_measurements=sim.reference_measurements())
    with pytest.raises(AttestationError) as err:
        verify_gpu_evidence(
            forged, certs, expected_nonce=nonce, policy=policy, now=SIM_NOW, allow_simulated=True
        )
    assert _failure(err).name == "fwid"
    report = verify_gpu_evidence(
        good, certs, expected_nonce=nonce, policy=policy, now=SIM_NOW, allow_simulated=True
    )
    assert report.steps[5].reason == "report FWID equals the attestation certificate's DICE FWID"


def test_rims_and_pinned_measurements_are_both_compared(set_a: SetA) -> None:
    refs = dict(
        merge_references(
            verify_rim(set_a.driver_rim, now=RIM_VALID), verify_rim(set_a.vbios_rim, now=RIM_VALID)
        )
    )
    both = _policy_a(set_a, reference_measurements=refs)
    report = _verify_a(set_a, policy=both)
    assert "66 reference indices" in report.steps[-1].reason  # 33 from RIMs + 33 pinned
    refs[22] = (bytes(48),)  # a pinned value the RIMs do not cover differently: must still fail
    with pytest.raises(AttestationError) as err:
        _verify_a(set_a, policy=_policy_a(set_a, reference_measurements=refs))
    assert _failure(err).reason == "measurement index 22 matches no reference value"


def test_expired_intermediate_rejected() -> None:
    """A7: an expired intermediate is refused; the same chain inside its validity passes."""
    keys = [ec.generate_private_key(ec.SECP384R1()) for _ in range(3)]
    names = ["root", "ica", "leaf"]
    spans = [(2020, 2099), (2021, 2025), (2021, 2099)]  # the intermediate expires in 2025
    certs: list[x509.Certificate] = []
    for i in (0, 1, 2):
        issuer = max(i - 1, 0)
        certs.append(
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[i])]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[issuer])]))
            .public_key(keys[i].public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(dt.datetime(spans[i][0], 1, 1, tzinfo=dt.UTC))
            .not_valid_after(dt.datetime(spans[i][1], 1, 1, tzinfo=dt.UTC))
            .add_extension(x509.BasicConstraints(ca=i < 2, path_length=None), critical=True)
            .sign(keys[issuer], hashes.SHA384())
        )
    chain = certs[::-1]  # leaf first
    verify_chain(chain, certs[0], now=dt.datetime(2024, 6, 1, tzinfo=dt.UTC))
    with pytest.raises(VerificationError, match="depth 1 is not valid at this time"):
        verify_chain(chain, certs[0], now=dt.datetime(2026, 6, 1, tzinfo=dt.UTC))
    with pytest.raises(VerificationError, match="pinned root"):
        verify_chain(
            chain, load_root("device_identity_root.pem"), now=dt.datetime(2024, 6, 1, tzinfo=dt.UTC)
        )


def test_failing_revocation_source_fails_closed(sim: SimulatedGpu) -> None:
    class Broken:
        def status(
            self, cert: x509.Certificate, issuer: x509.Certificate, *, now: dt.datetime
        ) -> RevocationStatus:
            raise TimeoutError

    nonce = b"\x03" * 32
    evidence, certs = sim.attest(nonce)
    policy = GpuPolicy(reference_measurements=sim.reference_measurements())
    with pytest.raises(AttestationError) as err:
        verify_gpu_evidence(
            evidence,
            certs,
            expected_nonce=nonce,
            policy=policy,
            now=SIM_NOW,
            allow_simulated=True,
            revocation=Broken(),
            revocation_required=True,
        )
    assert _failure(err).name == "revocation"
    lenient = verify_gpu_evidence(evidence, certs, expected_nonce=nonce, policy=policy,
                                  now=SIM_NOW, allow_simulated=True, revocation=Broken(),
                                  revocation_required=False)
    assert [s.name for s in lenient.warnings] == ["revocation"]  # a warning, never a pass
    report = verify_gpu_evidence(
        evidence,
        certs,
        expected_nonce=nonce,
        policy=policy,
        now=SIM_NOW,
        allow_simulated=True,
        revocation=_Revocation(RevocationStatus.GOOD),
    )
    assert report.passed
