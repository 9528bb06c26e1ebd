"""RSA blind signatures, RFC 9474 (RSABSSA-SHA384-PSS and -PSSZERO, Randomized and Deterministic).

Pure: bytes and pyca key objects in, bytes out; randomness is the `rng` parameter (pass
`os.urandom` or leave the default), never ambient. The four protocol steps, each as in the RFC:

* `prepare` (§4.1): PrepareIdentity or PrepareRandomize (32 random bytes prepended);
* `blind` (§4.2): EMSA-PSS-ENCODE with a fresh salt, then `z = m * r^e mod n`;
* `BlindSigner.blind_sign` (§4.3): RSASP1 with RSA blinding of the base, then the signer verifies
  its own result (`m == s^e mod n`) before releasing it, so a faulty CRT computation (the
  Boneh-DeMillo-Lipton fault that factors n) never leaves the signer (T1, §7.1);
* `finalize` (§4.4): `s = z * inv mod n`, then RSASSA-PSS-VERIFY; `verify` (§4.5).

Invariants:
* Salts, message prefixes and blinding factors come only from `rng`; no function takes them as
  arguments (T3, §7.3/§7.4). Tests replay the RFC's values through a recorded `rng`.
* Verification (`finalize`, `verify`) is pyca/cryptography's RSASSA-PSS verify with the variant's
  hash, MGF1 hash and exact salt length. pyca has no raw RSA (RSASP1/RSAVP1) or EMSA-PSS-ENCODE
  API, so those are Python integer arithmetic here (RFC 8017 §5.2, §9.1.1).
* Timing: Python integers are not constant time. The signer's exponentiation runs on a
  randomly blinded base (`m * b^e`), so its timing is independent of the client's value; the
  client's own blinding (`blind`, `finalize`) handles only values the client already knows.
  The private exponent's bit pattern can still influence timing of `pow`; operators wanting
  constant-time signing run the issuer on dedicated hardware (documented in DESIGN.md).
* Errors: malformed inputs raise `ProtocolError`; a signature that does not verify, or a
  signing fault, raises `VerificationError`. Messages never contain the values involved.
"""

from __future__ import annotations

import hashlib
import math
import secrets
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from hushcc.errors import ProtocolError, VerificationError

if TYPE_CHECKING:
    from collections.abc import Callable

HASH_LENGTH = 48  # SHA-384
PREFIX_LENGTH = 32  # §4.1 PrepareRandomize: random(32)


@dataclass(frozen=True, slots=True)
class Variant:
    """One RSABSSA variant of §5: hash SHA-384 and MGF1-SHA-384 always; salt and preparation."""

    name: str
    salt_length: int
    randomized: bool

    def pss(self) -> padding.PSS:
        """The RSASSA-PSS padding that verifies this variant's signatures."""
        return padding.PSS(mgf=padding.MGF1(hashes.SHA384()), salt_length=self.salt_length)


SHA384_PSS_RANDOMIZED = Variant("RSABSSA-SHA384-PSS-Randomized", HASH_LENGTH, randomized=True)
SHA384_PSSZERO_RANDOMIZED = Variant("RSABSSA-SHA384-PSSZERO-Randomized", 0, randomized=True)
SHA384_PSS_DETERMINISTIC = Variant("RSABSSA-SHA384-PSS-Deterministic", HASH_LENGTH,
                                   randomized=False)
SHA384_PSSZERO_DETERMINISTIC = Variant("RSABSSA-SHA384-PSSZERO-Deterministic", 0,
                                       randomized=False)
VARIANTS = (SHA384_PSS_RANDOMIZED, SHA384_PSSZERO_RANDOMIZED, SHA384_PSS_DETERMINISTIC,
            SHA384_PSSZERO_DETERMINISTIC)


@dataclass(frozen=True, slots=True)
class Blinding:
    """The client's secret from `blind`: the inverse of the blinding factor r (redacted repr)."""

    inv: int = field(repr=False)


def _modulus_length(key: rsa.RSAPublicKey) -> int:
    return (key.key_size + 7) // 8


def _i2osp(value: int, length: int) -> bytes:
    return value.to_bytes(length, "big")


