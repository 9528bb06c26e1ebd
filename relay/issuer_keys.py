"""Issuer key files: `hushcc issuer keygen` writes them, the issuer and the relay read them.

Not pure (files). Two files per key:
* `FILE`: the private key, PEM PKCS#8, created 0600 with O_EXCL (never replacing a key); the
  reader refuses a file readable by group or others.
* `FILE.pub`: the public record clients and relays pin (T4), JSON
  `{"token-type": 2, "token-key": BASE64URL(SPKI), "not-before": T0, "not-after": T1}`.
  `token-type`, `token-key` and `not-before` are the RFC 9578 §4 directory fields; `not-after`
  (hushcc's) ends the key's epoch: relays stop accepting its tokens then, so their spent-token
  sets expire with it and stay bounded (T5).
Errors are `ConfigError` naming the file, never its content.
"""

from __future__ import annotations

import json
import stat
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from hushcc.errors import ConfigError, ProtocolError
from hushcc.files import create_exclusive, read_bytes, read_text
from relay.authscheme import b64url_decode, b64url_encode
from relay.privacypass import MODULUS_BITS, TOKEN_TYPE_BLIND_RSA, IssuerPublicKey

if TYPE_CHECKING:
    from pathlib import Path


@dataclass(frozen=True, slots=True)
class PinnedKey:
    """An issuer public key with its epoch [not_before, not_after) in UNIX seconds."""

    key: IssuerPublicKey
    not_before: int
    not_after: int

    def to_bytes(self) -> bytes:
        """The `.pub` record."""
        return json.dumps({"token-type": TOKEN_TYPE_BLIND_RSA,
                           "token-key": b64url_encode(self.key.spki),
                           "not-before": self.not_before, "not-after": self.not_after},
                          indent=1).encode() + b"\n"

    @classmethod
    def from_bytes(cls, data: bytes) -> PinnedKey:
        """Parse a `.pub` record.

        Raises:
            ProtocolError: not such a record.
        """
        try:
            value = json.loads(data)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ProtocolError("issuer public key record is not JSON") from exc
        if not isinstance(value, dict) or value.get("token-type") != TOKEN_TYPE_BLIND_RSA:
            raise ProtocolError("issuer public key record is not for token type 2")
        encoded, start, end = value.get("token-key"), value.get("not-before"), value.get(
            "not-after")
        if not isinstance(encoded, str) or type(start) is not int or type(end) is not int:
            raise ProtocolError("issuer public key record lacks token-key/not-before/not-after")
        if not 0 <= start < end:
            raise ProtocolError("issuer key epoch is empty")
        return cls(IssuerPublicKey.from_spki(b64url_decode(encoded)), start, end)


def generate(out: Path, *, now: int, lifetime: int) -> tuple[Path, PinnedKey]:
    """Create a fresh 2048-bit issuer key at `out` and its record at `out.pub`.

    Raises:
        ConfigError: either file exists already.
    """
    pub_path = out.with_name(out.name + ".pub")
    if pub_path.exists():
        raise ConfigError(f"refusing to overwrite existing file: {pub_path}")
    private = rsa.generate_private_key(65537, MODULUS_BITS)
    pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    pinned = PinnedKey(IssuerPublicKey.from_rsa(private.public_key()), now, now + lifetime)
    create_exclusive(out, pem)
    create_exclusive(pub_path, pinned.to_bytes(), mode=0o644)
    return pub_path, pinned


def read_private_key(path: Path) -> rsa.RSAPrivateKey:
    """Read the issuer's private key, refusing a file others may read.

    Raises:
        ConfigError: missing, too permissive, or not a 2048-bit RSA PEM key.
    """
    data = read_bytes(path, "issuer key")  # missing, a directory, empty: named as such
    if stat.S_IMODE(path.stat().st_mode) & 0o077:
        raise ConfigError(f"issuer key is readable by others (chmod 600): {path}")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"issuer key is not a PEM private key: {path}") from exc
    if not isinstance(key, rsa.RSAPrivateKey) or key.key_size != MODULUS_BITS:
        raise ConfigError(f"issuer key is not a 2048-bit RSA key: {path}")
    return key


def read_pinned_key(path: Path) -> PinnedKey:
    """Read a `.pub` record (what the relay and clients pin).

    Raises:
        ConfigError: missing or malformed.
    """
    try:
        return PinnedKey.from_bytes(read_text(path, "issuer public key").encode())
    except ProtocolError as exc:
        raise ConfigError(f"{exc}: {path}") from None
