"""The SDK's bundle verifier: attestation's fail-closed `verify_bundle`, set up from a policy.

The policy (attestation's TOML format) says which TEEs are accepted, the TCB floor, the
maximum ages, the pinned log key and witnesses. The simulated TEE's trust anchors and the
simulated GPU's reference values are used only when the policy allows simulated TEEs; real
nodes are checked against AMD's pinned roots and the GPU reference values given here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from attestation.amd import AMD_TRUST
from attestation.gpu import GpuPolicy
from attestation.verify_bundle import StapledLogVerifier, verify_bundle
from hushcc.errors import ConfigError, ProtocolError
from transparency_log.cosignature import witness_policy

if TYPE_CHECKING:
    from datetime import datetime

    from attestation.policy import Policy
    from attestation.verify_bundle import VerifiedBundle
    from transparency_log.cosignature import WitnessPolicy


@dataclass(frozen=True, slots=True)
class PolicyVerifier:
    """A `client.verification.BundleVerifier` for one policy and one pinned log key."""

    policy: Policy
    log_key: str
    gpu_policy: GpuPolicy | None = None

    @classmethod
    def from_policy(cls, policy: Policy, log_key: str, *,
                    gpu_policy: GpuPolicy | None = None) -> PolicyVerifier:
        """Set up; simulated GPU references only when the policy allows simulated TEEs."""
        if gpu_policy is None and policy.allow_simulated:
            from attestation.gpu.simulated import SimulatedGpu  # noqa: PLC0415

            gpu_policy = GpuPolicy(reference_measurements=SimulatedGpu().reference_measurements())
        return cls(policy, log_key, gpu_policy)

    def _witnesses(self) -> WitnessPolicy | None:
        if not self.policy.log_witnesses:
            return None
        try:
            return witness_policy(self.policy.log_witnesses, self.policy.log_witness_threshold)
        except ProtocolError as exc:
            raise ConfigError(f"policy log_witnesses: {exc}") from exc

    def __call__(self, bundle: bytes, *, now: datetime) -> VerifiedBundle:
        """Verify one bundle (raises `AttestationError` with the report)."""
        if self.policy.allow_simulated:
            from attestation.simulated import WITH_SIMULATED  # noqa: PLC0415

            trust = WITH_SIMULATED
        else:
            trust = AMD_TRUST
        log = StapledLogVerifier(self.log_key, now, witness_policy=self._witnesses())
        return verify_bundle(bundle, policy=self.policy, now=now, log=log,
                             gpu_policy=self.gpu_policy, cpu_trust=trust)
