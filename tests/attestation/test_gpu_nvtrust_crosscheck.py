"""Cross-check: NVIDIA's nv-local-gpu-verifier and our verifier agree on the same evidence.

nv-local-gpu-verifier pins an old `cryptography`, so it never goes into the project venv; it
runs in a separate environment named by `HUSHCC_NVTRUST_PYTHON` (its interpreter):

    python -m venv /tmp/nvv && /tmp/nvv/bin/pip install nv-local-gpu-verifier
    HUSHCC_NVTRUST_PYTHON=/tmp/nvv/bin/python \
        pytest tests/attestation/test_gpu_nvtrust_crosscheck.py

Without it these tests skip, saying why. With it (checked with nv-local-gpu-verifier 2.7.3):
the report signature, the request nonce, all 64 measurements, both RIM signatures and versions
and the RIM measurement comparison agree on set A; one-byte mutations are rejected by both;
our simulated GPU's evidence parses and verifies in NVIDIA's parser (same wire format).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from attestation.gpu import GpuPolicy, verify_gpu_evidence
from attestation.gpu.rim import verify_rim
from attestation.gpu.simulated import SimulatedGpu
from attestation.gpu.spdm import GpuEvidence
from attestation.report import AttestationError
from attestation.x509chain import parse_pem_chain

# Runs inside the nv-local-gpu-verifier environment: one JSON list of jobs on stdin, one
# result line per job (nvtrust logs to stdout, so results carry a marker).
NVTRUST_SCRIPT = r"""
import hashlib, json, sys
from cryptography import x509
from OpenSSL import crypto
from signxml import XMLVerifier
from verifier.attestation import AttestationReport
from verifier.config import HopperSettings
from verifier.rim import RIM
from verifier.verifier import Verifier

for job in json.load(sys.stdin):
    out, settings = {}, HopperSettings()
    try:
        report = AttestationReport(bytes.fromhex(job["evidence"]), settings)
        leaf = x509.load_pem_x509_certificate(job["leaf_pem"].encode())
        out["signature"] = bool(
            report.verify_signature(leaf, settings.signature_length, hashlib.sha384))
        out["nonce"] = report.get_request_message().get_nonce().hex()
        out["measurements"] = report.get_measurements()
    except Exception as exc:
        out["error"] = type(exc).__name__
    if job.get("rims") and "error" not in out:
        rims = {}
        for name in ("driver", "vbios"):
            try:
                rim = RIM(name, settings, content=job["rims"][name])
                signer = crypto.dump_certificate(crypto.FILETYPE_PEM, rim.extract_certificates()[0])
                XMLVerifier().verify(rim.root, x509_cert=signer.decode())
                out[name + "_rim"] = rim.colloquialVersion
                rims[name] = rim
            except Exception as exc:
                out[name + "_rim"] = "error: " + type(exc).__name__
        if len(rims) == 2:
            out["measurements_match"] = bool(
                Verifier(report, rims["driver"], rims["vbios"], settings).verify(settings))
    print("\nHUSHCC-RESULT " + json.dumps(out), flush=True)
