"""NVIDIA's public trust anchors, pinned as package data (no code).

* `device_identity_root.pem`: "NVIDIA Device Identity CA", the self-signed root of every H100
  device (attestation-key) certificate chain.
* `rim_root.pem`: "NVIDIA CoRIM signing Root CA", the root of the chains that sign driver and
  VBIOS Reference Integrity Manifests.

Both are byte-identical to NVIDIA/nvtrust `local_gpu_verifier/src/verifier/certs/verifier_*.pem`.
"""
