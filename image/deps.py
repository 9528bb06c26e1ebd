"""The image's pinned dependency set: a hash lock over wheels, installed by hash (I/O shell).

Lock file: pip's requirements format, one pinned wheel a line, `name==version
--hash=sha256:HEX`, sorted by name; `lock_from_wheels` writes it from a directory of wheels
(e.g. the ones `pip download`/`pip wheel` left in a local cache or index). `install` runs
`pip install --require-hashes --no-deps --no-index --only-binary :all: --find-links WHEELS
--target DEST --no-compile`: nothing comes from the network, nothing is resolved, nothing is
compiled to `.pyc`, and a wheel whose hash is not in the lock is refused by pip.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
from typing import TYPE_CHECKING

from hushcc.errors import ConfigError

if TYPE_CHECKING:
    from pathlib import Path

_WHEEL = re.compile(r"^(?P<name>[A-Za-z0-9_.]+)-(?P<version>[A-Za-z0-9_.!+]+)-.+\.whl$")
_LINE = re.compile(r"^(?P<name>[A-Za-z0-9_.-]+)==(?P<version>\S+) --hash=sha256:[0-9a-f]{64}$")


def lock_from_wheels(wheels: Path) -> str:
    """The lock text pinning every wheel in `wheels` by version and SHA-256.

    Raises:
        ConfigError: no wheels, an unparseable wheel name, or two wheels of one project.
    """
    lines: dict[str, str] = {}
    for wheel in sorted(wheels.glob("*.whl")):
        match = _WHEEL.match(wheel.name)
        if match is None:
            raise ConfigError(f"not a wheel file name: {wheel.name}")
        name = re.sub(r"[-_.]+", "-", match["name"]).lower()
        if name in lines:
            raise ConfigError(f"two wheels of {name} in {wheels}: pin one")
        digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
        lines[name] = f"{name}=={match['version']} --hash=sha256:{digest}"
    if not lines:
        raise ConfigError(f"no wheels in {wheels}")
    return "".join(lines[n] + "\n" for n in sorted(lines))


def parse_lock(text: str) -> list[str]:
    """The pinned project names of a lock, checking every line is pinned with a hash.

    Raises:
        ConfigError: a line is not `name==version --hash=sha256:HEX`.
    """
    names = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        match = _LINE.match(line.strip())
        if match is None:
            raise ConfigError(f"lock line {number} is not `name==version --hash=sha256:HEX`")
        names.append(match["name"])
    return names


def install(lock: Path, wheels: Path, target: Path) -> None:
    """Install the locked wheels into `target` with pip, by hash, offline.

    Raises:
        ConfigError: pip refuses (a hash mismatch, a missing wheel) or fails.
    """
    argv = [sys.executable, "-m", "pip", "install", "--require-hashes", "--no-deps",
            "--no-index", "--only-binary", ":all:", "--find-links", str(wheels),
            "--target", str(target), "--no-compile", "--no-cache-dir",
            "--disable-pip-version-check", "--no-warn-script-location", "--quiet",
            "-r", str(lock)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env.update({"LC_ALL": "C", "TZ": "UTC", "PYTHONHASHSEED": "0",
                "PYTHONDONTWRITEBYTECODE": "1"})
    try:
        subprocess.run(argv, env=env, check=True, capture_output=True)  # noqa: S603
    except subprocess.CalledProcessError as exc:
        lines = exc.stderr.decode(errors="replace").strip().splitlines()
        reason = next((ln.strip() for ln in lines if "ERROR" in ln or "Error" in ln),
                      lines[-1].strip() if lines else "no output")
        raise ConfigError(f"pip install of the locked dependencies failed: {reason}") from exc
