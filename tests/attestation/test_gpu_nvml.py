"""NVML evidence collection through a fake with pynvml's API surface, backed by SimulatedGpu.

The fake uses pynvml's own constants, error classes and ctypes structures, so the collector is
exercised against the exact shapes NVML returns; no GPU is needed.
"""

from __future__ import annotations

import base64
import datetime as dt
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import pynvml
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from attestation.gpu import GpuPolicy, verify_gpu_evidence
from attestation.gpu.anchors import load_root
from attestation.gpu.nvml import chain_to_der, collect_gpu_evidence
from attestation.gpu.simulated import SimulatedGpu
from attestation.x509chain import parse_pem_chain
from hushcc.errors import ConfigError, ProtocolError, VerificationError

if TYPE_CHECKING:
    from pathlib import Path

NOW = dt.datetime(2026, 11, 23, tzinfo=dt.UTC)
NONCE = bytes(range(32))


class FakeNvml:
    """pynvml's CC surface over simulated GPUs; `fail` names a function that raises."""

    NVMLError = pynvml.NVMLError

    def __getattr__(self, name: str) -> Any:
        if name.startswith("NVML_"):
            return getattr(pynvml, name)
        raise AttributeError(name)

    def __init__(
        self,
        gpus: list[SimulatedGpu],
        *,
        cc: int = 1,
        devtools: int = 0,
        env: int = 2,
        ready: int = 1,
        fail: str | None = None,
        pem: bool = True,
    ) -> None:
        self.gpus, self.fail, self.pem = gpus, fail, pem
        self.state = SimpleNamespace(environment=env, ccFeature=cc, devToolsMode=devtools)
        self.ready, self.initialised, self.shutdowns = ready, False, 0

    def _maybe_fail(self, name: str) -> None:
        if self.fail == name:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)

    def nvmlInit(self) -> None:
        self._maybe_fail("nvmlInit")
        self.initialised = True

    def nvmlShutdown(self) -> None:
        self.shutdowns += 1

    def nvmlSystemGetConfComputeState(self) -> SimpleNamespace:
        self._maybe_fail("nvmlSystemGetConfComputeState")
        return self.state

    def nvmlSystemGetConfComputeGpusReadyState(self) -> int:
        return self.ready

    def nvmlDeviceGetCount(self) -> int:
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, i: int) -> SimulatedGpu:
        return self.gpus[i]

    def nvmlDeviceGetConfComputeGpuAttestationReport(
        self, handle: SimulatedGpu, nonce: bytes
    ) -> Any:
        self._maybe_fail("nvmlDeviceGetConfComputeGpuAttestationReport")
        evidence, _ = handle.attest(bytes(nonce))
        report = pynvml.c_nvmlConfComputeGpuAttestationReport_t()
        report.attestationReportSize = len(evidence)
        report.attestationReport[: len(evidence)] = list(evidence)
        return report

    def nvmlDeviceGetConfComputeGpuCertificate(self, handle: SimulatedGpu) -> Any:
        certs = [x509.load_der_x509_certificate(c) for c in handle.cert_chain]
        raw = b"".join(
            c.public_bytes(Encoding.PEM) if self.pem else c.public_bytes(Encoding.DER)
            for c in certs
        )
        cert = pynvml.c_nvmlConfComputeGpuCertificate_t()
        cert.attestationCertChainSize = len(raw)
        cert.attestationCertChain[: len(raw)] = list(raw)
        return cert


@pytest.fixture(scope="module")
def gpus() -> list[SimulatedGpu]:
    return [SimulatedGpu(), SimulatedGpu()]


@pytest.mark.parametrize("pem", [True, False], ids=["pem-chain", "der-chain"])
def test_collects_one_verifiable_entry_per_gpu(gpus: list[SimulatedGpu], pem: bool) -> None:
    fake = FakeNvml(gpus, pem=pem)
    entries = collect_gpu_evidence(NONCE, nvml=fake)
    assert len(entries) == 2
    assert fake.shutdowns == 1
    for gpu, entry in zip(gpus, entries, strict=True):
        assert list(entry.certs) == gpu.cert_chain
        report = verify_gpu_evidence(
            entry.evidence,
            entry.certs,
            expected_nonce=NONCE,
            policy=GpuPolicy(reference_measurements=gpu.reference_measurements()),
            now=NOW,
            allow_simulated=True,
        )
        assert report.passed
        as_json = entry.to_json()
        assert as_json["type"] == "nvidia-h100"
        assert base64.b64decode(str(as_json["evidence"])) == entry.evidence


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"cc": 0}, "confidential-computing mode is off"),
        ({"devtools": 1}, "dev-tools mode is on"),
        ({"env": 1}, "environment is not production"),
        ({"ready": 0}, "not in the CC ready state"),
    ],
)
def test_refuses_when_not_in_cc_state(
    gpus: list[SimulatedGpu], kwargs: dict[str, Any], message: str
) -> None:
    fake = FakeNvml(gpus, **kwargs)
    with pytest.raises(VerificationError, match=message):
        collect_gpu_evidence(NONCE, nvml=fake)
    assert fake.shutdowns == 1
    assert collect_gpu_evidence(NONCE, nvml=FakeNvml(gpus))  # positive twin


def test_sim_environment_only_when_allowed(gpus: list[SimulatedGpu]) -> None:
    assert collect_gpu_evidence(NONCE, nvml=FakeNvml(gpus, env=1), allow_sim_environment=True)


def test_no_gpu_refused() -> None:
    with pytest.raises(VerificationError, match="no GPU"):
        collect_gpu_evidence(NONCE, nvml=FakeNvml([]))


@pytest.mark.parametrize(
    "fail",
    ["nvmlInit", "nvmlSystemGetConfComputeState", "nvmlDeviceGetConfComputeGpuAttestationReport"],
)
def test_nvml_errors_wrapped(gpus: list[SimulatedGpu], fail: str) -> None:
    with pytest.raises(ConfigError):
        collect_gpu_evidence(NONCE, nvml=FakeNvml(gpus, fail=fail))


def test_nonce_must_be_32_bytes(gpus: list[SimulatedGpu]) -> None:
    with pytest.raises(ProtocolError):
        collect_gpu_evidence(NONCE[:31], nvml=FakeNvml(gpus))


def test_chain_without_root_gets_pinned_root_appended(shared_vectors: Path) -> None:
    pem = (
        shared_vectors
        / "attestation"
        / "nvidia_h100"
        / "nvtrust_v2.3.0_sample"
        / "hopperCertChain.txt"
    ).read_bytes()
    chain = parse_pem_chain(pem)
    without_root = b"".join(c.public_bytes(Encoding.PEM) for c in chain[:-1])
    root_der = load_root("device_identity_root.pem").public_bytes(Encoding.DER)
    assert chain_to_der(without_root)[-1] == root_der
    assert chain_to_der(pem) == [c.public_bytes(Encoding.DER) for c in chain]


@pytest.mark.parametrize("raw", [b"", b"\x30", b"\x30\x85\x00", b"\x31\x00", b"-----BEGIN x"])
def test_bad_chain_bytes_rejected(raw: bytes) -> None:
    with pytest.raises(ProtocolError):
        chain_to_der(raw)
