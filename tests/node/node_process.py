"""Start `hushcc node serve` as a real subprocess (as a user would) and talk to it over loopback."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import urllib.request
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import aiohttp

from app.services import start_service
from ohttp.keyconfig import KeyConfig, parse_key_configs

if TYPE_CHECKING:
    from pathlib import Path

START_TIMEOUT = 120.0


@dataclass
class NodeProcess:
    url: str
    process: subprocess.Popen[str]
    stderr_path: Path
    workdir: Path
    metrics_url: str = ""
    stopped: bool = field(default=False)

    def audit_lines(self) -> list[dict[str, object]]:
        return [json.loads(line) for line in self.stderr_path.read_text().splitlines() if line]

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            return self.process.wait(timeout=timeout)
        finally:
            self.stopped = True

    def get(self, path: str) -> bytes:
        with urllib.request.urlopen(self.url + path, timeout=30) as r:
            body: bytes = r.read()
            return body

    def key_config(self) -> KeyConfig:
        bundle = json.loads(self.get("/attestation"))
        import base64  # noqa: PLC0415

        return parse_key_configs(base64.b64decode(bundle["key_config"]))[0]

    def metrics(self) -> dict[str, float]:
        with urllib.request.urlopen(self.metrics_url + "/metrics", timeout=30) as r:
            text = r.read().decode()
        out = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, value = line.rsplit(" ", 1)
                out[name] = float(value)
        return out


def start_node(workdir: Path, *args: str, env: dict[str, str] | None = None) -> NodeProcess:
    """Start a node with cwd, HOME and TMPDIR in `workdir`; wait for its ready line."""
    workdir.mkdir(parents=True, exist_ok=True)
    child_env = {**os.environ, "HOME": str(workdir), "TMPDIR": str(workdir), **(env or {})}
    service = start_service(
        workdir.name, ["node", "serve", "--host", "127.0.0.1", "--port", "0",
                       "--metrics-port", "0", *args],
        workdir=workdir.parent, env=child_env, cwd=workdir, timeout=START_TIMEOUT)
    assert service.url.startswith("http://127.0.0.1:")
    node = NodeProcess(service.url, service.process, service.stderr_path, workdir)
    port = next(e["port"] for e in node.audit_lines() if e["event"] == "metrics.listening")
    node.metrics_url = f"http://127.0.0.1:{port}"
    return node


def serve_refused(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """`hushcc node serve --port 0 ARGS` run to its end (for start-ups that must be refused)."""
    return subprocess.run([sys.executable, "-m", "app", "node", "serve", "--port", "0", *args],
                          capture_output=True, text=True, timeout=120, cwd=cwd, check=False)


@dataclass
class Answer:
    status: int
    content_type: str
    chunks: list[bytes]


async def post(session: aiohttp.ClientSession, node: NodeProcess, body: bytes, media: str
               ) -> Answer:
    """POST /ohttp and collect the HTTP chunks exactly as the node flushed them."""
    async with session.post(node.url + "/ohttp", data=body,
                            headers={"Content-Type": media}) as response:
        chunks = []
        buffer = b""
        async for data, end_of_chunk in response.content.iter_chunks():
            buffer += data
            if end_of_chunk and buffer:  # the empty last-chunk marker is not a chunk
                chunks.append(buffer)
                buffer = b""
        if buffer:
            chunks.append(buffer)
        return Answer(response.status, response.content_type, chunks)


def post_sync(node: NodeProcess, body: bytes, media: str) -> Answer:
    async def go() -> Answer:
        async with aiohttp.ClientSession() as session:
            return await post(session, node, body, media)
    return asyncio.run(go())
