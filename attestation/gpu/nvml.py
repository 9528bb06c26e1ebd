"""Collect H100 CC evidence on the node through NVML (`pynvml` from nvidia-ml-py), one per GPU.

The collector talks to NVML through one seam: a module object with pynvml's API surface
(`nvmlInit`, `nvmlShutdown`, `nvmlSystemGetConfComputeState`,
`nvmlSystemGetConfComputeGpusReadyState`, `nvmlDeviceGetCount`, `nvmlDeviceGetHandleByIndex`,
`nvmlDeviceGetConfComputeGpuAttestationReport`, `nvmlDeviceGetConfComputeGpuCertificate`, the
`NVML_CC_*` constants and `NVMLError`). Production passes nothing and gets `pynvml`; tests pass
a fake with the same surface backed by `SimulatedGpu`.

Before it asks any GPU for evidence, the collector requires (fail closed):
* CC feature enabled, dev-tools mode off, and the production CC environment (not NVML's
  simulation environment) — `nvmlSystemGetConfComputeState`;
* GPUs ready to accept work (`nvmlSystemGetConfComputeGpusReadyState` == ACCEPTING_TRUE);
* at least one GPU, and each report / chain non-empty.
The evidence itself is NVML's attestation report byte for byte (SPDM request ‖ response); the
certificate chain is converted to DER, leaf first, ending in NVIDIA's pinned device root.

Not pure (talks to the driver); NVML errors are wrapped once here: `ConfigError` when NVML is
unusable, `VerificationError` when the GPUs are not in the required CC state.
"""

from __future__ import annotations

import base64
import contextlib
import importlib
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.serialization import Encoding

from attestation.gpu.anchors import load_root
from attestation.gpu.spdm import NONCE_SIZE
from attestation.x509chain import parse_der_chain, parse_pem_chain
from hushcc.errors import ConfigError, ProtocolError, VerificationError

MAX_GPUS = 16


@dataclass(frozen=True, slots=True)
class GpuEvidenceEntry:
    """One bundle GPU entry: `{"type", "evidence": b64, "certs": [b64 DER...]}` (DESIGN.md)."""

    evidence: bytes
    certs: tuple[bytes, ...]
    type: str = "nvidia-h100"

    def to_json(self) -> dict[str, object]:
        """The bundle's JSON form."""
        return {
            "type": self.type,
            "evidence": base64.b64encode(self.evidence).decode(),
            "certs": [base64.b64encode(c).decode() for c in self.certs],
        }


def _nvml_module(nvml: Any) -> Any:  # noqa: ANN401 - pynvml is untyped
    if nvml is not None:
        return nvml
    try:
        return importlib.import_module("pynvml")
    except ImportError as exc:
        raise ConfigError("NVML (nvidia-ml-py) is not installed") from exc


def collect_gpu_evidence(
    nonce: bytes,
    *,
    nvml: Any = None,  # noqa: ANN401 - a pynvml-like module
    allow_sim_environment: bool = False,
) -> list[GpuEvidenceEntry]:
    """Collect attestation evidence from every GPU for `nonce`.

    Args:
        nonce: The 32-byte GPU nonce (DESIGN.md: bound to the key config and not_after).
        nvml: A pynvml-like module (tests); `pynvml` when omitted.
        allow_sim_environment: Accept NVML's CC *simulation* environment (never in production).

    Returns:
        One entry per GPU, in device index order.

    Raises:
        ProtocolError: The nonce is not 32 bytes.
        ConfigError: NVML cannot be loaded or fails.
        VerificationError: CC is off, dev tools are on, the GPUs are not ready, or no GPU.
    """
    if len(nonce) != NONCE_SIZE:
        raise ProtocolError("gpu nonce must be 32 bytes")
    api = _nvml_module(nvml)
    try:
        api.nvmlInit()
    except api.NVMLError as exc:
        raise ConfigError("NVML could not be initialised") from exc
    try:
        _require_cc_ready(api, allow_sim_environment=allow_sim_environment)
        count = int(api.nvmlDeviceGetCount())
        if not 0 < count <= MAX_GPUS:
            raise VerificationError("no GPU to attest")
        return [_collect_one(api, api.nvmlDeviceGetHandleByIndex(i), nonce) for i in range(count)]
    except api.NVMLError as exc:
        raise ConfigError(f"NVML call failed (code {getattr(exc, 'value', '?')})") from exc
    finally:
        # shutting down after a failure must not mask the first error
        with contextlib.suppress(api.NVMLError):
            api.nvmlShutdown()


