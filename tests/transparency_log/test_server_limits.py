"""`hushcc log serve` as a real process: config refusals, slow clients, the cap, SIGINT/SIGTERM.

Issue 9 item 13 (an absolute receipt deadline and a connection cap) and issue 11 item 1 (a
runaway server: unchecked config, signals ignored). Every server is started as a user would and
stopped by PID; every loop here is bounded in time.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
import urllib.request
from typing import TYPE_CHECKING

import pytest

from tests.transparency_log.tlog_helpers import release
from transparency_log.entry import sign_entry
from transparency_log.keys import write_key_pair
from transparency_log.note import Signer

if TYPE_CHECKING:
    from pathlib import Path

HUSHCC = [sys.executable, "-m", "app"]


def _keys(tmp_path: Path) -> tuple[Path, Path, Signer]:
    write_key_pair(tmp_path / "log.key", Signer.generate("limits.test.log"))
    rel = Signer.generate("release.test")
    write_key_pair(tmp_path / "rel.key", rel)
    return tmp_path / "log.key", tmp_path / "rel.key.pub", rel


def _config(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "log.toml"
    path.write_text(f'log_key = "{tmp_path / "log.key"}"\n'
                    f'release_key = "{tmp_path / "rel.key.pub"}"\n{body}')
    return path


def _start(tmp_path: Path, config: Path) -> tuple[subprocess.Popen[str], str]:
    with (tmp_path / "serve.err").open("a") as errors:  # a file: a full pipe would block it
        proc = subprocess.Popen(
            [*HUSHCC, "log", "serve", "--port", "0", "--state-dir", str(tmp_path / "state"),
             "--config", str(config)], stdout=subprocess.PIPE, stderr=errors, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("listening on http://127.0.0.1:"):
        proc.kill()
        proc.wait(10)
        pytest.fail(f"server did not start: {line!r}")
    return proc, line.split()[-1]


def _stop(proc: subprocess.Popen[str], sig: signal.Signals = signal.SIGTERM) -> int:
    proc.send_signal(sig)
    try:
        code = proc.wait(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()
    return code


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as response:
        body: bytes = response.read()
        return body


@pytest.mark.parametrize(("setting", "named"), [
    ("max_batch = 0", "max_batch"), ("max_batch = -3", "max_batch"),
    ("resign_interval = 0", "resign_interval"), ("resign_interval = -1.5", "resign_interval"),
    ('max_batch = "many"', "max_batch"), ("max_btach = 8", "max_btach"),
])
def test_serve_refuses_a_config_that_would_run_away(tmp_path: Path, setting: str,
                                                    named: str) -> None:
    """max_batch = 0 once hung every add while re-signing at 1 MB/s; a typo was ignored."""
    _keys(tmp_path)
    result = subprocess.run(
        [*HUSHCC, "log", "serve", "--port", "0", "--state-dir", str(tmp_path / "state"),
         "--config", str(_config(tmp_path, setting + "\n"))],
        capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 1
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("hushcc: error:")
    assert named in lines[0]
    assert not (tmp_path / "state").exists()  # refused before anything was created


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_sigint_and_sigterm_drain_and_exit_0(tmp_path: Path, sig: signal.Signals) -> None:
    """Positive twin of the refusals: the smallest legal values serve, add, and stop cleanly."""
    _, _, rel = _keys(tmp_path)
    config = _config(tmp_path, "max_batch = 1\nresign_interval = 1\n")
    proc, url = _start(tmp_path, config)
    try:
        request = urllib.request.Request(url + "/add", data=sign_entry(release(1), rel))
        with urllib.request.urlopen(request, timeout=10) as response:
            assert json.loads(response.read())["index"] == 0
        time.sleep(1.5)  # let the re-signer run at least once at its smallest interval
    finally:
        assert _stop(proc, sig) == 0
    proc, url = _start(tmp_path, config)  # the append was durable: the restarted log has it
    try:
        assert _get(url + "/checkpoint").split(b"\n")[1] == b"1"
    finally:
        assert _stop(proc, sig) == 0


SLOW_HEAD = (b"", b"GET /checkpoint HTTP/1.1\r\nHost: log\r\nX-Slow: " + b"a" * 100)
SLOW_BODY = (b"POST /add HTTP/1.1\r\nHost: log\r\nContent-Length: 200\r\n\r\n", b"{" * 200)


async def _trickler(port: int, interval: float, bound: float, parts: tuple[bytes, bytes]
                    ) -> float:
    """Send `parts[0]` at once, then `parts[1]` one byte per `interval`; return when the server
    cut us (monotonic time), or inf if it never did within `bound` seconds."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    fast, slow = parts
    writer.write(fast)
    deadline = time.monotonic() + bound
    try:
        for byte in slow:
            writer.write(bytes([byte]))
            try:
                if await asyncio.wait_for(reader.read(1), interval) == b"":
                    return time.monotonic()
            except TimeoutError:
                pass
            if time.monotonic() > deadline:
                break
    except ConnectionError:
        return time.monotonic()
    finally:
        writer.close()
    return float("inf")


