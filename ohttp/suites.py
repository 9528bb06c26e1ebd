"""Algorithm identifiers and the one seam to the crypto libraries (pyhpke, pyca/cryptography).

Pure. Invariants:
* Only the algorithms below are supported; any other identifier is a `ProtocolError` naming the
  kind of identifier, never a crash or a foreign exception.
* Every failure inside a primitive (bad tag, short input, low-order point, which pyca reports as a
  `ValueError`) leaves this module as the one opaque `DecryptError`; foreign exceptions are
  wrapped here, once, so callers never see them.
"""

from __future__ import annotations

import functools
import hmac
from dataclasses import dataclass
from enum import IntEnum
from typing import TYPE_CHECKING

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
from pyhpke import AEADId, CipherSuite, KDFId, KEMId, KEMKey

from hushcc.errors import DecryptError, ProtocolError

if TYPE_CHECKING:
    from pyhpke import KEMKeyInterface


class UnsupportedAlgorithmError(ProtocolError):
    """An algorithm identifier this implementation does not support (names the kind only)."""


class KemId(IntEnum):
    """HPKE KEM identifiers supported for OHTTP key configurations (RFC 9180 §7.1)."""

    DHKEM_X25519_HKDF_SHA256 = 0x0020


class KdfId(IntEnum):
    """HPKE KDF identifiers (RFC 9180 §7.2)."""

    HKDF_SHA256 = 0x0001
    HKDF_SHA384 = 0x0002
    HKDF_SHA512 = 0x0003


class AeadId(IntEnum):
    """HPKE AEAD identifiers (RFC 9180 §7.3); export-only is useless for OHTTP and not accepted."""

    AES_128_GCM = 0x0001
    AES_256_GCM = 0x0002
    CHACHA20_POLY1305 = 0x0003


# Nsk/Nenc/Npk for each KEM; Nk/Nn/Nt for each AEAD; the hash of each KDF.
_KEM_SIZES = {KemId.DHKEM_X25519_HKDF_SHA256: 32}
_AEAD_SIZES = {
    AeadId.AES_128_GCM: (16, 12, 16),
    AeadId.AES_256_GCM: (32, 12, 16),
    AeadId.CHACHA20_POLY1305: (32, 12, 16),
}
# hashlib name and HashLen of each KDF's hash.
_KDF_HASHES: dict[KdfId, tuple[str, int]] = {
    KdfId.HKDF_SHA256: ("sha256", 32),
    KdfId.HKDF_SHA384: ("sha384", 48),
    KdfId.HKDF_SHA512: ("sha512", 64),
}


def kem_id_from_int(value: int) -> KemId:
    """Return the `KemId` for `value`, or raise `UnsupportedAlgorithmError`."""
    try:
        return KemId(value)
    except ValueError:
        raise UnsupportedAlgorithmError("unsupported KEM identifier") from None


def kdf_id_from_int(value: int) -> KdfId:
    """Return the `KdfId` for `value`, or raise `UnsupportedAlgorithmError`."""
    try:
        return KdfId(value)
    except ValueError:
        raise UnsupportedAlgorithmError("unsupported KDF identifier") from None


def aead_id_from_int(value: int) -> AeadId:
    """Return the `AeadId` for `value`, or raise `UnsupportedAlgorithmError`."""
    try:
        return AeadId(value)
    except ValueError:
        raise UnsupportedAlgorithmError("unsupported AEAD identifier") from None


def kem_public_key_length(kem_id: KemId) -> int:
    """Npk (== Nenc for the DHKEMs) of `kem_id`."""
    return _KEM_SIZES[kem_id]


@dataclass(frozen=True, slots=True)
class SymmetricSuite:
    """One (KDF, AEAD) pair a key configuration offers (RFC 9458 §3)."""

    kdf_id: KdfId
    aead_id: AeadId

    @property
    def key_length(self) -> int:
        """Nk of the AEAD."""
        return _AEAD_SIZES[self.aead_id][0]

    @property
    def nonce_length(self) -> int:
        """Nn of the AEAD."""
        return _AEAD_SIZES[self.aead_id][1]

    @property
    def tag_length(self) -> int:
        """Nt of the AEAD."""
        return _AEAD_SIZES[self.aead_id][2]


@functools.cache
def _cipher_suite(kem_id: KemId, kdf_id: KdfId, aead_id: AeadId) -> CipherSuite:
    # pyhpke suites hold only algorithm parameters (no keys, no state): safe to share.
    return CipherSuite.new(KEMId(kem_id), KDFId(kdf_id), AEADId(aead_id))


def hpke_suite(kem_id: KemId, suite: SymmetricSuite) -> CipherSuite:
    """The pyhpke cipher suite for a KEM and a symmetric suite."""
    return _cipher_suite(kem_id, suite.kdf_id, suite.aead_id)


