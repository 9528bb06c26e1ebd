"""A simulated node for the demo and tests: its release entry and its attestation bundle.

Used by `hushcc attest simulate`, the demo and tests. The CPU evidence is a real-format SEV-SNP
report from `SimulatedTee` whose MEASUREMENT is the node's self-measurement; the GPU evidence
comes from `attestation.gpu.simulated.SimulatedGpu`. The verifier accepts such a bundle only with
`allow_simulated`.

Not pure: key generation draws OS randomness (time is still a parameter).
"""

from __future__ import annotations

import hashlib
from datetime import timedelta
from typing import TYPE_CHECKING

from attestation.bundle import Binding, Bundle, Evidence, Release, build_bundle
from attestation.simulated import SimulatedTee
from attestation.verify_bundle import MEASUREMENT_KEYS
from transparency_log.entry import ReleaseEntry

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from datetime import datetime

    from attestation.gpu.simulated import SimulatedGpu


def release_entry(measurement: bytes, *, image_digest: str = "sha256:" + "0" * 64) -> bytes:
    """A canonical `hushcc.release/v1` entry listing the simulated measurement.

    Args:
        measurement: The 48-byte self-measurement.
        image_digest: The image digest to name.

    Returns:
        Canonical JSON bytes (sorted keys, no whitespace).
    """
    entry = {"schema": "hushcc.release/v1", "image": {"digest": image_digest},
             "measurements": {MEASUREMENT_KEYS["simulated"]: measurement.hex()},
             "model": {}, "source": {}}
    return ReleaseEntry.from_value(entry).to_bytes()


def _gpu_collector(gpus: Sequence[SimulatedGpu]) -> Callable[[bytes], list[Evidence]]:
    def collect(nonce: bytes) -> list[Evidence]:
        out = []
        for gpu in gpus:
            evidence, certs = gpu.attest(nonce)
            out.append(Evidence("simulated", evidence, tuple(certs)))
        return out
    return collect


def simulated_bundle(  # noqa: PLR0913 - the parts of a development bundle, all named
    *, key_config: bytes, measurement: bytes, now: datetime, tee: SimulatedTee | None = None,
    gpus: Sequence[SimulatedGpu] = (), release: Release | None = None,
    lifetime: timedelta = timedelta(hours=12), nonce: bytes | None = None,
    node_id: bytes | None = None,
) -> Bundle:
    """Build a bundle from the simulated TEE (and simulated GPUs).

    Args:
        key_config: The node's OHTTP key config.
        measurement: The node's 48-byte self-measurement (`measure_paths(...).digest`).
        now: Issue time; the bundle is valid from `now` for `lifetime`.
        tee: The simulated CPU TEE (generated when None).
        gpus: Simulated GPUs, one evidence entry each.
        release: The stapled log proof; when None, an unlogged entry for `measurement`
            (index 0, empty checkpoint and proof: step (5) fails until it is logged).
        lifetime: Validity period.
        nonce: Optional 32-byte per-request nonce.
        node_id: SHA-256 of the node's identity public key (32 bytes); defaults to the
            SHA-256 of the simulated VCEK.

    Returns:
        The bundle.
    """
    platform = tee or SimulatedTee.generate(now=now)
    certs = platform.certs()

    def cpu(report_data: bytes) -> Evidence:
        return Evidence("simulated", platform.report(report_data, measurement), certs)

    binding = Binding(key_config, node_id or hashlib.sha256(certs[0]).digest(), now,
                      now + lifetime, nonce)
    return build_bundle(binding, cpu=cpu, gpus=_gpu_collector(gpus),
                        release=release or Release(release_entry(measurement), 0, "", ()))
