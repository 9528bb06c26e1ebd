"""AMD SEV-SNP trust anchors: the pinned ARK of each product (and Milan's ASK), as package data.

Invariants:
* The root certificates are read from `attestation/amd_roots/` and must match the SHA-256
  fingerprints written here; a mismatch is a broken install (`ConfigError`), never a fallback.
* Only AMD's roots are in `amd_trust()`; the simulated TEE's root is a separate `SnpTrust`
  (attestation.simulated) that a verifier uses only when told `allow_simulated`.
* A bundle verifier is handed its CPU trust anchors as a `CpuTrust` map (CPU evidence type →
  anchors for that evidence's chain): `AMD_TRUST` by default; the simulator's side adds its own
  entry (`attestation.simulated.WITH_SIMULATED`), so the verifier never imports the simulator.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from types import MappingProxyType
from typing import TypeAlias

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from hushcc.errors import ConfigError

# SHA-256 of the DER of each pinned certificate (checked on load).
PINNED_FINGERPRINTS: Mapping[str, str] = MappingProxyType({
    "ark_milan": "69d063b45344d26a2e94e1f4210de49ef555308287d4c174445c95639a540bcd",
    "ark_genoa": "4c6598d19c18719c5dfd4a7d335f674e5bfe1d8f800cea2cf270c10d103db2f1",
    "ark_turin": "1f084161a44bb6d93778a904877d4819cafa5d05ef4193b2ded9dd9c73dd3f6a",
    "ask_milan": "67d303bd3905fd38db8b20e0793699870e7fa612eaad5dec358293fd8c0bac1b",
})

PRODUCTS = ("Milan", "Genoa", "Turin")


@dataclass(frozen=True, slots=True)
class SnpTrust:
    """Trust anchors for SNP chains: a root (ARK) per product, optionally a pinned ASK.

    `name` appears in reports (`AMD` or `simulated`). `simulated` marks the development roots.
    """

    name: str
    arks: Mapping[str, x509.Certificate]
    asks: Mapping[str, x509.Certificate] = field(default_factory=lambda: MappingProxyType({}))
    simulated: bool = False


def _load(name: str) -> x509.Certificate:
    data = resources.files("attestation.amd_roots").joinpath(f"{name}.pem").read_bytes()
    cert = x509.load_pem_x509_certificate(data)
    if cert.fingerprint(hashes.SHA256()).hex() != PINNED_FINGERPRINTS[name]:
        raise ConfigError(f"pinned AMD certificate {name} does not match its fingerprint")
    return cert


@functools.cache
def amd_trust() -> SnpTrust:
    """AMD's pinned roots for Milan, Genoa and Turin (and the Milan VCEK ASK).

    Returns:
        The trust anchors.

    Raises:
        ConfigError: A packaged root is missing or altered.
    """
    arks = {p: _load(f"ark_{p.lower()}") for p in PRODUCTS}
    return SnpTrust("AMD", MappingProxyType(arks), MappingProxyType({"Milan": _load("ask_milan")}))


def pinned_amd_trust(certs: Sequence[bytes]) -> SnpTrust:
    """AMD's pinned roots whatever chain a bundle carries (`CpuTrust` entry for `sev-snp`)."""
    del certs
    return amd_trust()


# CPU evidence type -> the trust anchors for that evidence's certificates (DER, bundle order).
CpuTrust: TypeAlias = Mapping[str, Callable[[Sequence[bytes]], SnpTrust]]
AMD_TRUST: CpuTrust = MappingProxyType({"sev-snp": pinned_amd_trust})