def x25519_private_key(raw: bytes) -> X25519PrivateKey:
    """Load a raw 32-byte X25519 private key.

    Raises:
        ProtocolError: `raw` is not 32 bytes.
    """
    if len(raw) != 32:
        raise ProtocolError("an X25519 private key is 32 bytes")
    return X25519PrivateKey.from_private_bytes(raw)


def hpke_key(key: X25519PrivateKey | X25519PublicKey) -> KEMKeyInterface:
    """Wrap a pyca key for pyhpke."""
    return KEMKey.from_pyca_cryptography_key(key)


def hpke_public_key(kem_id: KemId, raw: bytes) -> KEMKeyInterface:
    """Deserialize a KEM public key for pyhpke.

    Raises:
        ProtocolError: the key does not have the KEM's length or does not load.
    """
    if len(raw) != kem_public_key_length(kem_id):
        raise ProtocolError("public key has the wrong length for its KEM")
    try:
        return _cipher_suite(
            kem_id, KdfId.HKDF_SHA256, AeadId.AES_128_GCM
        ).kem.deserialize_public_key(raw)
    except Exception as exc:
        raise ProtocolError("public key does not load") from exc


# A fixed, public probe scalar. X25519 clamps every scalar to a multiple of 8, so the probe's
# product with a point is zero exactly when the point's order divides 8 (on the curve or its
# twist, whatever its encoding): the low-order points of RFC 7748 §6.1 and Wycheproof.
_LOW_ORDER_PROBE = X25519PrivateKey.from_private_bytes(bytes(range(1, 33)))


def check_kem_public_key(kem_id: KemId, raw: bytes) -> None:
    """Refuse a public key an OHTTP client must not encapsulate to.

    Raises:
        ProtocolError: wrong length, does not load, or a low-order X25519 point (0, 1, p - 1 and
            the rest of the Wycheproof low-order set, in any encoding): DH with it gives the
            all-zero secret RFC 9180 §7.1.4 forbids.
    """
    hpke_public_key(kem_id, raw)
    try:
        _LOW_ORDER_PROBE.exchange(X25519PublicKey.from_public_bytes(raw))
    except ValueError:  # pyca: "Error computing shared key" (all-zero output)
        raise ProtocolError("public key is a low-order point") from None


def _aead(aead_id: AeadId, key: bytes) -> AESGCM | ChaCha20Poly1305:
    if aead_id is AeadId.CHACHA20_POLY1305:
        return ChaCha20Poly1305(key)
    return AESGCM(key)


def aead_seal(aead_id: AeadId, key: bytes, nonce: bytes, aad: bytes, plaintext: bytes) -> bytes:
    """AEAD Seal (RFC 9180 §5.2 semantics: ciphertext || tag).

    Raises:
        ProtocolError: the key or nonce has the wrong length for the AEAD.
    """
    nk, nn, _ = _AEAD_SIZES[aead_id]
    if len(key) != nk or len(nonce) != nn:
        raise ProtocolError("AEAD key or nonce has the wrong length")
    return _aead(aead_id, key).encrypt(nonce, plaintext, aad)


def aead_open(aead_id: AeadId, key: bytes, nonce: bytes, aad: bytes, ciphertext: bytes) -> bytes:
    """AEAD Open; every failure (bad tag, short input, bad lengths) is the opaque `DecryptError`.

    Raises:
        DecryptError: the ciphertext does not open.
    """
    nk, nn, nt = _AEAD_SIZES[aead_id]
    if len(key) != nk or len(nonce) != nn or len(ciphertext) < nt:
        raise DecryptError
    try:
        return _aead(aead_id, key).decrypt(nonce, ciphertext, aad)
    except Exception as exc:
        raise DecryptError from exc


def hkdf_extract(kdf_id: KdfId, salt: bytes, ikm: bytes) -> bytes:
    """HKDF-Extract (RFC 5869 §2.2); an empty salt means HashLen zero bytes."""
    name, hash_len = _KDF_HASHES[kdf_id]
    return hmac.digest(salt or bytes(hash_len), ikm, name)


def hkdf_expand(kdf_id: KdfId, prk: bytes, info: bytes, length: int) -> bytes:
    """HKDF-Expand (RFC 5869 §2.3).

    Raises:
        DecryptError: `length` exceeds 255 * HashLen (no key can be derived).
    """
    name, hash_len = _KDF_HASHES[kdf_id]
    if length <= 0 or length > 255 * hash_len:
        raise DecryptError
    okm, block = bytearray(), b""
    for counter in range(1, -(-length // hash_len) + 1):
        block = hmac.digest(prk, block + info + bytes([counter]), name)
        okm += block
    return bytes(okm[:length])