"""

A_NONCE = "4cff7f5380ead8fad8ec2c531c110aca4302a88f603792801a8ca29ee151af2e"
RIM_VALID = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
NOW = dt.datetime(2026, 11, 23, tzinfo=dt.UTC)


@pytest.fixture(scope="module")
def nvtrust_python() -> str:
    path = os.environ.get("HUSHCC_NVTRUST_PYTHON", "")
    if not path or not Path(path).is_file():
        pytest.skip("nv-local-gpu-verifier environment not given (set HUSHCC_NVTRUST_PYTHON)")
    return path


def _nvtrust(python: str, jobs: list[dict[str, Any]], *, cwd: Path) -> list[dict[str, Any]]:
    proc = subprocess.run(
        [python, "-c", NVTRUST_SCRIPT],
        cwd=cwd,  # nvtrust writes verifier.log into its working directory
        input=json.dumps(jobs),
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    marker = "HUSHCC-RESULT "
    return [
        json.loads(line[len(marker) :])
        for line in proc.stdout.splitlines()
        if line.startswith(marker)
    ]


def _leaf_pem(certs: list[x509.Certificate]) -> str:
    return certs[0].public_bytes(Encoding.PEM).decode()


def test_set_a_agrees(shared_vectors: Path, nvtrust_python: str, tmp_path: Path) -> None:
    d = shared_vectors / "attestation" / "nvidia_h100" / "nvtrust_initial_test_no_gpu"
    evidence = bytes.fromhex((d / "attestationReport.txt").read_text().strip())
    chain = parse_pem_chain((d / "gpuAkCertChain.txt").read_bytes())
    rims = {
        "driver": (d / "Driver_RIM_test_no_gpu.swidtag").read_bytes(),
        "vbios": (d / "1010_0200_882_96005E0001_test_no_gpu.swidtag").read_bytes(),
    }
    rim_text = {k: v.decode() for k, v in rims.items()}
    base: dict[str, Any] = {"leaf_pem": _leaf_pem(chain), "rims": rim_text}
    mutations = [37 + 8 + 7 + 10, 37 + 3600, len(evidence) - 1]  # a measurement, opaque, signature
    jobs = [{**base, "evidence": evidence.hex()}]
    for pos in mutations:
        mutated = bytearray(evidence)
        mutated[pos] ^= 0x01
        jobs.append({**base, "evidence": bytes(mutated).hex()})
    tampered_rim = rims["driver"].replace(b'index="21" active="True"', b'index="21" active="False"')
    assert tampered_rim != rims["driver"]
    jobs.append(
        {
            **base,
            "evidence": evidence.hex(),
            "rims": {**rim_text, "driver": tampered_rim.decode()},
        }
    )
    theirs = _nvtrust(nvtrust_python, jobs, cwd=tmp_path)
    assert len(theirs) == len(jobs)

    # intact: both accept, and agree on every value
    ours = GpuEvidence.from_bytes(evidence)
    policy = GpuPolicy(driver_rim=rims["driver"], vbios_rim=rims["vbios"])
    report = verify_gpu_evidence(
        evidence,
        [c.public_bytes(Encoding.DER) for c in chain],
        expected_nonce=ours.request_nonce,
        policy=policy,
        now=RIM_VALID,
    )
    assert report.passed
    assert theirs[0]["signature"] is True
    assert theirs[0]["nonce"] == ours.request_nonce.hex() == A_NONCE
    assert theirs[0]["measurements"] == [ours.measurements[i].hex() for i in range(1, 65)]
    assert (
        theirs[0]["driver_rim"].lower()
        == verify_rim(rims["driver"], now=RIM_VALID).colloquial_version.lower()
    )
    assert (
        theirs[0]["vbios_rim"].lower()
        == verify_rim(rims["vbios"], now=RIM_VALID).colloquial_version.lower()
    )
    assert theirs[0]["measurements_match"] is True

    # one mutated byte: both reject
    for result, pos in zip(theirs[1:4], mutations, strict=True):
        assert result.get("signature") is not True
        mutated = bytearray(evidence)
        mutated[pos] ^= 0x01
        with pytest.raises(AttestationError):
            verify_gpu_evidence(
                bytes(mutated),
                [c.public_bytes(Encoding.DER) for c in chain],
                expected_nonce=ours.request_nonce,
                policy=policy,
                now=RIM_VALID,
            )
    # a RIM edited after signing: both reject its signature
    assert theirs[4]["driver_rim"].startswith("error")
    with pytest.raises(AttestationError):
        verify_gpu_evidence(
            evidence,
            [c.public_bytes(Encoding.DER) for c in chain],
            expected_nonce=ours.request_nonce,
            policy=GpuPolicy(driver_rim=tampered_rim, vbios_rim=rims["vbios"]),
            now=RIM_VALID,
        )


def test_set_b_and_simulated_evidence_agree(
    shared_vectors: Path, nvtrust_python: str, tmp_path: Path
) -> None:
    d = shared_vectors / "attestation" / "nvidia_h100" / "nvtrust_v2.3.0_sample"
    evidence_b = bytes.fromhex((d / "hopperAttestationReport.txt").read_text().strip())
    chain_b = parse_pem_chain((d / "hopperCertChain.txt").read_bytes())
    sim = SimulatedGpu()
    nonce = bytes(range(32))
    evidence_s, certs_s = sim.attest(nonce)
    sim_leaf = x509.load_der_x509_certificate(certs_s[0])
    theirs = _nvtrust(
        nvtrust_python,
        [
            {"evidence": evidence_b.hex(), "leaf_pem": _leaf_pem(chain_b)},
            {"evidence": evidence_s.hex(), "leaf_pem": _leaf_pem([sim_leaf])},
        ],
        cwd=tmp_path,
    )
    assert theirs[0]["signature"] is True
    assert theirs[0]["measurements"] == [
        GpuEvidence.from_bytes(evidence_b).measurements[i].hex() for i in range(1, 65)
    ]
    # NVIDIA's parser reads our simulated evidence and verifies its signature: same format
    assert theirs[1]["signature"] is True
    assert theirs[1]["nonce"] == nonce.hex()
    assert theirs[1]["measurements"] == [
        GpuEvidence.from_bytes(evidence_s).measurements[i].hex() for i in range(1, 65)
    ]
    report = verify_gpu_evidence(
        evidence_s,
        certs_s,
        expected_nonce=nonce,
        policy=GpuPolicy(reference_measurements=sim.reference_measurements()),
        now=NOW,
        allow_simulated=True,
    )
    assert report.passed
