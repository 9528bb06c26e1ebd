"""hushcc: an open Private Cloud Compute for LLM inference.

This package holds what every component shares: the error hierarchy (`hushcc.errors`) and the
one command-line entry point (`hushcc.cli`). The components themselves are the sibling import
packages named in DESIGN.md (`ohttp`, `attestation`, `transparency_log`, `image`, `node`,
`relay`, `client`).
"""

from __future__ import annotations

__version__ = "0.1.0"
