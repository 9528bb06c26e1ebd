"""Issue 9 item 8: revocation fails closed. AMD's KDS CRL (ARK-signed) from a cache, per policy.

CRLs are generated here: by the simulated ARK (through the whole bundle verifier) and by a test
CA that signs with RSASSA-PSS / SHA-384 like AMD's ARK (`check_amd_crl` directly). No real AMD
CRL vector exists in ../shared/vectors, so the real ARK is not exercised with one.
"""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

from attestation.report import AttestationError
from attestation.revocation import RevocationSources, check_amd_crl, load_revocation_cache
from attestation.simulated import WITH_SIMULATED
from attestation.verify_bundle import VerifiedBundle, verify_bundle
from hushcc.errors import VerificationError
from tests.attestation.bundle_helpers import NOW, SIM_POLICY, Node, make_node

AT = NOW + timedelta(minutes=5)
REQUIRED = dataclasses.replace(SIM_POLICY, revocation="required", require_gpu=False)
BEST_EFFORT = dataclasses.replace(REQUIRED, revocation="best-effort")


@pytest.fixture(scope="module")
def node() -> Node:
    return make_node()


@pytest.fixture(scope="module")
def bundle(node: Node) -> bytes:
    return node.bundle(gpus=[]).to_json()


def _verify(node: Node, data: bytes, crl: bytes | None, **kw: Any) -> VerifiedBundle:
    kw.setdefault("policy", REQUIRED)
    crls = {"Milan": crl} if crl is not None else {}
    return verify_bundle(data, now=AT, log=node.log, cpu_trust=WITH_SIMULATED,
                         revocation=RevocationSources(crls), **kw)


def _crl(node: Node, **kw: Any) -> bytes:
    kw.setdefault("this_update", NOW - timedelta(days=1))
    kw.setdefault("next_update", NOW + timedelta(days=6))
    return node.tee.crl(**kw)


def test_current_crl_passes(node: Node, bundle: bytes) -> None:
    report = _verify(node, bundle, _crl(node)).report
    assert report.passed
    assert not report.warnings
    assert "(1) simulated: revocation" in [s.name for s in report.steps]


@pytest.mark.parametrize("case", ["missing", "stale", "revoked-ask", "foreign-signer"])
def test_required_fails_closed(node: Node, bundle: bytes, case: str) -> None:
    crl = {
        "missing": lambda: None,
        "stale": lambda: _crl(node, this_update=NOW - timedelta(days=9),
                              next_update=NOW - timedelta(days=2)),
        "revoked-ask": lambda: _crl(node, revoked=[node.tee.ask.serial_number]),
        "foreign-signer": lambda: make_node().tee.crl(this_update=NOW - timedelta(days=1),
                                                      next_update=NOW + timedelta(days=6)),
    }[case]()
    with pytest.raises(AttestationError) as exc:
        _verify(node, bundle, crl)
    assert exc.value.report.first_failure is not None
    assert exc.value.report.first_failure.name == "(1) simulated: revocation"


def test_best_effort_warns_but_never_passes(node: Node, bundle: bytes) -> None:
    report = _verify(node, bundle, None, policy=BEST_EFFORT).report
    assert report.passed
    assert [s.name for s in report.warnings] == ["(1) simulated: revocation"]
    assert "[WARN] (1) simulated: revocation: NOT checked" in report.render()
    # a revoked ASK fails under best-effort too
    with pytest.raises(AttestationError):
        _verify(node, bundle, _crl(node, revoked=[node.tee.ask.serial_number]),
                policy=BEST_EFFORT)


def test_default_policy_required_outside_the_simulated_tee() -> None:
    default = dataclasses.replace(SIM_POLICY, revocation=None)
    assert default.revocation_required(simulated=False)
    assert not default.revocation_required(simulated=True)


# An ARK-like test CA: RSA, CRL signed with RSASSA-PSS / SHA-384 as AMD's KDS signs it.
def _rsa_ca(name: str) -> tuple[rsa.RSAPrivateKey, x509.Certificate]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(1)
            .not_valid_before(NOW - timedelta(days=1)).not_valid_after(NOW + timedelta(days=9))
            .sign(key, hashes.SHA384()))
    return key, cert


def _pss_crl(key: rsa.RSAPrivateKey, issuer: x509.Name, revoked: int | None = None) -> bytes:
    builder = (x509.CertificateRevocationListBuilder().issuer_name(issuer)
               .last_update(NOW - timedelta(days=1)).next_update(NOW + timedelta(days=6)))
    if revoked is not None:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(revoked)
            .revocation_date(NOW - timedelta(days=1)).build())
    pss = padding.PSS(mgf=padding.MGF1(hashes.SHA384()), salt_length=48)
    crl = builder.sign(key, hashes.SHA384(), rsa_padding=pss)
    return crl.public_bytes(serialization.Encoding.DER)


def test_rsa_pss_crl_like_amds(node: Node) -> None:
    key, ark = _rsa_ca("ARK-Test")
    other_key, _ = _rsa_ca("ARK-Test")
    ask = node.tee.ask  # any certificate with a serial stands in for the ASK
    good = _pss_crl(key, ark.subject)
    assert check_amd_crl(good, ark=ark, ask=ask, now=NOW, required=True).checked
    with pytest.raises(VerificationError, match="revoked"):
        check_amd_crl(_pss_crl(key, ark.subject, ask.serial_number), ark=ark, ask=ask, now=NOW,
                      required=True)
    with pytest.raises(VerificationError, match="not issued and signed by the ARK"):
        check_amd_crl(_pss_crl(other_key, ark.subject), ark=ark, ask=ask, now=NOW,
                      required=True)
    with pytest.raises(VerificationError, match="does not parse"):
        check_amd_crl(good[:-5], ark=ark, ask=ask, now=NOW, required=True)


def test_cache_directory(node: Node, tmp_path: Path) -> None:
    (tmp_path / "amd").mkdir()
    (tmp_path / "amd" / "Milan.crl").write_bytes(_crl(node))
    sources = load_revocation_cache(tmp_path)
    assert set(sources.amd_crls) == {"Milan"}
    assert sources.gpu is None
