"""NVIDIA H100 GPU attestation: SPDM evidence, device chains, RIMs, NVML collection, simulation.

Public entry points: `verify_gpu_evidence`, `GpuPolicy`, `SimulatedGpu`, `RevocationSource`,
`RevocationStatus`, `OcspRevocationSource`, `collect_gpu_evidence` (in `attestation.gpu.nvml`).
"""

from __future__ import annotations

from attestation.gpu.chain import RevocationSource, RevocationStatus
from attestation.gpu.ocsp import OcspRevocationSource
from attestation.gpu.simulated import SimulatedGpu
from attestation.gpu.verify import GpuPolicy, verify_gpu_evidence

__all__ = [
    "GpuPolicy",
    "OcspRevocationSource",
    "RevocationSource",
    "RevocationStatus",
    "SimulatedGpu",
    "verify_gpu_evidence",
]
