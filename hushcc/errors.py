"""The few typed errors every hushcc component raises (STYLE.md §3).

Invariants:
* Messages never contain plaintext, prompts, outputs, keys or token values: they name what
  failed, never the data it failed on.
* `DecryptError` is opaque: every open/decapsulation failure raises it with the same message,
  so a peer cannot tell a bad tag from a wrong key or a short input.
* Foreign exceptions are wrapped once, at the seam, with `raise ... from exc`.
"""

from __future__ import annotations


class HushError(Exception):
    """Base class of every error hushcc raises on purpose."""


class ProtocolError(HushError):
    """A peer sent malformed input (framing, lengths, unknown identifiers)."""

    status_hint: int = 400


class DecryptError(HushError):
    """Any failure to open or decapsulate a message; always the same opaque message."""

    MESSAGE = "decryption failed"

    def __init__(self) -> None:
        """Create the one opaque decryption error (no argument can leak detail)."""
        super().__init__(self.MESSAGE)


class VerificationError(HushError):
    """Attestation, transparency-log proofs or tokens did not verify: fail closed."""


class ConfigError(HushError):
    """A configuration value, key file or policy is missing or invalid."""
