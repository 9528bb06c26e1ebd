"""Attestation evidence (SEV-SNP, TDX, NVIDIA H100, simulated TEE): collection and verification."""