def _mgf1_sha384(seed: bytes, length: int) -> bytes:
    """MGF1 with SHA-384 (RFC 8017 §B.2.1)."""
    out = bytearray()
    counter = 0
    while len(out) < length:
        out += hashlib.sha384(seed + counter.to_bytes(4, "big")).digest()
        counter += 1
    return bytes(out[:length])


def emsa_pss_encode(msg: bytes, em_bits: int, salt: bytes) -> bytes:
    """EMSA-PSS-ENCODE with SHA-384 and MGF1-SHA-384 (RFC 8017 §9.1.1).

    Raises:
        ProtocolError: the modulus is too small for the hash and salt ("encoding error").
    """
    em_len = (em_bits + 7) // 8
    m_hash = hashlib.sha384(msg).digest()  # (2)
    if em_len < HASH_LENGTH + len(salt) + 2:  # (3)
        raise ProtocolError("encoding error: modulus too short for the PSS parameters")
    h = hashlib.sha384(bytes(8) + m_hash + salt).digest()  # (5), (6)
    db = bytes(em_len - len(salt) - HASH_LENGTH - 2) + b"\x01" + salt  # (7), (8)
    masked = bytearray(a ^ b for a, b in zip(db, _mgf1_sha384(h, em_len - HASH_LENGTH - 1),
                                             strict=True))  # (9), (10)
    masked[0] &= 0xFF >> (8 * em_len - em_bits)  # (11)
    return bytes(masked) + h + b"\xbc"  # (12)


def prepare(msg: bytes, variant: Variant,
            rng: Callable[[int], bytes] = secrets.token_bytes) -> bytes:
    """§4.1: PrepareRandomize (`random(32) || msg`) or PrepareIdentity (`msg`)."""
    if not variant.randomized:
        return msg
    prefix = rng(PREFIX_LENGTH)
    if len(prefix) != PREFIX_LENGTH:
        raise ProtocolError("rng returned the wrong number of bytes")
    return prefix + msg


def _random_below(n: int, rng: Callable[[int], bytes]) -> int:
    """A uniform integer in [1, n) by rejection sampling on `rng` output of n's length."""
    length, bits = (n.bit_length() + 7) // 8, n.bit_length()
    for _ in range(128):
        r = int.from_bytes(rng(length), "big") & ((1 << bits) - 1)
        if 1 <= r < n:
            return r
    raise ProtocolError("rng did not produce a value in range")


def blind(public_key: rsa.RSAPublicKey, msg: bytes, variant: Variant,
          rng: Callable[[int], bytes] = secrets.token_bytes) -> tuple[bytes, Blinding]:
    """§4.2 Blind: encode `msg` (already prepared) and blind it with a fresh r.

    Args:
        public_key: the signer's public key.
        msg: the prepared message (`prepare`).
        variant: the RSABSSA variant (its salt length).
        rng: entropy for the salt (sLen bytes) and r (modulus-length bytes), in that order.

    Returns:
        blinded_msg (modulus length) and the secret `Blinding` that `finalize` needs.

    Raises:
        ProtocolError: encoding error, message not coprime with n, or no inverse of r.
    """
    n, e = public_key.public_numbers().n, public_key.public_numbers().e
    k = _modulus_length(public_key)
    salt = rng(variant.salt_length) if variant.salt_length else b""
    if len(salt) != variant.salt_length:
        raise ProtocolError("rng returned the wrong number of bytes")
    encoded = emsa_pss_encode(msg, n.bit_length() - 1, salt)  # (1), (2)
    m = int.from_bytes(encoded, "big")  # (3)
    if math.gcd(m, n) != 1:  # (4), (5)
        raise ProtocolError("invalid input: message not coprime with the modulus")
    r = _random_below(n, rng)  # (6)
    try:
        inv = pow(r, -1, n)  # (7), (8)
    except ValueError as exc:
        raise ProtocolError("blinding error: r has no inverse") from exc
    x = pow(r, e, n)  # (9) RSAVP1(pk, r)
    z = m * x % n  # (10)
    return _i2osp(z, k), Blinding(inv)  # (11), (12)


