"""Key files for the log key and the release-signing key (an I/O shell).

Both keys are Ed25519 in the C2SP note formats: the private file holds one line
`PRIVATE+KEY+name+hash+base64(0x01 || seed)` and must not be group- or world-accessible
(mode 0600); `FILE.pub` holds the verifier key `name+hash+base64(0x01 || public key)`.
Error messages name the file, never its contents.
"""

from __future__ import annotations

import stat
from pathlib import Path
from typing import TYPE_CHECKING

from hushcc.errors import ConfigError, ProtocolError
from hushcc.files import create_exclusive
from transparency_log.note import Signer, Verifier

if TYPE_CHECKING:
    import os


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


def read_signer(path: str | os.PathLike[str]) -> Signer:
    """Read a private key file, refusing one that is missing or too permissive.

    Raises:
        ConfigError: missing, group/world accessible, or malformed.
    """
    p = Path(path)
    try:
        mode = p.stat().st_mode
    except FileNotFoundError as exc:
        raise ConfigError(f"key file {p} does not exist") from exc
    if stat.S_IMODE(mode) & 0o077:
        raise ConfigError(f"key file {p} is group or world accessible (chmod 600 it)")
    try:
        return Signer.from_string(p.read_text())
    except (ProtocolError, ValueError) as exc:
        raise ConfigError(f"key file {p} is not a note signer key") from exc


def read_verifier(value: str) -> Verifier:
    """Parse a verifier key given inline (`name+hash+base64`) or as a path to a `.pub` file.

    Raises:
        ConfigError: missing file or malformed key.
    """
    text = value
    if "+" not in value or Path(value).is_file():
        try:
            text = Path(value).read_text()
        except OSError as exc:
            raise ConfigError(f"verifier key file {value} cannot be read") from exc
    try:
        return Verifier.from_string(text.strip())
    except ProtocolError as exc:
        raise ConfigError("not a valid verifier key") from exc
