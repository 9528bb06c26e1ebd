"""GPU trust anchors and identifiers shared by the verifier and the simulated GPU.

A neutral module: `attestation.gpu.verify` and `attestation.gpu.simulated` both read these, so the
simulator does not import the verifier (nor the verifier the simulator).

Invariants: constants and a package-data loader only; no policy decisions here.
"""

from __future__ import annotations

from importlib import resources

from cryptography import x509

DICE_TCB_INFO = x509.ObjectIdentifier("2.23.133.5.4.1")  # TCG DICE TcbInfo (carries the FWID)
SIMULATED_ROOT_CN = "hushcc SIMULATED GPU Device Identity CA (not NVIDIA)"


def load_root(name: str) -> x509.Certificate:
    """Load a pinned NVIDIA root from package data (`device_identity_root.pem`, `rim_root.pem`).

    Args:
        name: File name inside `attestation/nvidia_roots/`.

    Returns:
        The certificate.
    """
    data = resources.files("attestation.nvidia_roots").joinpath(name).read_bytes()
    return x509.load_pem_x509_certificate(data)
