"""Key files for the log key and the release-signing key (an I/O shell).

Both keys are Ed25519 in the C2SP note formats: the private file holds one line
`PRIVATE+KEY+name+hash+base64(0x01 || seed)` and must not be group- or world-accessible
(mode 0600); `FILE.pub` holds the verifier key `name+hash+base64(0x01 || public key)`.
Error messages name the file, never its contents; a private key where a verifier is expected
(or the reverse) is recognised and refused with a message that says so.
"""

from __future__ import annotations

import stat
from pathlib import Path
from typing import TYPE_CHECKING

from hushcc.errors import ConfigError, ProtocolError
from hushcc.files import create_exclusive, read_text
from transparency_log.note import Signer, Verifier

if TYPE_CHECKING:
    import os

PRIVATE_PREFIX = "PRIVATE+KEY+"


def write_key_pair(path: str | os.PathLike[str], signer: Signer) -> Path:
    """Write the private key to `path` (0600, must not exist) and the verifier to `path.pub`.

    Returns:
        The path of the `.pub` file.

    Raises:
        ConfigError: `path` already exists.
    """
    out = Path(path)
    create_exclusive(out, (signer.to_string() + "\n").encode(), 0o600)
    pub = out.with_name(out.name + ".pub")
    pub.write_text(signer.verifier().to_string() + "\n")
    return pub


def read_signer(path: str | os.PathLike[str], what: str = "private key file") -> Signer:
    """Read a private key file, refusing one that is missing or too permissive.

    Raises:
        ConfigError: missing, not a file, not UTF-8, group/world accessible, a verifier (public)
            key instead, or malformed. Messages name the file, never its contents.
    """
    p = Path(path)
    try:
        mode = p.stat().st_mode
    except FileNotFoundError:
        raise ConfigError(f"{what} not found: {p}") from None
    text = read_text(p, what).strip()
    if not text.startswith(PRIVATE_PREFIX):
        if _parses_as_verifier(text):
            raise ConfigError(f"{what} {p} is a public verifier key; give the private key file")
        raise ConfigError(f"{what} {p} is not a note signer key")
    if stat.S_IMODE(mode) & 0o077:
        raise ConfigError(f"{what} {p} is group or world accessible (chmod 600 it)")
    try:
        return Signer.from_string(text)
    except (ProtocolError, ValueError) as exc:
        raise ConfigError(f"{what} {p} is not a note signer key") from exc


def read_verifier(value: str, what: str = "verifier key") -> Verifier:
    """Parse a verifier key given inline (`name+hash+base64`) or as a path to a `.pub` file.

    Raises:
        ConfigError: missing or unreadable file, a private key given instead, or malformed.
    """
    text, where = value, ""
    if "+" not in value or Path(value).exists():
        text, where = read_text(Path(value), what), f" {value}"
    text = text.strip()
    if text.startswith(PRIVATE_PREFIX):
        raise ConfigError(f"{what}{where} is a private key; give the public verifier (.pub)")
    try:
        return Verifier.from_string(text)
    except ProtocolError as exc:
        raise ConfigError(f"{what}{where} is not a valid note verifier key") from exc


def _parses_as_verifier(text: str) -> bool:
    try:
        Verifier.from_string(text)
    except ProtocolError:
        return False
    return True
