"""Shared builders for the bundle tests: a simulated node (CPU TEE + GPU) and a fake log."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from attestation.bundle import Bundle
from attestation.gpu import GpuPolicy
from attestation.gpu.simulated import SimulatedGpu
from attestation.measure import manifest_digest
from attestation.policy import Policy
from attestation.simulated import SimulatedTee
from attestation.simulated_node import release_entry, simulated_bundle
from hushcc.errors import VerificationError

NOW = datetime(2026, 11, 23, 20, 0, 0, tzinfo=UTC)
KEY_CONFIG = bytes.fromhex("01002031") + bytes(range(32)) + bytes.fromhex("000400010001")
MEASUREMENT = manifest_digest([("node/app.py", hashlib.sha256(b"print(1)").digest())]).digest
SIM_POLICY = Policy(allow_simulated=True)


@dataclass
class FakeLog:
    """A log verifier double: accepts exactly the (entry, index) pairs it was given."""

    logged: set[tuple[bytes, int]] = field(default_factory=set)
    calls: int = 0

    def verify(self, entry: bytes, index: int, checkpoint: str, proof: Sequence[bytes], *,
               max_age: timedelta) -> None:
        self.calls += 1
        if (entry, index) not in self.logged:
            raise VerificationError("entry is not included in the checkpoint")


@dataclass
class Node:
    tee: SimulatedTee
    gpu: SimulatedGpu
    log: FakeLog
    gpu_policy: GpuPolicy

    def bundle(
        self, *, measurement: bytes = MEASUREMENT, gpus: list[SimulatedGpu] | None = None,
        key_config: bytes = KEY_CONFIG, nonce: bytes | None = None, now: datetime = NOW,
        **kw: Any,
    ) -> Bundle:
        return simulated_bundle(key_config=key_config, measurement=measurement, now=now,
                                tee=self.tee, gpus=[self.gpu] if gpus is None else gpus,
                                nonce=nonce, **kw)


def make_node() -> Node:
    gpu = SimulatedGpu()
    log = FakeLog({(release_entry(MEASUREMENT), 0)})
    return Node(SimulatedTee.generate(now=NOW), gpu, log,
                GpuPolicy(reference_measurements=gpu.reference_measurements()))


def edit(data: bytes, change: Callable[[Any], object]) -> bytes:
    doc = json.loads(data)
    change(doc)
    return json.dumps(doc).encode()
