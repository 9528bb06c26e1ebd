"""SEV-SNP report format and verification against the real Milan sample (go-sev-guest testdata)."""

from __future__ import annotations

import contextlib
import json
import warnings
from datetime import UTC, datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from hypothesis import given, settings
from hypothesis import strategies as st

from attestation.amd import PRODUCTS, SnpTrust, amd_trust
from attestation.policy import Policy
from attestation.report import AttestationError
from attestation.sevsnp import REPORT_SIZE, SnpReport, blank_report
from attestation.snp_verify import signed_by, verify_snp_report
from attestation.vcek import TcbVersion, load_der_certificate, parse_vcek
from hushcc.errors import ProtocolError, VerificationError

Sample = tuple[bytes, bytes, dict[str, Any]]

# Inside the VCEK's validity (2022-09-24 .. 2029-09-24) and the ASK/ARK's (2020 .. 2045).
AT = datetime(2023, 6, 1, tzinfo=UTC)


def _offline(**kw: Any) -> Policy:
    """A policy for the real AMD vector, which comes with no KDS CRL: revocation best-effort."""
    return Policy(revocation="best-effort", **kw)


@pytest.fixture(scope="module")
def sample(shared_vectors: Path) -> Sample:
    base = shared_vectors / "attestation"
    meta = json.loads((base / "sev_snp.json").read_text())
    return ((base / "sev_snp" / "attestation.bin").read_bytes(),
            (base / "sev_snp" / "vcek.der").read_bytes(), meta["report_fields"])


def failed_step(exc: pytest.ExceptionInfo[AttestationError]) -> str:
    step = exc.value.report.first_failure
    assert step is not None
    return step.name


def test_parse_real_report_fields(sample: Sample) -> None:
    raw, _, fields = sample
    report = SnpReport.from_bytes(raw)
    assert report.version == fields["version"]
    assert report.policy == int(fields["policy"], 16)
    assert report.vmpl == fields["vmpl"]
    assert report.measurement.hex() == fields["measurement"]
    assert report.report_data.hex() == fields["report_data"]
    assert report.chip_id.hex() == fields["chip_id"]
    assert report.reported_tcb == int(fields["reported_tcb"], 16)
    assert report.report_id.hex() == fields["report_id"]
    assert report.debug
    assert report.to_bytes() == raw


def test_vcek_extensions(sample: Sample) -> None:
    raw, vcek_der, _ = sample
    vcek = parse_vcek(vcek_der)
    assert vcek.product_name == "Milan-B0"
    assert vcek.product == "Milan"
    assert vcek.tcb == TcbVersion(bootloader=2, tee=0, snp=5, microcode=68)
    assert vcek.hwid == SnpReport.from_bytes(raw).chip_id


def test_real_report_rejected_by_default_policy_for_debug_only(sample: Sample) -> None:
    raw, vcek, _ = sample
    with pytest.raises(AttestationError) as exc:
        verify_snp_report(raw, [vcek], trust=amd_trust(), policy=_offline(), now=AT)
    assert failed_step(exc) == "debug"
    # Every step before debug passed: debug is the one and only reason.
    assert [s.passed for s in exc.value.report.steps].count(False) == 1
    assert "debug" in str(exc.value)


def test_real_report_accepted_when_policy_allows_debug(sample: Sample) -> None:
    raw, vcek, fields = sample
    report, steps = verify_snp_report(
        raw, [vcek], trust=amd_trust(), policy=_offline(allow_debug=True), now=AT,
        expected_report_data=bytes.fromhex(fields["report_data"]),
        expected_measurements={bytes.fromhex(fields["measurement"])})
    assert steps.passed
    names = [s.name for s in steps.steps]
    for name in ("report signature", "ASK signature", "VCEK signature", "chip id",
                 "TCB matches VCEK", "measurement", "report_data"):
        assert name in names
    assert report.measurement.hex() == fields["measurement"]


def test_real_report_with_explicit_chain(sample: Sample, shared_vectors: Path) -> None:
    raw, vcek, _ = sample
    ask, ark = x509.load_pem_x509_certificates(
        (shared_vectors / "attestation/sev_snp/ask_ark_milan.pem").read_bytes())
    chain = [vcek, *(c.public_bytes(serialization.Encoding.DER) for c in (ask, ark))]
    _, steps = verify_snp_report(raw, chain, trust=amd_trust(), policy=_offline(allow_debug=True),
                                 now=AT)
    assert "ARK pinned" in [s.name for s in steps.steps]


