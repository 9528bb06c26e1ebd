"""RFC 9458 request and response encapsulation (§4.3-§4.6), client side and gateway side.

Pure: the entropy source is the `rng` parameter (`os.urandom` at the public edge only), so the
Appendix A example is reproducible byte for byte.

Invariants:
* Every failure to decapsulate a request or response raises the one opaque `DecryptError`
  (short input, bad tag, low-order `enc`, altered header), except an unknown or mismatched key
  identifier, which RFC 9458 §4.3/§5.3 answers *before* any DH: `UnknownKeyError`, detail-free.
* The 7-byte header is part of the HPKE `info`, so altering it breaks decryption (§4.3 step 2).
* Response keys come from the HPKE exporter and a fresh random `response_nonce` (§4.4).
* Context objects hold secrets and redact `repr`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pyhpke import KEMKeyPair

from hushcc.errors import DecryptError, ProtocolError
from ohttp.header import (
    HEADER_LENGTH,
    REQUEST_LABEL,
    RESPONSE_LABEL,
    RequestHeader,
    build_info,
)
from ohttp.keyconfig import GatewayKey
from ohttp.suites import (
    SymmetricSuite,
    aead_id_from_int,
    aead_open,
    aead_seal,
    hkdf_expand,
    hkdf_extract,
    hpke_key,
    hpke_public_key,
    hpke_suite,
    kdf_id_from_int,
    kem_public_key_length,
    x25519_private_key,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping

    from pyhpke import ContextInterface

    from ohttp.keyconfig import KeyConfig

REQUEST_MEDIA_TYPE = "message/ohttp-req"  # §4.6 (and §9 IANA)
RESPONSE_MEDIA_TYPE = "message/ohttp-res"
KEYS_MEDIA_TYPE = "application/ohttp-keys"  # §3.2


class UnknownKeyError(ProtocolError):
    """The request names a key id, KEM or suite this gateway does not offer (§4.3 step 1).

    Answered with the `ohttp-key` problem (400) before any cryptographic operation.
    """

    MESSAGE = "unknown or unsupported key configuration"

    def __init__(self) -> None:
        """Create the detail-free error."""
        super().__init__(self.MESSAGE)


def select_key(
    header: RequestHeader, keys: Mapping[int, GatewayKey]
) -> tuple[GatewayKey, SymmetricSuite]:
    """Step 1 of §4.3: find the key and check the KEM and suite are offered, before any DH.

    Raises:
        UnknownKeyError: unknown key id, KEM not the key's, or a suite the config does not offer.
    """
    key = keys.get(header.key_id)
    if key is None or header.kem_id != key.config.kem_id:
        raise UnknownKeyError
    try:
        suite = SymmetricSuite(kdf_id_from_int(header.kdf_id), aead_id_from_int(header.aead_id))
    except ProtocolError:
        raise UnknownKeyError from None
    if suite not in key.config.suites:
        raise UnknownKeyError
    return key, suite


def as_keyring(keys: GatewayKey | Iterable[GatewayKey]) -> dict[int, GatewayKey]:
    """Index gateway keys by key id (one key, or several during rotation)."""
    if isinstance(keys, GatewayKey):
        return {keys.config.key_id: keys}
    ring: dict[int, GatewayKey] = {}
    for key in keys:
        if key.config.key_id in ring:
            raise ProtocolError("two gateway keys share a key id")
        ring[key.config.key_id] = key
    return ring


def sender_context(
    config: KeyConfig, suite: SymmetricSuite, label: bytes, rng: Callable[[int], bytes]
) -> tuple[bytes, bytes, ContextInterface]:
    """SetupBaseS to `config` with an ephemeral key drawn from `rng`: (header, enc, context).

    Raises:
        ProtocolError: `suite` is not offered by `config`, or HPKE cannot encapsulate to its key
            (the crypto library's own exceptions are mapped here, G9 on the client side).
    """
    if suite not in config.suites:
        raise ProtocolError("the key configuration does not offer that suite")
    header = config.header(suite)
    cipher = hpke_suite(config.kem_id, suite)
    ephemeral = x25519_private_key(rng(32))
    pair = KEMKeyPair(hpke_key(ephemeral), hpke_key(ephemeral.public_key()))
    public_key = hpke_public_key(config.kem_id, config.public_key)
    try:
        enc, ctx = cipher.create_sender_context(public_key, build_info(label, header), eks=pair)
    except Exception as exc:  # pyca's ValueError on a low-order key, pyhpke's own errors
        raise ProtocolError("cannot encapsulate to this key configuration") from exc
    return header, bytes(enc), ctx


def body_offset(key: GatewayKey) -> int:
    """Where the ciphertext starts in a request to `key`: after the header and `enc` (Nenc)."""
    return HEADER_LENGTH + kem_public_key_length(key.config.kem_id)


def recipient_context(
    data: bytes, keys: Mapping[int, GatewayKey], label: bytes
) -> tuple[RequestHeader, SymmetricSuite, bytes, ContextInterface, int]:
    """Gateway side of §4.3: parse header, select key, SetupBaseR; return the offset of the body.

    Raises:
        DecryptError: short input, or `enc` that does not decapsulate (low-order point...).
        UnknownKeyError: header names a key, KEM or suite not offered.
    """
    header = RequestHeader.from_bytes(data)
    key, suite = select_key(header, keys)
    body = body_offset(key)
    if len(data) < body:
        raise DecryptError
    enc = bytes(data[HEADER_LENGTH:body])
    ctx = key.setup_recipient(suite, enc, label, header.to_bytes())
    return header, suite, enc, ctx, body


def hpke_open(ctx: ContextInterface, ciphertext: bytes, aad: bytes = b"") -> bytes:
    """Open with an HPKE recipient context; any failure is `DecryptError`."""
    try:
        return bytes(ctx.open(ciphertext, aad))
    except Exception as exc:
        raise DecryptError from exc


@dataclass(slots=True)
class ResponseKeys:
    """The exporter secret and `enc` from which response keys derive (§4.4). Secret: redacted."""

    suite: SymmetricSuite
    enc: bytes
    secret: bytearray = field(repr=False)

    def __repr__(self) -> str:
        """Never show the secret."""
        return f"ResponseKeys(suite={self.suite!r}, secret=<redacted>)"

    @classmethod
    def export(
        cls, ctx: ContextInterface, suite: SymmetricSuite, enc: bytes, label: bytes
    ) -> ResponseKeys:
        """Export the response secret: context.Export(label, max(Nn, Nk))."""
        length = max(suite.nonce_length, suite.key_length)
        return cls(suite, enc, bytearray(ctx.export(label, length)))

    @property
    def nonce_length(self) -> int:
        """Length of `response_nonce`: max(Nn, Nk) (== len(secret))."""
        return len(self.secret)

    def draw_nonce(self, rng: Callable[[int], bytes]) -> bytes:
        """A fresh `response_nonce` of `nonce_length` bytes from `rng`.

        Raises:
            ProtocolError: `rng` returned the wrong length.
        """
        response_nonce = rng(self.nonce_length)
        if len(response_nonce) != self.nonce_length:
            raise ProtocolError("entropy source returned the wrong length")
        return response_nonce

    def derive(self, response_nonce: bytes) -> tuple[bytes, bytes]:
        """Return (aead_key, aead_nonce) from Extract(enc || response_nonce, secret) (§4.4)."""
        kdf = self.suite.kdf_id
        prk = hkdf_extract(kdf, self.enc + response_nonce, bytes(self.secret))
        key = hkdf_expand(kdf, prk, b"key", self.suite.key_length)
        nonce = hkdf_expand(kdf, prk, b"nonce", self.suite.nonce_length)
        return key, nonce

    def wipe(self) -> None:
        """Overwrite the secret (best effort: CPython may hold copies)."""
        self.secret[:] = bytes(len(self.secret))


@dataclass(slots=True)
class ClientContext:
    """What a client keeps after `encapsulate_request` to open the response."""

    keys: ResponseKeys

    def __repr__(self) -> str:
        """Never show the secret."""
        return "ClientContext(<redacted>)"


@dataclass(slots=True)
class GatewayContext:
    """What a gateway keeps after `decapsulate_request` to seal the response."""

    keys: ResponseKeys
    header: RequestHeader

    def __repr__(self) -> str:
        """Never show the secret."""
        return f"GatewayContext(key_id={self.header.key_id}, <redacted>)"

    @property
    def enc(self) -> bytes:
        """The request's `enc` (public), for replay detection."""
        return self.keys.enc


def encapsulate_request(
    config: KeyConfig,
    bhttp_request: bytes,
    *,
    suite: SymmetricSuite | None = None,
    rng: Callable[[int], bytes] = os.urandom,
) -> tuple[bytes, ClientContext]:
    """Client: build an Encapsulated Request (`message/ohttp-req`, RFC 9458 §4.3).

    Args:
        config: the gateway's key configuration.
        bhttp_request: the binary HTTP request to protect.
        suite: the symmetric suite to use; the config's first suite by default.
        rng: entropy source for the ephemeral key (32 bytes) and nothing else.

    Returns:
        The Encapsulated Request bytes and the context that opens the response.

    Raises:
        ProtocolError: `suite` is not offered by `config`.
    """
    chosen = suite if suite is not None else config.suites[0]
    header, enc, ctx = sender_context(config, chosen, REQUEST_LABEL, rng)
    ciphertext = bytes(ctx.seal(bhttp_request, b""))
    keys = ResponseKeys.export(ctx, chosen, enc, RESPONSE_LABEL)
    return header + enc + ciphertext, ClientContext(keys)


def decapsulate_request(
    data: bytes, keys: GatewayKey | Iterable[GatewayKey]
) -> tuple[bytes, GatewayContext]:
    """Gateway: open an Encapsulated Request (RFC 9458 §4.3, last steps).

    Args:
        data: the whole `message/ohttp-req` body.
        keys: the gateway's current key, or keys during rotation.

    Returns:
        The binary HTTP request and the context for the response.

    Raises:
        UnknownKeyError: unknown key id, KEM or suite (answer 400 `ohttp-key`).
        DecryptError: anything else (opaque).
    """
    header, suite, enc, ctx, body = recipient_context(data, as_keyring(keys), REQUEST_LABEL)
    plaintext = hpke_open(ctx, bytes(data[body:]))
    return plaintext, GatewayContext(ResponseKeys.export(ctx, suite, enc, RESPONSE_LABEL), header)


def encapsulate_response(
    ctx: GatewayContext, bhttp_response: bytes, *, rng: Callable[[int], bytes] = os.urandom
) -> bytes:
    """Gateway: build an Encapsulated Response (`message/ohttp-res`, RFC 9458 §4.4).

    Args:
        ctx: the context `decapsulate_request` returned.
        bhttp_response: the binary HTTP response.
        rng: entropy source for `response_nonce` (max(Nn, Nk) bytes).

    Returns:
        response_nonce || ciphertext.
    """
    response_nonce = ctx.keys.draw_nonce(rng)
    key, nonce = ctx.keys.derive(response_nonce)
    return response_nonce + aead_seal(ctx.keys.suite.aead_id, key, nonce, b"", bhttp_response)


def decapsulate_response(ctx: ClientContext, data: bytes) -> bytes:
    """Client: open an Encapsulated Response (RFC 9458 §4.4).

    Raises:
        DecryptError: short, truncated or altered response (opaque).
    """
    n = ctx.keys.nonce_length
    if len(data) < n + ctx.keys.suite.tag_length:
        raise DecryptError
    key, nonce = ctx.keys.derive(bytes(data[:n]))
    return aead_open(ctx.keys.suite.aead_id, key, nonce, b"", bytes(data[n:]))
