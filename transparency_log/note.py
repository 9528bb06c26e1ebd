"""C2SP signed-note: Ed25519 verifier/signer keys, signing and opening notes (pure).

Formats (c2sp.org/signed-note):
* verifier key `name+hash+base64(type || public key)`, type 0x01 (Ed25519) or 0x04 (a
  tlog-cosignature Ed25519 cosigner key, verified by `cosignature.py`);
* signer key `PRIVATE+KEY+name+hash+base64(0x01 || 32-byte seed)` (golang.org/x/mod/sumdb/note);
* key hash `SHA-256(name || 0x0A || type || public key)[:4]`, big-endian;
* note: UTF-8 text ending in a newline, a blank line, then one or more lines
  `U+2014 U+0020 name U+0020 base64(key hash || signature) U+000A`.

Invariants: signatures from unknown keys are ignored (kept as `unverified`); a signature
from a known key that fails is an error; an opened note has at least one verified signature.
Private key material lives only inside pyca key objects and never appears in a repr or message.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from hushcc.errors import ProtocolError, VerificationError

if TYPE_CHECKING:
    from collections.abc import Sequence

ALG_ED25519 = 0x01
ALG_COSIGNATURE_V1 = 0x04
MAX_SIGNATURES = 100
MAX_NEW_NAME_BYTES = 255
SIG_PREFIX = "\u2014 "


def b64decode_strict(text: str) -> bytes:
    """Decode standard padded base64, rejecting any non-alphabet character."""
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError) as exc:
        raise ProtocolError("invalid base64") from exc


def is_valid_name(name: str) -> bool:
    """Return whether `name` is a valid key name: non-empty, no '+', no whitespace."""
    return bool(name) and "+" not in name and not any(c.isspace() for c in name) and all(
        c.isprintable() for c in name
    )


def check_new_key_name(name: str) -> None:
    """Check a name for a key about to be created: the C2SP rules plus a length bound.

    c2sp.org/signed-note: a key name is non-empty UTF-8 with no Unicode space and no '+'. It
    sets no maximum, so parsing others' notes (`is_valid_name`) sets none either; a key this
    project creates is also a checkpoint origin, printed in every note, so it is kept to
    `MAX_NEW_NAME_BYTES` bytes of printable characters.

    Raises:
        ProtocolError: the name breaks a rule (the message says which, not the name).
    """
    if not name:
        raise ProtocolError("key name is empty")
    if len(name.encode("utf-8", "surrogatepass")) > MAX_NEW_NAME_BYTES:
        raise ProtocolError(f"key name is longer than {MAX_NEW_NAME_BYTES} bytes")
    if "+" in name or any(c.isspace() for c in name):
        raise ProtocolError("key name contains '+' or a space (c2sp.org/signed-note)")
    if not all(c.isprintable() for c in name) or not _is_utf8(name):
        raise ProtocolError("key name contains a control or non-UTF-8 character")


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def key_hash(name: str, alg: int, public_key: bytes) -> bytes:
    """Return the 4-byte C2SP key hash of a key."""
    return hashlib.sha256(name.encode() + b"\n" + bytes([alg]) + public_key).digest()[:4]


class NoteVerifier(Protocol):
    """A verifier for one (name, key hash)."""

    @property
    def name(self) -> str:
        """The key name."""
        ...

    @property
    def hash(self) -> bytes:
        """The 4-byte key hash."""
        ...

    def verify(self, text: bytes, sig: bytes) -> bool:
        """Return whether `sig` (after the 4-byte key hash) signs note `text`."""
        ...


@dataclass(frozen=True, slots=True)
class Verifier:
    """A C2SP Ed25519 (type 0x01) note verifier key."""

    name: str
    hash: bytes
    public_key: bytes

    @classmethod
    def from_string(cls, vkey: str) -> Verifier:
        """Parse `name+hash+base64(0x01 || key)`.

        Raises:
            ProtocolError: malformed, wrong type, or key hash mismatch.
        """
        name, alg, hash_, pub = parse_vkey(vkey)
        if alg != ALG_ED25519:
            raise ProtocolError("verifier key is not an Ed25519 note key")
        return cls(name, hash_, pub)

    def to_string(self) -> str:
        """Return the verifier key string."""
        return format_vkey(self.name, self.hash, ALG_ED25519, self.public_key)

    def verify(self, text: bytes, sig: bytes) -> bool:
        """Return whether `sig` is a valid Ed25519 signature over `text`."""
        if len(sig) != 64:
            return False
        try:
            Ed25519PublicKey.from_public_bytes(self.public_key).verify(sig, text)
        except InvalidSignature:
            return False
        return True


def format_vkey(name: str, hash_: bytes, alg: int, public_key: bytes) -> str:
    """Return the verifier key string `name+hash+base64(type || public key)`."""
    return f"{name}+{hash_.hex()}+{base64.b64encode(bytes([alg]) + public_key).decode()}"


def parse_vkey(vkey: str) -> tuple[str, int, bytes, bytes]:
    """Split a verifier key string into (name, type, key hash, public key), checking the hash.

    Raises:
        ProtocolError: malformed string or key hash mismatch.
    """
    parts = vkey.strip().split("+", 2)
    if len(parts) != 3 or not is_valid_name(parts[0]):
        raise ProtocolError("malformed verifier key")
    name, hash_hex, b64 = parts
    if len(hash_hex) != 8 or hash_hex != hash_hex.lower():
        raise ProtocolError("malformed verifier key hash")
    raw = b64decode_strict(b64)
    if len(raw) != 33:
        raise ProtocolError("verifier key has the wrong length")
    alg, pub = raw[0], raw[1:]
    hash_ = key_hash(name, alg, pub)
    if hash_.hex() != hash_hex:
        raise ProtocolError("verifier key hash does not match the key")
    return name, alg, hash_, pub


class Signer:
    """A C2SP Ed25519 note signer (the private key stays inside a pyca object)."""

    __slots__ = ("_key", "hash", "name")

    def __init__(self, name: str, key: Ed25519PrivateKey) -> None:
        """Create a signer named `name` for `key`."""
        if not is_valid_name(name):
            raise ProtocolError("invalid key name")
        self.name = name
        self._key = key
        self.hash = key_hash(name, ALG_ED25519, self.public_key)

    def __repr__(self) -> str:
        """Name the key, never its secret."""
        return f"Signer(name={self.name!r}, hash={self.hash.hex()})"

    @classmethod
    def generate(cls, name: str) -> Signer:
        """Create a new random signer."""
        return cls(name, Ed25519PrivateKey.generate())

    @classmethod
    def from_string(cls, skey: str) -> Signer:
        """Parse `PRIVATE+KEY+name+hash+base64(0x01 || seed)`.

        Raises:
            ProtocolError: malformed key or key hash mismatch.
        """
        parts = skey.strip().split("+", 4)
        if len(parts) != 5 or parts[:2] != ["PRIVATE", "KEY"]:
            raise ProtocolError("malformed signer key")
        raw = b64decode_strict(parts[4])
        if len(raw) != 33 or raw[0] != ALG_ED25519:
            raise ProtocolError("signer key is not an Ed25519 key")
        signer = cls(parts[2], Ed25519PrivateKey.from_private_bytes(raw[1:]))
        if signer.hash.hex() != parts[3]:
            raise ProtocolError("signer key hash does not match the key")
        return signer

    def to_string(self) -> str:
        """Return the private signer key string (handle as a secret)."""
        seed = self._key.private_bytes_raw()
        body = base64.b64encode(bytes([ALG_ED25519]) + seed).decode()
        return f"PRIVATE+KEY+{self.name}+{self.hash.hex()}+{body}"

    @property
    def public_key(self) -> bytes:
        """The 32-byte Ed25519 public key."""
        return self._key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)

    def verifier(self) -> Verifier:
        """The matching verifier."""
        return Verifier(self.name, self.hash, self.public_key)

    def sign(self, text: bytes) -> bytes:
        """Return the raw Ed25519 signature over `text`."""
        return self._key.sign(text)


@dataclass(frozen=True, slots=True)
class NoteSignature:
    """One signature line: key name, 4-byte key hash and the signature bytes after it."""

    name: str
    hash: bytes
    sig: bytes

    def to_line(self) -> str:
        """Return the line without its newline."""
        return f"{SIG_PREFIX}{self.name} {base64.b64encode(self.hash + self.sig).decode()}"


@dataclass(frozen=True, slots=True)
class Note:
    """A parsed signed note: its text and its signature lines."""

    text: bytes
    signatures: tuple[NoteSignature, ...]

    @classmethod
    def from_bytes(cls, msg: bytes) -> Note:
        """Split a signed note into text and signatures without verifying anything.

        Raises:
            ProtocolError: the note is malformed.
        """
        try:
            decoded = msg.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ProtocolError("malformed note: not UTF-8") from exc
        if any((c < " " and c != "\n") or c in "\x7f\ufffd" for c in decoded):
            raise ProtocolError("malformed note: control character")
        split = msg.rfind(b"\n\n")
        if split < 0:
            raise ProtocolError("malformed note: no signature block")
        text, sig_block = msg[: split + 1], msg[split + 2 :]
        if not sig_block.endswith(b"\n"):
            raise ProtocolError("malformed note: signatures must end with a newline")
        lines = sig_block[:-1].decode().split("\n")
        if len(lines) > MAX_SIGNATURES:
            raise ProtocolError("malformed note: too many signatures")
        sigs: list[NoteSignature] = []
        for line in lines:
            if not line.startswith(SIG_PREFIX):
                raise ProtocolError("malformed note: bad signature line")
            name, sep, b64 = line[len(SIG_PREFIX) :].partition(" ")
            if not sep or not is_valid_name(name):
                raise ProtocolError("malformed note: bad signature key name")
            raw = b64decode_strict(b64)
            if len(raw) < 5:
                raise ProtocolError("malformed note: signature too short")
            sigs.append(NoteSignature(name, raw[:4], raw[4:]))
        return cls(text, tuple(sigs))

    def to_bytes(self) -> bytes:
        """Serialize the note (exact inverse of `from_bytes`)."""
        lines = "".join(s.to_line() + "\n" for s in self.signatures)
        return self.text + b"\n" + lines.encode()


@dataclass(frozen=True, slots=True)
class OpenedNote:
    """A note with at least one verified signature."""

    text: bytes
    verified: tuple[NoteSignature, ...]
    unverified: tuple[NoteSignature, ...]


def sign_note(text: bytes, signers: Sequence[Signer]) -> bytes:
    """Sign `text` with each signer and return the signed note.

    Raises:
        ProtocolError: the text is not valid note text (must end with a newline).
    """
    if not text.endswith(b"\n") or b"\n\n" in text:
        raise ProtocolError("note text must end with one newline and have no blank line")
    sigs = tuple(NoteSignature(s.name, s.hash, s.sign(text)) for s in signers)
    return Note(text, sigs).to_bytes()


def open_note(msg: bytes, verifiers: Sequence[NoteVerifier]) -> OpenedNote:
    """Parse `msg` and verify its signatures against known verifiers.

    Returns:
        The note with verified and unverified (unknown-key) signatures.

    Raises:
        ProtocolError: the note is malformed.
        VerificationError: a known key's signature is invalid, or no known key signed it.
    """
    note = Note.from_bytes(msg)
    known = {(v.name, v.hash): v for v in verifiers}
    verified: list[NoteSignature] = []
    unverified: list[NoteSignature] = []
    for sig in note.signatures:
        verifier = known.get((sig.name, sig.hash))
        if verifier is None:
            unverified.append(sig)  # signed-note: ignore signatures from unknown keys
        elif verifier.verify(note.text, sig.sig):
            verified.append(sig)
        else:
            raise VerificationError(f"invalid signature for key {sig.name}+{sig.hash.hex()}")
    if not verified:
        raise VerificationError("note has no signature from a known key")
    return OpenedNote(note.text, tuple(verified), tuple(unverified))
