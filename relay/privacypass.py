"""Privacy Pass token type 0x0002 (Blind RSA, 2048-bit): RFC 9578 §6 and the RFC 9577 structures.

Pure: frozen values with `from_bytes` / `to_bytes` that are exact inverses, and the three protocol
steps (client `begin_issuance` / `finalize_token`, issuer `issue`, origin `verify_token`).

Invariants:
* Type 0x0002 uses RSABSSA-SHA384-PSS-Deterministic over `token_input`, as RFC 9578 §6.1 says;
  the message's entropy is the client's 32-byte nonce, drawn inside `begin_issuance` from `rng`,
  never passed in (RFC 9474 §7.3, T3).
* An issuer key is usable only as what its SPKI says: id-RSASSA-PSS with SHA-384, MGF1-SHA-384
  and a 48-byte salt, 2048-bit modulus, re-encoded byte for byte (RFC 9578 §6.5). An SPKI for
  another algorithm, hash, salt or size is a `ProtocolError` (one key per variant and purpose, T2).
* `token_key_id` = SHA-256(SPKI); requests carry only its last byte.
* Parsers raise `ProtocolError` for any malformed input; `verify_token` raises
  `VerificationError` and never says which check failed.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import struct
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from hushcc.errors import ProtocolError, VerificationError
from relay import blindrsa

if TYPE_CHECKING:
    from collections.abc import Callable

TOKEN_TYPE_BLIND_RSA = 0x0002
NK = 256  # RFC 9578 §8.2.2: Nk = 256 for token type 0x0002
NID = 32
NONCE_LENGTH = 32
VARIANT = blindrsa.SHA384_PSS_DETERMINISTIC
MODULUS_BITS = 2048

# RFC 9578 §6.5: AlgorithmIdentifier { id-RSASSA-PSS, RSASSA-PSS-params { hashAlgorithm sha384,
# maskGenAlgorithm mgf1(sha384), saltLength 48 } }, DER, as in the RFC's example and vectors.
PSS_ALGORITHM_IDENTIFIER = bytes.fromhex(
    "303d06092a864886f70d01010a3030a00d300b0609608648016503040202a11a301806092a864886f70d01"
    "0108300b0609608648016503040202a203020130"
)


def _der_length(n: int) -> bytes:
    if n < 0x80:
        return bytes([n])
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(raw)]) + raw


def _der(tag: int, content: bytes) -> bytes:
    return bytes([tag]) + _der_length(len(content)) + content


@dataclass(frozen=True, slots=True)
class IssuerPublicKey:
    """A token type 0x0002 Issuer Public Key (pkI) and its identifiers."""

    rsa_key: rsa.RSAPublicKey = field(repr=False)
    spki: bytes = field(repr=False)

    @classmethod
    def from_rsa(cls, key: rsa.RSAPublicKey) -> IssuerPublicKey:
        """Wrap an RSA public key, encoding it as the PSS SPKI of RFC 9578 §6.5.

        Raises:
            ProtocolError: not a 2048-bit key.
        """
        if key.key_size != MODULUS_BITS:
            raise ProtocolError("token type 0x0002 needs a 2048-bit RSA key")
        pkcs1 = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.PKCS1)
        spki = _der(0x30, PSS_ALGORITHM_IDENTIFIER + _der(0x03, b"\x00" + pkcs1))
        return cls(key, spki)

    @classmethod
    def from_spki(cls, spki: bytes) -> IssuerPublicKey:
        """Parse the DER SPKI (the directory's `token-key`), accepting only its exact encoding.

        Raises:
            ProtocolError: another algorithm, PSS parameters, key size, or non-canonical DER.
        """
        if PSS_ALGORITHM_IDENTIFIER not in spki[:8 + len(PSS_ALGORITHM_IDENTIFIER)]:
            raise ProtocolError("token key is not an RSASSA-PSS SHA-384 key with salt 48")
        try:
            key = serialization.load_der_public_key(spki)
        except (ValueError, TypeError) as exc:
            raise ProtocolError("malformed token key") from exc
        if not isinstance(key, rsa.RSAPublicKey):
            raise ProtocolError("token key is not an RSA key")
        parsed = cls.from_rsa(key)
        if parsed.spki != spki:
            raise ProtocolError("token key is not in the canonical RFC 9578 encoding")
        return parsed

    @property
    def token_key_id(self) -> bytes:
        """SHA-256 of the SPKI (RFC 9578 §6.5)."""
        return hashlib.sha256(self.spki).digest()

    @property
    def truncated_token_key_id(self) -> int:
        """The least significant byte of `token_key_id` (§6.1)."""
        return self.token_key_id[-1]


def _take(data: bytes, offset: int, n: int) -> tuple[bytes, int]:
    if offset + n > len(data):
        raise ProtocolError("truncated structure")
    return data[offset:offset + n], offset + n


def _ascii(raw: bytes, what: str) -> str:
    try:
        return raw.decode("ascii")
    except UnicodeDecodeError as exc:
        raise ProtocolError(f"{what} is not ASCII") from exc


@dataclass(frozen=True, slots=True)
class TokenChallenge:
    """RFC 9577 §2.1.1 TokenChallenge."""

    token_type: int
    issuer_name: str
    redemption_context: bytes = b""
    origin_info: str = ""

    def __post_init__(self) -> None:
        """Check the field bounds of the TLS presentation language definition."""
        if not 0 <= self.token_type <= 0xFFFF:
            raise ProtocolError("token_type out of range")
        if not 1 <= len(self.issuer_name) <= 0xFFFF or not self.issuer_name.isascii():
            raise ProtocolError("issuer_name must be 1 to 65535 ASCII bytes")
        if len(self.redemption_context) not in (0, 32):
            raise ProtocolError("redemption_context must be 0 or 32 bytes")
        if len(self.origin_info) > 0xFFFF or not self.origin_info.isascii():
            raise ProtocolError("origin_info must be at most 65535 ASCII bytes")

    def to_bytes(self) -> bytes:
        """Encode the challenge."""
        issuer, origin = self.issuer_name.encode(), self.origin_info.encode()
        return (struct.pack("!HH", self.token_type, len(issuer)) + issuer
                + bytes([len(self.redemption_context)]) + self.redemption_context
                + struct.pack("!H", len(origin)) + origin)

    @classmethod
    def from_bytes(cls, data: bytes) -> TokenChallenge:
        """Decode a challenge; the whole input must be consumed.

        Raises:
            ProtocolError: truncated, trailing bytes, or out-of-bounds fields.
        """
        head, off = _take(data, 0, 4)
        token_type, issuer_len = struct.unpack("!HH", head)
        issuer, off = _take(data, off, issuer_len)
        ctx_len, off = _take(data, off, 1)
        context, off = _take(data, off, ctx_len[0])
        origin_len, off = _take(data, off, 2)
        origin, off = _take(data, off, struct.unpack("!H", origin_len)[0])
        if off != len(data):
            raise ProtocolError("trailing bytes after TokenChallenge")
        return cls(token_type, _ascii(issuer, "issuer_name"), context,
                   _ascii(origin, "origin_info"))

    @property
    def digest(self) -> bytes:
        """SHA-256(TokenChallenge), the token's `challenge_digest`."""
        return hashlib.sha256(self.to_bytes()).digest()


@dataclass(frozen=True, slots=True)
class TokenRequest:
    """RFC 9578 §6.1 TokenRequest for token type 0x0002."""

    truncated_token_key_id: int
    blinded_msg: bytes = field(repr=False)
    token_type: int = TOKEN_TYPE_BLIND_RSA

    def to_bytes(self) -> bytes:
        """Encode the request."""
        return struct.pack("!HB", self.token_type, self.truncated_token_key_id) + self.blinded_msg

    @classmethod
    def from_bytes(cls, data: bytes) -> TokenRequest:
        """Decode a request (the issuer answers 422 to a `ProtocolError`, §6.2).

        Raises:
            ProtocolError: not token type 0x0002 or blinded_msg not Nk bytes.
        """
        if len(data) != 3 + NK:
            raise ProtocolError("TokenRequest has the wrong size")
        token_type, truncated = struct.unpack("!HB", data[:3])
        if token_type != TOKEN_TYPE_BLIND_RSA:
            raise ProtocolError("unsupported token type")
        return cls(truncated, data[3:], token_type)


@dataclass(frozen=True, slots=True)
class TokenResponse:
    """RFC 9578 §6.2 TokenResponse: the blind signature."""

    blind_sig: bytes = field(repr=False)

    def to_bytes(self) -> bytes:
        """Encode the response."""
        return self.blind_sig

    @classmethod
    def from_bytes(cls, data: bytes) -> TokenResponse:
        """Decode a response.

        Raises:
            ProtocolError: not Nk bytes.
        """
        if len(data) != NK:
            raise ProtocolError("TokenResponse has the wrong size")
        return cls(data)


@dataclass(frozen=True, slots=True)
class Token:
    """RFC 9577 §2.2 Token for token type 0x0002 (Nid = 32, Nk = 256)."""

    nonce: bytes = field(repr=False)
    challenge_digest: bytes
    token_key_id: bytes
    authenticator: bytes = field(repr=False)
    token_type: int = TOKEN_TYPE_BLIND_RSA

    @property
    def authenticator_input(self) -> bytes:
        """token_type || nonce || challenge_digest || token_key_id (RFC 9578 §6.4)."""
        return (struct.pack("!H", self.token_type) + self.nonce + self.challenge_digest
                + self.token_key_id)

    def to_bytes(self) -> bytes:
        """Encode the token."""
        return self.authenticator_input + self.authenticator

    @classmethod
    def from_bytes(cls, data: bytes) -> Token:
        """Decode a token.

        Raises:
            ProtocolError: wrong size or not token type 0x0002.
        """
        if len(data) != 2 + NONCE_LENGTH + 32 + NID + NK:
            raise ProtocolError("Token has the wrong size")
        (token_type,) = struct.unpack("!H", data[:2])
        if token_type != TOKEN_TYPE_BLIND_RSA:
            raise ProtocolError("unsupported token type")
        return cls(data[2:34], data[34:66], data[66:98], data[98:], token_type)


@dataclass(frozen=True, slots=True)
class IssuanceState:
    """What the client keeps between request and response (secret; redacted repr)."""

    token_input: bytes = field(repr=False)
    blinding: blindrsa.Blinding = field(repr=False)


def begin_issuance(key: IssuerPublicKey, challenge: TokenChallenge,
                   rng: Callable[[int], bytes] = secrets.token_bytes,
                   ) -> tuple[TokenRequest, IssuanceState]:
    """Client, RFC 9578 §6.1: a fresh nonce, the token input, and its blinded message.

    Args:
        key: the pinned issuer public key (T4: the caller pins it; nothing here fetches it).
        challenge: the origin's TokenChallenge (its token_type must be 0x0002).
        rng: entropy for the nonce (32 bytes), then the PSS salt and the blind (RFC 9474).

    Raises:
        ProtocolError: the challenge is for another token type.
    """
    if challenge.token_type != TOKEN_TYPE_BLIND_RSA:
        raise ProtocolError("challenge is not for token type 0x0002")
    nonce = rng(NONCE_LENGTH)
    if len(nonce) != NONCE_LENGTH:
        raise ProtocolError("rng returned the wrong number of bytes")
    token_input = (struct.pack("!H", TOKEN_TYPE_BLIND_RSA) + nonce + challenge.digest
                   + key.token_key_id)
    prepared = blindrsa.prepare(token_input, VARIANT, rng)  # PrepareIdentity
    blinded_msg, blinding = blindrsa.blind(key.rsa_key, prepared, VARIANT, rng)
    return TokenRequest(key.truncated_token_key_id, blinded_msg), IssuanceState(token_input,
                                                                                blinding)


def finalize_token(key: IssuerPublicKey, state: IssuanceState, response: TokenResponse) -> Token:
    """Client, RFC 9578 §6.3: unblind and build the Token.

    Raises:
        VerificationError: the issuer's signature does not verify under `key`.
    """
    authenticator = blindrsa.finalize(key.rsa_key, state.token_input, response.blind_sig,
                                      state.blinding, VARIANT)
    return Token.from_bytes(state.token_input + authenticator)


def issue(signer: blindrsa.BlindSigner, key: IssuerPublicKey, request: TokenRequest,
          rng: Callable[[int], bytes] = secrets.token_bytes) -> TokenResponse:
    """Issuer, RFC 9578 §6.2: check the request against `key`, then BlindSign.

    Raises:
        ProtocolError: unsupported type, unknown truncated key id, or bad blinded_msg (422).
        VerificationError: the signer's fault check failed (nothing is released).
    """
    if request.token_type != TOKEN_TYPE_BLIND_RSA:
        raise ProtocolError("unsupported token type")
    if request.truncated_token_key_id != key.truncated_token_key_id:
        raise ProtocolError("unknown token key")
    if len(request.blinded_msg) != NK:
        raise ProtocolError("blinded_msg has the wrong size")
    return TokenResponse(signer.blind_sign(request.blinded_msg, rng))


def verify_token(key: IssuerPublicKey, token: Token, challenge: TokenChallenge) -> None:
    """Origin, RFC 9578 §6.4: the token is for this challenge and this key, and verifies.

    Raises:
        VerificationError: any mismatch or an invalid authenticator (one message for all).
    """
    if (token.token_type != challenge.token_type
            or not hmac.compare_digest(token.challenge_digest, challenge.digest)
            or not hmac.compare_digest(token.token_key_id, key.token_key_id)):
        raise VerificationError("invalid token")
    try:
        blindrsa.verify(key.rsa_key, token.authenticator_input, token.authenticator, VARIANT)
    except VerificationError:
        raise VerificationError("invalid token") from None
