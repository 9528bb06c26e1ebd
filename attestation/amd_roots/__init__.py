"""AMD's public SEV-SNP trust anchors as package data (ARK per product, Milan's VCEK ASK).

Sources: ARK-Milan and SEV-Milan from AMD KDS `vcek/v1/Milan/cert_chain` (as vendored by
google/go-sev-guest `verify/trust/ask_ark_milan.pem`); ARK-Genoa and ARK-Turin from AMD KDS
(the ARK half of go-sev-guest `verify/trust/ask_ark_{genoa,turin}_vlek.pem`). `attestation.amd`
checks their SHA-256 fingerprints when it loads them.
"""