@pytest.mark.parametrize(("when", "step"), [
    pytest.param(datetime(2030, 1, 1, tzinfo=UTC), "VCEK validity", id="after-vcek-expiry"),
    pytest.param(datetime(2022, 9, 1, tzinfo=UTC), "VCEK validity", id="before-vcek-issued"),
    pytest.param(datetime(2046, 1, 1, tzinfo=UTC), "ARK validity", id="after-ark-expiry"),
])
def test_real_report_outside_validity(sample: Sample, when: datetime, step: str) -> None:
    raw, vcek, _ = sample
    with pytest.raises(AttestationError) as exc:
        verify_snp_report(raw, [vcek], trust=amd_trust(), policy=_offline(allow_debug=True),
                          now=when)
    assert failed_step(exc) == step


def test_real_report_wrong_root(sample: Sample) -> None:
    raw, vcek, _ = sample
    trust = amd_trust()
    genoa_as_milan = SnpTrust("AMD", MappingProxyType({"Milan": trust.arks["Genoa"]}),
                              trust.asks)
    with pytest.raises(AttestationError) as exc:
        verify_snp_report(raw, [vcek], trust=genoa_as_milan, policy=_offline(allow_debug=True),
                          now=AT)
    assert failed_step(exc) == "ASK signature"


@pytest.mark.parametrize(("offset", "step"), [
    pytest.param(0x90, "report signature", id="measurement"),
    pytest.param(0x50, "report signature", id="report_data"),
    pytest.param(0x08, "report signature", id="policy"),
    pytest.param(0x1A0, "report signature", id="chip_id"),
    pytest.param(0x2A0, "report signature", id="signature-r"),
    pytest.param(0x2E8, "report signature", id="signature-s"),
    pytest.param(0x000, "report signature", id="version-2-becomes-3"),
    pytest.param(0x001, "parse report", id="version-unsupported"),
    pytest.param(0x3FF, "parse report", id="reserved"),
])
def test_real_report_one_mutated_byte(sample: Sample, offset: int, step: str) -> None:
    raw, vcek, _ = sample
    mutated = bytearray(raw)
    mutated[offset] ^= 0x01
    with pytest.raises(AttestationError) as exc:
        verify_snp_report(bytes(mutated), [vcek], trust=amd_trust(),
                          policy=_offline(allow_debug=True), now=AT)
    assert failed_step(exc) == step


def test_mutated_vcek_rejected(sample: Sample) -> None:
    raw, vcek, _ = sample
    mutated = bytearray(vcek)
    mutated[-10] ^= 0x01  # inside the ASK's signature over the VCEK
    with pytest.raises(AttestationError) as exc:
        verify_snp_report(raw, [bytes(mutated)], trust=amd_trust(),
                          policy=_offline(allow_debug=True), now=AT)
    assert failed_step(exc) == "VCEK signature"


def test_pinned_roots_self_signed_and_milan_ask() -> None:
    trust = amd_trust()
    assert set(trust.arks) == set(PRODUCTS)
    for product, ark in trust.arks.items():
        assert signed_by(ark, ark), product
        assert ark.subject.rfc4514_string().startswith(f"CN=ARK-{product}")
    assert signed_by(trust.asks["Milan"], trust.arks["Milan"])
    assert not signed_by(trust.asks["Milan"], trust.arks["Genoa"])


@pytest.mark.parametrize("version", [2, 3, 5])
def test_blank_report_versions_round_trip(version: int) -> None:
    report = blank_report(version)
    assert SnpReport.from_bytes(report.to_bytes()) == report


@pytest.mark.parametrize(("change", "reason"), [
    pytest.param({"version": 4}, "version", id="version-4"),
    pytest.param({"version": 1}, "version", id="version-1"),
    pytest.param({"signature_algo": 2}, "algorithm", id="sig-algo"),
])
def test_unsupported_fields_rejected(change: dict[str, int], reason: str) -> None:
    data = bytearray(blank_report(5).to_bytes())
    if "version" in change:
        data[0] = change["version"]
    else:
        data[0x34] = change["signature_algo"]
    with pytest.raises(ProtocolError, match=reason):
        SnpReport.from_bytes(bytes(data))


def test_v2_with_v3_fields_rejected_and_v3_accepts_them() -> None:
    for version, ok in ((2, False), (3, True)):
        data = bytearray(blank_report(version).to_bytes())
        data[0x188] = 0x19
        if ok:
            assert SnpReport.from_bytes(bytes(data)).cpuid_fam_id == 0x19
        else:
            with pytest.raises(ProtocolError):
                SnpReport.from_bytes(bytes(data))


