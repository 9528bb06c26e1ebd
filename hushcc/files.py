"""Creating secret files: new, with the given mode, never replacing an existing one.

Not pure (it writes files). The mode is applied at creation (`O_CREAT | O_EXCL`), so a private
key is never, even briefly, readable by others, and an existing key is never overwritten.
"""

from __future__ import annotations

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
