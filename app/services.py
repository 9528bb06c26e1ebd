"""Starting and stopping `hushcc <service> serve` processes, the way a user or operator does.

`start_service` runs `python -m app ARGS` (or another module's `-m` entry, for a test double
such as a stub gateway) in a new process, waits (never a fixed sleep) for the
one `listening on http://HOST:PORT` line every service prints when ready, and returns its URL;
`ServiceProcess.stop` sends SIGTERM, which drains and exits 0, and reaps the process. The demo
uses this; so can anything else that orchestrates services on one machine.

Invariants: a service that exits, or prints anything else first, or is not ready within the
timeout is killed and reported with the last lines of its stderr (the services log only
allowlisted, content-free events there).
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

from hushcc.errors import HushError

if TYPE_CHECKING:
    from collections.abc import Mapping
    from pathlib import Path

READY_PREFIX = "listening on "
START_TIMEOUT = 600.0  # a node loads its model first (about 20 s of CPU for SmolLM2)
STOP_TIMEOUT = 60.0


class ServiceError(HushError):
    """A service did not start, or did not stop cleanly."""


@dataclass
class ServiceProcess:
    """One running service: its name, URL, process and stderr file."""

    name: str
    url: str
    process: subprocess.Popen[str]
    stderr_path: Path

    def stop(self) -> int:
        """SIGTERM (drain), wait, return the exit status; SIGKILL only past the timeout."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            status = self.process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
            raise ServiceError(f"{self.name} did not stop on SIGTERM") from None
        return status

    def stderr_text(self) -> str:
        """Everything the service wrote to stderr so far (its allowlisted event lines)."""
        return self.stderr_path.read_text(errors="replace")


def start_service(  # noqa: PLR0913 - a process: name, command, folder, environment, cwd, patience
    name: str, args: list[str], *, workdir: Path, env: Mapping[str, str] | None = None,
    cwd: Path | None = None, timeout: float = START_TIMEOUT, module: str = "app",
) -> ServiceProcess:
    """Start `python -m MODULE ARGS` and return once it printed its `listening on` line.

    Raises:
        ServiceError: it exited or was not ready in time (its stderr tail is in the message).
    """
    stderr_path = workdir / f"{name}.stderr"
    with stderr_path.open("w") as stderr:
        process = subprocess.Popen(  # noqa: S603 - our own interpreter and entry point
            [sys.executable, "-m", module, *args], stdout=subprocess.PIPE, stderr=stderr,
            text=True, cwd=cwd, env=dict(env if env is not None else os.environ))
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:  # the ready line, then drain stdout so the pipe never fills
        if process.stdout is not None:
            with process.stdout:  # closed here at end of file, by its only reader
                lines.put(process.stdout.readline())
                for _ in process.stdout:
                    pass

    threading.Thread(target=pump, daemon=True, name=f"{name}-ready").start()
    try:
        line = lines.get(timeout=timeout)
    except queue.Empty:
        line = ""
    if not line.startswith(READY_PREFIX):
        process.kill()
        process.wait(timeout=10)
        tail = stderr_path.read_text(errors="replace")[-1500:]
        raise ServiceError(f"{name} did not start:\n{tail}")
    return ServiceProcess(name, line.removeprefix(READY_PREFIX).strip(), process, stderr_path)