@dataclass(frozen=True, slots=True)
class _CrtKey:
    """The private key's CRT integers (RFC 8017 §3.2 form 2), read once from the pyca key."""

    n: int
    e: int
    p: int
    q: int
    dp: int
    dq: int
    qinv: int

    @classmethod
    def from_pyca(cls, key: rsa.RSAPrivateKey) -> _CrtKey:
        numbers = key.private_numbers()
        return cls(numbers.public_numbers.n, numbers.public_numbers.e, numbers.p, numbers.q,
                   numbers.dmp1, numbers.dmq1, numbers.iqmp)

    def rsasp1(self, c: int) -> int:
        """RSASP1 by the CRT (RFC 8017 §5.2.1 step 2.b)."""
        s1, s2 = pow(c, self.dp, self.p), pow(c, self.dq, self.q)
        h = self.qinv * (s1 - s2) % self.p
        return s2 + self.q * h


class BlindSigner:
    """The issuer side (§4.3). Holds the private key; its repr never shows it."""

    def __init__(self, private_key: rsa.RSAPrivateKey) -> None:
        """Sign with `private_key` (the pyca object stays the owner of the key)."""
        self.private_key = private_key
        self.public_key = private_key.public_key()
        self._crt = _CrtKey.from_pyca(private_key)

    def __repr__(self) -> str:
        """Show the modulus size only."""
        return f"BlindSigner(bits={self.public_key.key_size}, private=<redacted>)"

    def blind_sign(self, blinded_msg: bytes,
                   rng: Callable[[int], bytes] = secrets.token_bytes) -> bytes:
        """§4.3 BlindSign, with RSA blinding of the base and the fault check.

        Args:
            blinded_msg: the client's blinded message (modulus length).
            rng: entropy for the signer's blinding factor.

        Returns:
            blind_sig (modulus length).

        Raises:
            ProtocolError: wrong length, or the message representative is not below n.
            VerificationError: "signing failure": the result did not verify (a fault).
        """
        key = self._crt
        k = (key.n.bit_length() + 7) // 8
        if len(blinded_msg) != k:
            raise ProtocolError("unexpected input size")
        m = int.from_bytes(blinded_msg, "big")  # (1)
        if m >= key.n:
            raise ProtocolError("message representative out of range")
        b = _random_below(key.n, rng)  # RSA blinding: sign m * b^e, unblind with b^-1
        try:
            b_inv = pow(b, -1, key.n)
        except ValueError as exc:  # b shares a factor with n: only a broken rng gets here
            raise ProtocolError("blinding error") from exc
        s = key.rsasp1(m * pow(b, key.e, key.n) % key.n) * b_inv % key.n  # (2)
        if pow(s, key.e, key.n) != m:  # (3) m' = RSAVP1(pk, s); (4) m != m' -> fail
            raise VerificationError("signing failure")
        return _i2osp(s, k)  # (5)


def finalize(public_key: rsa.RSAPublicKey, msg: bytes, blind_sig: bytes, blinding: Blinding,
             variant: Variant) -> bytes:
    """§4.4 Finalize: unblind and verify.

    Returns:
        The RSASSA-PSS signature over `msg` (the prepared message).

    Raises:
        ProtocolError: `blind_sig` has the wrong length.
        VerificationError: the unblinded signature is invalid.
    """
    n = public_key.public_numbers().n
    k = _modulus_length(public_key)
    if len(blind_sig) != k:  # (1)
        raise ProtocolError("unexpected input size")
    z = int.from_bytes(blind_sig, "big")  # (2)
    sig = _i2osp(z * blinding.inv % n, k)  # (3), (4)
    verify(public_key, msg, sig, variant)  # (5), (6)
    return sig


def verify(public_key: rsa.RSAPublicKey, msg: bytes, sig: bytes, variant: Variant) -> None:
    """§4.5 Verify: RSASSA-PSS-VERIFY (RFC 8017 §8.1.2) with the variant's parameters.

    Raises:
        VerificationError: the signature is invalid (any reason).
    """
    if len(sig) != _modulus_length(public_key):
        raise VerificationError("invalid signature")
    try:
        public_key.verify(sig, msg, variant.pss(), hashes.SHA384())
    except InvalidSignature as exc:
        raise VerificationError("invalid signature") from exc