async def _normal_get(port: int) -> tuple[bytes, float]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /checkpoint HTTP/1.1\r\nHost: log\r\nConnection: close\r\n\r\n")
    response = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    return response, time.monotonic()


def test_500_trickling_connections_are_cut_at_the_deadline_while_others_are_served(
        tmp_path: Path) -> None:
    """Slowloris: 500 clients sending a byte every 2 s once held their sockets indefinitely."""
    _keys(tmp_path)
    timeout = 3.0
    proc, url = _start(tmp_path, _config(tmp_path, f"receipt_timeout = {timeout}\n"
                                                   "max_connections = 600\n"))
    port = int(url.rsplit(":", 1)[1])

    async def main() -> tuple[list[float], float, float, bytes]:
        start = time.monotonic()
        slow = (SLOW_HEAD, SLOW_BODY)  # half trickle their headers, half their body
        attackers = [asyncio.ensure_future(_trickler(port, 2.0, 20.0, slow[i % 2]))
                     for i in range(500)]
        await asyncio.sleep(1.0)
        response, served = await _normal_get(port)
        cut = await asyncio.gather(*attackers)
        return cut, start, served, response

    try:
        cut, start, served, response = asyncio.run(main())
    finally:
        assert _stop(proc) == 0
    assert response.startswith(b"HTTP/1.1 200 ")
    assert "Traceback" not in (tmp_path / "serve.err").read_text()  # nothing logged per attacker
    assert served < min(cut)  # the normal client was served while all 500 were still open
    elapsed = sorted(t - start for t in cut)
    assert elapsed[-1] < timeout + 4.0, elapsed[-5:]  # every one cut, none left trickling
    assert elapsed[0] > timeout - 0.5, elapsed[:5]  # at the deadline, not before


def test_connections_beyond_the_cap_are_closed_at_once(tmp_path: Path) -> None:
    _keys(tmp_path)
    proc, url = _start(tmp_path, _config(tmp_path, "receipt_timeout = 60\n"
                                                   "max_connections = 20\n"))
    port = int(url.rsplit(":", 1)[1])

    async def main() -> tuple[list[bytes], bytes]:
        held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(20)]
        for _, writer in held:
            writer.write(b"G")
        await asyncio.sleep(0.5)
        refused = []
        for _ in range(5):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET /checkpoint HTTP/1.1\r\nHost: log\r\n\r\n")
            try:
                refused.append(await asyncio.wait_for(reader.read(), 5))
            except ConnectionError:
                refused.append(b"")
            writer.close()
        for _, writer in held[:5]:
            writer.close()
        await asyncio.sleep(0.5)
        response, _ = await _normal_get(port)  # positive twin: below the cap again, served
        for _, writer in held[5:]:
            writer.close()
        return refused, response

    try:
        refused, response = asyncio.run(main())
    finally:
        assert _stop(proc) == 0
    assert refused == [b""] * 5
    assert response.startswith(b"HTTP/1.1 200 ")