def _require_cc_ready(api: Any, *, allow_sim_environment: bool) -> None:  # noqa: ANN401
    state = api.nvmlSystemGetConfComputeState()
    if state.ccFeature != api.NVML_CC_SYSTEM_FEATURE_ENABLED:
        raise VerificationError("GPU confidential-computing mode is off")
    if state.devToolsMode != api.NVML_CC_SYSTEM_DEVTOOLS_MODE_OFF:
        raise VerificationError("GPU CC dev-tools mode is on")
    allowed_env = {api.NVML_CC_SYSTEM_ENVIRONMENT_PROD}
    if allow_sim_environment:
        allowed_env.add(api.NVML_CC_SYSTEM_ENVIRONMENT_SIM)
    if state.environment not in allowed_env:
        raise VerificationError("GPU CC environment is not production")
    if api.nvmlSystemGetConfComputeGpusReadyState() != api.NVML_CC_ACCEPTING_CLIENT_REQUESTS_TRUE:
        raise VerificationError("GPUs are not in the CC ready state")


def _collect_one(api: Any, handle: Any, nonce: bytes) -> GpuEvidenceEntry:  # noqa: ANN401
    report = api.nvmlDeviceGetConfComputeGpuAttestationReport(handle, nonce)
    size = int(report.attestationReportSize)
    evidence = bytes(report.attestationReport[:size])
    if not evidence or len(evidence) != size:
        raise VerificationError("GPU returned an empty attestation report")
    cert = api.nvmlDeviceGetConfComputeGpuCertificate(handle)
    chain_size = int(cert.attestationCertChainSize)
    raw_chain = bytes(cert.attestationCertChain[:chain_size])
    return GpuEvidenceEntry(evidence=evidence, certs=tuple(chain_to_der(raw_chain)))


def chain_to_der(raw: bytes) -> list[bytes]:
    """Convert NVML's chain (PEM or concatenated DER, leaf first) to DER ending in the root.

    NVIDIA's device root is appended when the chain stops just below it.

    Raises:
        ProtocolError: The chain does not parse.
    """
    if raw.lstrip().startswith(b"-----BEGIN"):
        certs = parse_pem_chain(raw)
    else:
        certs = parse_der_chain(_split_der(raw))
    root = load_root("device_identity_root.pem")
    if certs[-1] != root and certs[-1].issuer == root.subject:
        certs.append(root)
    return [c.public_bytes(Encoding.DER) for c in certs]


def _split_der(raw: bytes) -> list[bytes]:
    """Split concatenated DER certificates by their outer SEQUENCE lengths."""
    out: list[bytes] = []
    pos = 0
    while pos < len(raw):
        if raw[pos] != 0x30 or pos + 2 > len(raw):
            raise ProtocolError("GPU certificate chain is not DER")
        first = raw[pos + 1]
        if first < 0x80:
            header, length = 2, first
        else:
            n = first & 0x7F
            if not 0 < n <= 3 or pos + 2 + n > len(raw):
                raise ProtocolError("GPU certificate chain has a bad DER length")
            header, length = 2 + n, int.from_bytes(raw[pos + 2 : pos + 2 + n], "big")
        end = pos + header + length
        if end > len(raw):
            raise ProtocolError("GPU certificate chain is truncated")
        out.append(raw[pos:end])
        pos = end
    return out
