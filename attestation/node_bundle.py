"""Node side: collect a real attestation bundle (configfs-tsm CPU evidence, NVML GPU evidence).

The same `build_bundle` as the simulated node, with the hardware collectors plugged in: the GPUs
attest the GPU nonce through NVML (`attestation.gpu.nvml`), then the CPU attests the binding
through configfs-tsm (`attestation.configfs_tsm`). Not pure: it talks to the kernel and the GPU
driver; time is still a parameter.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from attestation.bundle import Binding, Bundle, Evidence, Release, build_bundle
from attestation.configfs_tsm import DEFAULT_ROOT, TsmFileSystem, collect_cpu_evidence
from attestation.gpu.nvml import collect_gpu_evidence

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from datetime import datetime
    from pathlib import Path


def nvml_gpus(nvml: Any = None) -> Callable[[bytes], list[Evidence]]:  # noqa: ANN401 - pynvml
    """A GPU collector over NVML: one `nvidia-h100` evidence entry per GPU.

    Args:
        nvml: A pynvml-like module (tests); `pynvml` when None.

    Returns:
        A function from the 32-byte GPU nonce to the GPUs' evidence.
    """
    def collect(nonce: bytes) -> list[Evidence]:
        return [Evidence(e.type, e.evidence, e.certs)
                for e in collect_gpu_evidence(nonce, nvml=nvml)]
    return collect


def collect_bundle(  # noqa: PLR0913 - the parts of a bundle, all named
    *, node_id: bytes, key_config: bytes, not_before: datetime, not_after: datetime,
    release: Release, nonce: bytes | None = None,
    gpus: Callable[[bytes], Sequence[Evidence]] | None = None, tsm_root: Path = DEFAULT_ROOT,
    tsm_fs: TsmFileSystem | None = None,
) -> Bundle:
    """Collect this node's bundle from the hardware.

    Args:
        node_id: SHA-256 of the node's long-term identity public key (32 bytes).
        key_config: The current OHTTP key config.
        not_before: Start of validity.
        not_after: End of validity (keys rotate before it).
        release: The stapled log proof of this node's release.
        nonce: A client's per-request nonce, or None for the directory bundle.
        gpus: GPU collector (default: NVML, every GPU).
        tsm_root: configfs-tsm report directory.
        tsm_fs: configfs file operations (tests).

    Returns:
        The bundle.

    Raises:
        CollectionError: configfs-tsm is absent or busy.
        ConfigError: NVML cannot be used.
        VerificationError: The GPUs are not in CC mode / ready.
        ProtocolError: The hardware returned malformed evidence.
    """
    def cpu(report_data: bytes) -> Evidence:
        return collect_cpu_evidence(report_data, root=tsm_root, fs=tsm_fs)

    binding = Binding(key_config, node_id, not_before, not_after, nonce)
    return build_bundle(binding, cpu=cpu, gpus=gpus or nvml_gpus(), release=release)
