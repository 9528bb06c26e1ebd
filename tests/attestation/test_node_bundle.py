"""Node-side bundle collection: configfs-tsm + NVML collectors through `build_bundle`."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pynvml
import pytest

from attestation.bundle import Release
from attestation.gpu import GpuPolicy, verify_gpu_evidence
from attestation.gpu.simulated import SimulatedGpu
from attestation.node_bundle import collect_bundle, nvml_gpus
from attestation.policy import Policy
from attestation.report import AttestationError
from attestation.sevsnp import SnpReport
from attestation.simulated import SimulatedTee
from attestation.simulated_node import release_entry
from attestation.snp_verify import verify_snp_report
from attestation.verify_bundle import verify_bundle
from tests.attestation.tsm_fake import MEAS, FakeKernel

NOW = datetime(2026, 11, 23, 20, tzinfo=UTC)
KEY_CONFIG = b"\x01\x00\x20" + bytes(32)


class TinyNvml:
    """The NVML calls the collector makes, over simulated GPUs in CC mode."""

    NVMLError = pynvml.NVMLError

    def __init__(self, gpus: list[SimulatedGpu]) -> None:
        self.gpus = gpus

    def __getattr__(self, name: str) -> Any:
        if name.startswith("NVML_"):
            return getattr(pynvml, name)
        raise AttributeError(name)

    def nvmlInit(self) -> None:
        pass

    def nvmlShutdown(self) -> None:
        pass

    def nvmlSystemGetConfComputeState(self) -> SimpleNamespace:
        return SimpleNamespace(ccFeature=pynvml.NVML_CC_SYSTEM_FEATURE_ENABLED,
                               devToolsMode=pynvml.NVML_CC_SYSTEM_DEVTOOLS_MODE_OFF,
                               environment=pynvml.NVML_CC_SYSTEM_ENVIRONMENT_PROD)

    def nvmlSystemGetConfComputeGpusReadyState(self) -> int:
        return int(pynvml.NVML_CC_ACCEPTING_CLIENT_REQUESTS_TRUE)

    def nvmlDeviceGetCount(self) -> int:
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, i: int) -> SimulatedGpu:
        return self.gpus[i]

    def nvmlDeviceGetConfComputeGpuAttestationReport(self, gpu: SimulatedGpu, nonce: bytes) -> Any:
        evidence, _ = gpu.attest(bytes(nonce))
        report = pynvml.c_nvmlConfComputeGpuAttestationReport_t()
        report.attestationReportSize = len(evidence)
        report.attestationReport[: len(evidence)] = list(evidence)
        return report

    def nvmlDeviceGetConfComputeGpuCertificate(self, gpu: SimulatedGpu) -> Any:
        raw = b"".join(gpu.cert_chain)
        cert = pynvml.c_nvmlConfComputeGpuCertificate_t()
        cert.attestationCertChainSize = len(raw)
        cert.attestationCertChain[: len(raw)] = list(raw)
        return cert


@pytest.fixture(scope="module")
def hardware() -> tuple[SimulatedTee, list[SimulatedGpu]]:
    return SimulatedTee.generate(now=NOW), [SimulatedGpu(), SimulatedGpu()]


def test_collect_bundle_binds_both_collectors(
    tmp_path: Path, hardware: tuple[SimulatedTee, list[SimulatedGpu]],
) -> None:
    tee, gpus = hardware
    nonce = b"\x33" * 32
    bundle = collect_bundle(
        node_id=b"\xcd" * 32, key_config=KEY_CONFIG, not_before=NOW,
        not_after=NOW + timedelta(hours=6), release=Release(release_entry(MEAS), 0, "", ()),
        nonce=nonce, gpus=nvml_gpus(TinyNvml(gpus)), tsm_root=tmp_path, tsm_fs=FakeKernel(tee))
    assert bundle.cpu.type == "sev-snp"
    assert [g.type for g in bundle.gpu] == ["nvidia-h100", "nvidia-h100"]
    report = SnpReport.from_bytes(bundle.cpu.evidence)
    assert report.report_data == bundle.binding.report_data(bundle.gpu)
    g_nonce = bundle.binding.gpu_nonce()
    policy = GpuPolicy(reference_measurements=gpus[0].reference_measurements())
    for entry in bundle.gpu:
        assert verify_gpu_evidence(entry.evidence, entry.certs, expected_nonce=g_nonce,
                                   policy=policy, now=NOW, allow_simulated=True).passed
    assert verify_snp_report(bundle.cpu.evidence, bundle.cpu.certs, trust=tee.trust(),
                             policy=Policy(), now=NOW)[1].passed
    # labelled as real hardware, simulated roots are refused by the client verifier
    with pytest.raises(AttestationError) as exc:
        verify_bundle(bundle.to_json(), policy=Policy(allow_simulated=True), now=NOW,
                      log=None, gpu_policy=policy, expected_nonce=nonce)
    assert exc.value.report.first_failure is not None
    assert exc.value.report.first_failure.name == "(1) sev-snp: ARK pinned"
