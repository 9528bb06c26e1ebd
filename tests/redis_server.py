"""A real `redis-server` on loopback for the tests that share state through Redis.

Started from Debian's `redis-server` (installed by `make` as root) on a free loopback port with a
temporary working directory and persistence off; the tests wait for its "Ready to accept
connections" line, never a fixed sleep, and stop it by its PID. Where the binary is missing the
test fails (under CI) or skips with the reason.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

READY_LINE = "Ready to accept connections"
START_TIMEOUT = 20.0


@dataclass(slots=True)
class RedisServer:
    """One running redis-server: its URL and process, which a test may kill to inject a fault."""

    url: str
    port: int
    process: subprocess.Popen[str]

    def kill(self) -> None:
        """SIGKILL the server and reap it (the fault-injection tests' "Redis died mid-run")."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=10)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start_redis(workdir: Path) -> RedisServer:
    """Start redis-server on 127.0.0.1 and return once it accepts connections."""
    binary = shutil.which("redis-server")
    if binary is None:
        message = "redis-server not installed (`make` installs it as root)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    port = _free_port()
    process = subprocess.Popen(
        [binary, "--bind", "127.0.0.1", "--port", str(port), "--dir", str(workdir),
         "--save", "", "--appendonly", "no", "--protected-mode", "yes", "--loglevel", "notice"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    assert process.stdout is not None
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        if READY_LINE in line:
            return RedisServer(url=f"redis://127.0.0.1:{port}/0", port=port, process=process)
    process.kill()
    process.wait(timeout=10)
    pytest.fail("redis-server did not become ready")


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A fresh redis-server for one test, killed afterwards."""
    server = start_redis(tmp_path)
    try:
        yield server
    finally:
        server.kill()
