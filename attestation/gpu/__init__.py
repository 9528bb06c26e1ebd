"""NVIDIA H100 GPU attestation: SPDM evidence, device chains, RIMs, NVML collection, simulation.

Public entry points: `verify_gpu_evidence`, `GpuPolicy`, `RevocationSource`, `RevocationStatus`,
`OcspRevocationSource`, `collect_gpu_evidence` (in `attestation.gpu.nvml`). The simulated GPU
(`attestation.gpu.simulated.SimulatedGpu`) is deliberately not re-exported: it belongs to the
tests, the demo and the node's `--tee simulated`, imported by its own module path.
"""

from __future__ import annotations

from attestation.gpu.ocsp import OcspRevocationSource
from attestation.gpu.verify import GpuPolicy, verify_gpu_evidence
from attestation.x509chain import RevocationSource, RevocationStatus

__all__ = [
    "GpuPolicy",
    "OcspRevocationSource",
    "RevocationSource",
    "RevocationStatus",
    "verify_gpu_evidence",
]
