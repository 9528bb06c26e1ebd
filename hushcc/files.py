"""Reading input files with one-line errors, creating secret files (never replacing one), hashing.

Not pure (it reads and writes files). Readers raise `ConfigError` naming what the file is for
(missing, a directory, empty, not UTF-8), never a traceback. Secret files get their mode at
creation (`O_CREAT | O_EXCL`), so a private key is never, even briefly, readable by others, and an
existing key is never overwritten.
"""

from __future__ import annotations

import hashlib
import os
from typing import TYPE_CHECKING

from hushcc.errors import ConfigError

if TYPE_CHECKING:
    from pathlib import Path


def create_exclusive(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Write `data` to a new file created with `mode`.

    Raises:
        ConfigError: `path` already exists.
    """
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except FileExistsError:
        raise ConfigError(f"refusing to overwrite existing file: {path}") from None
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def read_bytes(path: Path, what: str, *, allow_empty: bool = False) -> bytes:
    """Read a whole input file, naming `what` it is for in every error.

    Raises:
        ConfigError: missing, a directory, unreadable, or empty (unless `allow_empty`: an
            empty policy file, say, means "all defaults").
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{what} not found: {path}") from None
    except IsADirectoryError:
        raise ConfigError(f"{what} is a directory, not a file: {path}") from None
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc.strerror}") from None
    if not data and not allow_empty:
        raise ConfigError(f"{what} is empty: {path}")
    return data


def read_text(path: Path, what: str, *, allow_empty: bool = False) -> str:
    """Read a whole UTF-8 input file, naming `what` it is for in every error.

    Raises:
        ConfigError: as `read_bytes`, or the file is not UTF-8 text.
    """
    try:
        return read_bytes(path, what, allow_empty=allow_empty).decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{what} is not UTF-8 text: {path}") from None


def sha256_file(path: Path) -> str:
    """The SHA-256 of a file's contents, hex, read in chunks (an image is hundreds of MiB)."""
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()
