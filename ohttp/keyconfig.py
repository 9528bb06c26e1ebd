"""OHTTP key configurations (RFC 9458 §3) and the gateway's private key, typed by purpose.

Pure. Invariants:
* `KeyConfig.from_bytes(c.to_bytes()) == c`; parsing validates every length and identifier and
  raises only `ProtocolError` (unknown identifiers included).
* No `KeyConfig` holds a public key that fails to load or is a low-order point (checked on
  construction, so parsed and built configs alike).
* `GatewayKey` is the only holder of a gateway private key. It is usable for nothing but OHTTP
  decapsulation with the OHTTP labels (the `encapsulation` and `chunked` modules): it offers no
  generic open, sign or export operation (SECURITY.md G13), and its `repr` shows no secret.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from hushcc.errors import DecryptError, ProtocolError
from ohttp.header import OHTTP_REQUEST_LABELS, RequestHeader, build_info
from ohttp.suites import (
    KemId,
    SymmetricSuite,
    UnsupportedAlgorithmError,
    aead_id_from_int,
    check_kem_public_key,
    hpke_key,
    hpke_suite,
    kdf_id_from_int,
    kem_id_from_int,
    kem_public_key_length,
    x25519_private_key,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
    from pyhpke import ContextInterface

KEY_FILE_FORMAT = "hushcc-ohttp-gateway-key/v1"


def _u16(data: bytes, offset: int) -> int:
    if offset + 2 > len(data):
        raise ProtocolError("key configuration is truncated")
    return int.from_bytes(data[offset : offset + 2], "big")


@dataclass(frozen=True, slots=True)
class KeyConfig:
    """One key configuration: `key_id`, KEM, public key and the symmetric suites offered."""

    key_id: int
    kem_id: KemId
    public_key: bytes
    suites: tuple[SymmetricSuite, ...]

    def __post_init__(self) -> None:
        """Validate ranges so an invalid config can never be serialized."""
        if not 0 <= self.key_id <= 0xFF:
            raise ProtocolError("key id must fit in one byte")
        check_kem_public_key(self.kem_id, self.public_key)  # length, loads, not low order
        if not self.suites or len(self.suites) > 0xFFFF // 4:
            raise ProtocolError("a key configuration offers 1 to 16383 symmetric suites")

    @classmethod
    def parse_prefix(cls, data: bytes, offset: int = 0) -> tuple[KeyConfig, int]:
        """Parse one configuration starting at `offset`; return it and the offset after it.

        Raises:
            ProtocolError: truncated, unknown identifier or malformed suites list.
        """
        if offset + 3 > len(data):
            raise ProtocolError("key configuration is truncated")
        key_id = data[offset]
        kem_id = kem_id_from_int(_u16(data, offset + 1))
        npk = kem_public_key_length(kem_id)
        pk_end = offset + 3 + npk
        if pk_end > len(data):
            raise ProtocolError("key configuration is truncated")
        public_key = bytes(data[offset + 3 : pk_end])
        suites_len = _u16(data, pk_end)
        if suites_len == 0 or suites_len % 4:
            raise ProtocolError("symmetric algorithms length must be a non-zero multiple of 4")
        end = pk_end + 2 + suites_len
        if end > len(data):
            raise ProtocolError("key configuration is truncated")
        suites = tuple(
            SymmetricSuite(kdf_id_from_int(_u16(data, i)), aead_id_from_int(_u16(data, i + 2)))
            for i in range(pk_end + 2, end, 4)
        )
        return cls(key_id, kem_id, public_key, suites), end

    @classmethod
    def from_bytes(cls, data: bytes) -> KeyConfig:
        """Parse exactly one key configuration (no length prefix).

        Raises:
            ProtocolError: malformed, unknown identifier, or trailing bytes.
        """
        config, end = cls.parse_prefix(data)
        if end != len(data):
            raise ProtocolError("trailing bytes after key configuration")
        return config

    def to_bytes(self) -> bytes:
        """Serialize as RFC 9458 §3.1 `Key Config`."""
        algorithms = b"".join(
            s.kdf_id.to_bytes(2, "big") + s.aead_id.to_bytes(2, "big") for s in self.suites
        )
        return (
            bytes([self.key_id])
            + self.kem_id.to_bytes(2, "big")
            + self.public_key
            + len(algorithms).to_bytes(2, "big")
            + algorithms
        )

    def header(self, suite: SymmetricSuite) -> bytes:
        """The 7-byte request header `key_id || kem_id || kdf_id || aead_id` (RFC 9458 §4.3)."""
        return RequestHeader(self.key_id, self.kem_id, suite.kdf_id, suite.aead_id).to_bytes()


def parse_key_configs(data: bytes, *, skip_unsupported: bool = False) -> tuple[KeyConfig, ...]:
    """Parse an `application/ohttp-keys` body: configs each with a 2-byte length prefix (§3.2).

    Args:
        data: the body.
        skip_unsupported: drop entries whose KEM, KDF or AEAD this implementation does not
            support (the length prefix makes that safe) instead of failing; at least one
            supported entry must remain.

    Raises:
        ProtocolError: empty list, malformed entry, a length prefix that disagrees with its
            entry, or (unless skipped) an unsupported identifier.
    """
    configs: list[KeyConfig] = []
    offset = 0
    while offset < len(data):
        length = _u16(data, offset)
        start = offset + 2
        end = start + length
        if end > len(data):
            raise ProtocolError("key configuration list is truncated")
        try:
            configs.append(KeyConfig.from_bytes(bytes(data[start:end])))
        except UnsupportedAlgorithmError:
            if not skip_unsupported:
                raise
        offset = end
    if not configs:
        raise ProtocolError("key configuration list has no supported entry")
    return tuple(configs)


PRIVATE_KEY_FILE_MESSAGE = (
    "this is an OHTTP gateway private key file, not a public key configuration: give the "
    "FILE.pub that `hushcc ohttp keygen` wrote next to it"
)
PUBLIC_CONFIG_MESSAGE = (
    "this is a public OHTTP key configuration (application/ohttp-keys), not a gateway private "
    "key file: give the FILE that `hushcc ohttp keygen` wrote, not FILE.pub"
)


def _is_gateway_key_file(data: bytes) -> bool:
    """Whether `data` is (or tries to be) a `GatewayKey.to_key_file` document."""
    if data.lstrip()[:1] != b"{":
        return False
    try:
        document = json.loads(data)
    except (ValueError, RecursionError):
        return KEY_FILE_FORMAT.encode() in data or b'"private_key"' in data
    return isinstance(document, dict) and (
        document.get("format") == KEY_FILE_FORMAT or "private_key" in document
    )


def _holds_a_private_key(data: bytes) -> bool:
    """Other private keys people mix up with key configs: PEM, and signed-note (log) keys."""
    return b"PRIVATE KEY-----" in data or data.lstrip().startswith(b"PRIVATE+KEY+")


def parse_public_key_config(data: bytes) -> KeyConfig:
    """Read a gateway's public key configuration where exactly one is expected.

    The one reader for every such place (the attestation bundle's key config, the CLI, the demo,
    the client): an `application/ohttp-keys` body (RFC 9458 §3.2) holding exactly one supported
    configuration and nothing after it. A private key file given by mistake is named as such.

    Raises:
        ProtocolError: a private key file, an empty list, more than one configuration, bytes
            after it, or a malformed, unsupported or low-order configuration. The message never
            includes the data.
    """
    if _is_gateway_key_file(data):
        raise ProtocolError(PRIVATE_KEY_FILE_MESSAGE)
    if _holds_a_private_key(data):
        raise ProtocolError("this holds a private key, not a public OHTTP key configuration")
    configs = parse_key_configs(data)
    if len(configs) != 1:
        raise ProtocolError(
            f"expected exactly one OHTTP key configuration, found {len(configs)}"
        )
    return configs[0]


def serialize_key_configs(configs: Iterable[KeyConfig]) -> bytes:
    """Serialize configs as an `application/ohttp-keys` body (inverse of `parse_key_configs`)."""
    out = bytearray()
    for config in configs:
        encoded = config.to_bytes()
        out += len(encoded).to_bytes(2, "big") + encoded
    if not out:
        raise ProtocolError("key configuration list is empty")
    return bytes(out)


@dataclass(frozen=True, slots=True)
class GatewayKey:
    """A gateway's OHTTP private key with its public configuration; only OHTTP decaps use it."""

    config: KeyConfig
    _private: X25519PrivateKey = field(repr=False)

    def __post_init__(self) -> None:
        """The private key must match the configuration's public key."""
        public = self._private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        if public != self.config.public_key:
            raise ProtocolError("private key does not match the key configuration")

    def __repr__(self) -> str:
        """Show the key id only."""
        return f"GatewayKey(key_id={self.config.key_id}, private=<redacted>)"

    @classmethod
    def generate(
        cls,
        key_id: int,
        suites: tuple[SymmetricSuite, ...],
        *,
        rng: Callable[[int], bytes],
        kem_id: KemId = KemId.DHKEM_X25519_HKDF_SHA256,
    ) -> GatewayKey:
        """Create a key from `rng` (pass `os.urandom` at the edge).

        Raises:
            ProtocolError: invalid key id or suites.
        """
        return cls.from_private_bytes(key_id, suites, rng(32), kem_id=kem_id)

    @classmethod
    def from_private_bytes(
        cls,
        key_id: int,
        suites: tuple[SymmetricSuite, ...],
        private: bytes,
        *,
        kem_id: KemId = KemId.DHKEM_X25519_HKDF_SHA256,
    ) -> GatewayKey:
        """Build a key from a raw X25519 private key (as in RFC 9458 App. A).

        Raises:
            ProtocolError: invalid key id, suites or private key length.
        """
        sk = x25519_private_key(private)
        public = sk.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        return cls(KeyConfig(key_id, kem_id, public, suites), sk)

    def setup_recipient(
        self, suite: SymmetricSuite, enc: bytes, label: bytes, header: bytes
    ) -> ContextInterface:
        """SetupBaseR for an OHTTP request: the only use of the private key (G13).

        Args:
            suite: the (KDF, AEAD) pair; must be one this key's config offers.
            enc: the request's encapsulated KEM output.
            label: one of `OHTTP_REQUEST_LABELS`; any other purpose is refused.
            header: the 7-byte request header (bound into `info`).

        Raises:
            ProtocolError: a label outside OHTTP or a suite the config does not offer.
            DecryptError: `enc` does not decapsulate (e.g. a low-order point).
        """
        if label not in OHTTP_REQUEST_LABELS or suite not in self.config.suites:
            raise ProtocolError("this key only decapsulates OHTTP requests it offers")
        try:
            return hpke_suite(self.config.kem_id, suite).create_recipient_context(
                enc, hpke_key(self._private), build_info(label, header)
            )
        except Exception as exc:  # pyca raises ValueError on low-order points: map at the seam
            raise DecryptError from exc

    def to_key_file(self) -> bytes:
        """Serialize for a 0600 key file: JSON with the key config and the raw private key.

        This is the only way the secret leaves the object; callers write it to a private file.
        """
        raw = self._private.private_bytes_raw()
        document = {
            "format": KEY_FILE_FORMAT,
            "key_config": self.config.to_bytes().hex(),
            "private_key": raw.hex(),
        }
        return (json.dumps(document, indent=1) + "\n").encode()

    @classmethod
    def from_key_file(cls, data: bytes) -> GatewayKey:
        """Parse `to_key_file` output.

        Raises:
            ProtocolError: not a key file of this format (a public key configuration is named as
                such), or inconsistent contents (the message never includes the file's contents).
        """
        if not _is_gateway_key_file(data):
            try:
                parse_public_key_config(data)
            except ProtocolError:
                pass
            else:
                raise ProtocolError(PUBLIC_CONFIG_MESSAGE)
        try:
            document = json.loads(data)
            file_format = document.get("format")
            config = KeyConfig.from_bytes(bytes.fromhex(document["key_config"]))
            private = bytes.fromhex(document["private_key"])
        except ProtocolError:
            raise
        except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:
            raise ProtocolError("malformed OHTTP gateway key file") from exc
        if file_format != KEY_FILE_FORMAT:
            raise ProtocolError("not a hushcc OHTTP gateway key file")
        return cls(config, x25519_private_key(private))  # __post_init__ checks they match