@pytest.mark.parametrize("size", [0, 1, REPORT_SIZE - 1, REPORT_SIZE + 1])
def test_wrong_size_rejected(size: int) -> None:
    with pytest.raises(ProtocolError):
        SnpReport.from_bytes(b"\x02" + bytes(max(size - 1, 0)))


@pytest.mark.parametrize("product", ["Milan", "Genoa", "Turin"])
@given(st.lists(st.integers(0, 255), min_size=5, max_size=5))
@settings(max_examples=30)
def test_tcb_round_trip(product: str, spl: list[int]) -> None:
    tcb = TcbVersion(spl[0], spl[1], spl[2], spl[3], fmc=spl[4] if product == "Turin" else 0)
    assert TcbVersion.from_u64(tcb.to_u64(product), product) == tcb


# A9: only our typed errors escape the parsers and the verifier.
@given(st.binary(max_size=2 * REPORT_SIZE))
@settings(max_examples=150)
def test_fuzz_parse_arbitrary_bytes(data: bytes) -> None:
    with contextlib.suppress(ProtocolError):
        SnpReport.from_bytes(data)


@given(st.binary(max_size=2000))
@settings(max_examples=150)
def test_fuzz_vcek_parser(data: bytes) -> None:
    with contextlib.suppress(ProtocolError):
        parse_vcek(data)


@given(data=st.data())
@settings(max_examples=100)
def test_fuzz_verify_mutated_real_report(sample: Sample, data: st.DataObject) -> None:
    raw, vcek, _ = sample
    blob = bytearray(raw)
    for _ in range(data.draw(st.integers(1, 4))):
        blob[data.draw(st.integers(0, len(blob) - 1))] ^= data.draw(st.integers(1, 255))
    cut = data.draw(st.integers(0, len(blob)))
    evidence = bytes(blob) if data.draw(st.booleans()) else bytes(blob[:cut])
    certs = [vcek] if data.draw(st.booleans()) else [vcek[: data.draw(st.integers(0, len(vcek)))]]
    if evidence == raw and certs == [vcek]:  # the mutations cancelled out: the twin verifies
        verify_snp_report(evidence, certs, trust=amd_trust(), policy=_offline(allow_debug=True),
                          now=AT)
        return
    with pytest.raises(VerificationError):
        verify_snp_report(evidence, certs, trust=amd_trust(), policy=_offline(allow_debug=True),
                          now=AT)


def test_lazily_parsed_certificate_fields_fail_as_protocol_error(sample: Sample) -> None:
    # Regression (found by the bundle fuzzer): pyca parses the issuer lazily, so a certificate
    # with a malformed issuer loaded fine and raised ValueError later, inside the verifier.
    _, vcek_der, _ = sample
    issuer = load_der_certificate(vcek_der).issuer.public_bytes()
    # the tag of the first attribute value (OU=Engineering): the Name's framing stays valid
    at = vcek_der.index(issuer) + issuer.index(b"\x0c\x0bEngineering")
    broken = vcek_der[:at] + b"\xfc" + vcek_der[at + 1:]
    with warnings.catch_warnings():  # the sample's serial is not positive (see sev_snp.json)
        warnings.simplefilter("ignore")
        x509.load_der_x509_certificate(broken)  # pyca accepts it ...
    with pytest.raises(ProtocolError):
        load_der_certificate(broken)
    raw = SnpReport.from_bytes(sample[0]).to_bytes()
    with pytest.raises(VerificationError):
        verify_snp_report(raw, [broken], trust=amd_trust(), policy=_offline(allow_debug=True),
                          now=AT)


_INT_FIELDS = {"guest_svn": 4, "policy": 8, "vmpl": 4, "current_tcb": 8, "platform_info": 8,
               "flags": 4, "reported_tcb": 8, "committed_tcb": 8, "launch_tcb": 8,
               "current_build": 1, "committed_major": 1, "launch_mit_vector": 8}
_BYTE_FIELDS = {"report_data": 64, "measurement": 48, "host_data": 32, "chip_id": 64,
                "id_key_digest": 48, "report_id": 32, "signature_r": 72, "signature_s": 72}


@given(st.fixed_dictionaries(
    {**{k: st.integers(0, (1 << (8 * n)) - 1) for k, n in _INT_FIELDS.items()},
     **{k: st.binary(min_size=n, max_size=n) for k, n in _BYTE_FIELDS.items()}}))
@settings(max_examples=60)
def test_report_round_trip(fields: dict[str, Any]) -> None:
    report = blank_report(5).replace(**fields)
    assert SnpReport.from_bytes(report.to_bytes()) == report
