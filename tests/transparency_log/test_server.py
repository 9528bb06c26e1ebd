"""The log server on a real loopback aiohttp server: tiles API, proofs, POST /add, batching."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from aiohttp import ClientSession
from aiohttp.test_utils import TestServer

from app.cli import main
from hushcc.errors import VerificationError
from tests.transparency_log.tlog_helpers import release
from transparency_log import merkle
from transparency_log.client import verify_stapled_inclusion
from transparency_log.config import ServerConfig
from transparency_log.entry import ReleaseEntry, sign_entry
from transparency_log.note import Signer
from transparency_log.server import FULL_TILE_CACHE, LogServer
from transparency_log.storage import FileOps, LogStorage
from transparency_log.tiles import TileReader, decode_bundle

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence

ORIGIN = "server.test.log"
REPO = Path(__file__).resolve().parents[2]


def _run(tmp_path: Path, body: Callable[[ClientSession, str, LogServer], Awaitable[None]],
         *, ops: FileOps | None = None, clock: Callable[[], float] = time.time,
         config: ServerConfig | None = None) -> None:
    log, rel = Signer.generate(ORIGIN), Signer.generate("release.test")

    async def main() -> None:
        storage = LogStorage(tmp_path, log, ops=ops, clock=clock)
        server = LogServer(storage, rel.verifier(), config)
        test_server = TestServer(server.app(), host="127.0.0.1")
        await test_server.start_server()
        try:
            async with ClientSession() as session:
                server.release_signer = rel  # type: ignore[attr-defined]
                server.log_signer = log  # type: ignore[attr-defined]
                await body(session, str(test_server.make_url("")).rstrip("/"), server)
        finally:
            await test_server.close()
            storage.close()

    asyncio.run(main())


def test_add_returns_verifiable_stapled_proof_and_rejects_bad_signatures(tmp_path: Path) -> None:
    async def body(s: ClientSession, url: str, server: LogServer) -> None:
        rel: Signer = server.release_signer  # type: ignore[attr-defined]
        log: Signer = server.log_signer  # type: ignore[attr-defined]
        entry = release(1)
        async with s.post(url + "/add", data=sign_entry(entry, rel)) as r:
            assert r.status == 200
            answer = await r.json()
        proof = [base64.b64decode(h) for h in answer["inclusion_proof"]]
        cp = verify_stapled_inclusion(entry.to_bytes(), answer["index"], answer["checkpoint"],
                                      proof, log_verifier_key=log.verifier().to_string())
        assert cp.size == 1
        # Signed by a different key, tampered, malformed: all 4xx, nothing appended.
        other = Signer.generate("release.test")
        async with s.post(url + "/add", data=sign_entry(entry, other)) as r:
            assert r.status == 403
            assert "release" in (await r.json())["error"]
        tampered = json.loads(sign_entry(entry, rel))
        tampered["entry"] = base64.b64encode(release(2).to_bytes()).decode()
        async with s.post(url + "/add", data=json.dumps(tampered)) as r:
            assert r.status == 403
        async with s.post(url + "/add", data=b"not json") as r:
            assert r.status == 400
        async with s.post(url + "/add", data=b"x" * (300 * 1024)) as r:
            assert r.status in (400, 413)
        assert server.storage.size == 1

    _run(tmp_path, body)


def test_concurrent_adds_are_batched(tmp_path: Path) -> None:
    async def body(s: ClientSession, url: str, server: LogServer) -> None:
        rel: Signer = server.release_signer  # type: ignore[attr-defined]
        bodies = [sign_entry(release(i), rel) for i in range(200)]

        async def add(b: bytes) -> int:
            async with s.post(url + "/add", data=b) as r:
                assert r.status == 200
                index: int = (await r.json())["index"]
                return index

        indices = await asyncio.gather(*(add(b) for b in bodies))
        assert sorted(indices) == list(range(200))
        assert server.batcher is not None
        assert server.batcher.batches < 200  # many entries per fsync + checkpoint
        for i, b in zip(indices, bodies, strict=True):
            assert server.storage.entry(i) == base64.b64decode(json.loads(b)["entry"])

    _run(tmp_path, body)


def test_tiles_api_and_proofs_from_tiles_alone(tmp_path: Path) -> None:
    async def body(s: ClientSession, url: str, server: LogServer) -> None:
        rel: Signer = server.release_signer  # type: ignore[attr-defined]
        entries = [release(i) for i in range(300)]
        server.storage.append_batch([e.to_bytes() for e in entries[:10]])
        server.storage.append_batch([e.to_bytes() for e in entries[10:260]])

        async def add(e: ReleaseEntry) -> None:
            async with s.post(url + "/add", data=sign_entry(e, rel)) as r:
                assert r.status == 200

        for e in entries[260:]:  # in order, so entry i is at index i
            await add(e)
        async with s.get(url + "/checkpoint") as r:
            assert r.headers["Cache-Control"] == "no-cache"
            assert r.headers["Content-Type"] == "text/plain; charset=utf-8"  # tlog-tiles
            note = await r.read()
        assert note == server.storage.checkpoint_note
        size = server.storage.size
        tiles: dict[str, bytes] = {}
        for path in ("tile/0/000", "tile/0/001.p/44", "tile/1/000.p/1",
                     "tile/entries/000", "tile/entries/001.p/44"):
            async with s.get(f"{url}/{path}") as r:
                assert r.status == 200, path
                cache = r.headers["Cache-Control"]
                assert (cache == FULL_TILE_CACHE) == (".p/" not in path)
                assert r.headers["Content-Type"] == "application/octet-stream"
                tiles[path] = await r.read()
        assert decode_bundle(tiles["tile/entries/000"]) == [e.to_bytes() for e in entries[:256]]
        async with s.get(f"{url}/tile/entries/000", headers={"Accept-Encoding": "gzip"}) as r:
            assert r.headers["Content-Encoding"] == "gzip"
            assert await r.read() == tiles["tile/entries/000"]  # transparently decompressed
        assert len(decode_bundle(tiles["tile/entries/001.p/44"])) == 44
        for missing in ("tile/0/001", "tile/0/002.p/1", "tile/0/001.p/45", "tile/entries/001",
                        "tile/0/1", "tile/1/000"):
            async with s.get(f"{url}/{missing}") as r:
                assert r.status == 404, missing
        reader = TileReader(lambda p: tiles[p], size)
        assert merkle.root_hash(reader, size) == server.storage.tree.root()
        async with s.get(f"{url}/proof/inclusion?index=123&size={size}") as r:
            hashes = [base64.b64decode(h) for h in (await r.json())["hashes"]]
        assert hashes == merkle.inclusion_proof(reader, 123, size)
        async with s.get(f"{url}/proof/consistency?from=10&to={size}") as r:
            hashes = [base64.b64decode(h) for h in (await r.json())["hashes"]]
        assert hashes == merkle.consistency_proof(reader, 10, size)
        for bad in ("inclusion?index=300&size=300", "inclusion?index=-1&size=3",
                    f"inclusion?index=1&size={size + 1}", "consistency?from=0&to=3",
                    "consistency?from=5&to=4", "inclusion?index=a&size=3"):
            async with s.get(f"{url}/proof/{bad}") as r:
                assert r.status == 400, bad

    _run(tmp_path, body)


def test_cli_serve_subprocess_add_verify_and_sigterm(tmp_path: Path) -> None:  # noqa: PLR0915
    env = dict(os.environ, PYTHONPATH=str(REPO))
    hushcc = [sys.executable, "-m", "app"]

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*hushcc, *args], capture_output=True, text=True, env=env,
                              check=False, timeout=60)

    assert cli("log", "keygen", "--out", str(tmp_path / "log.key"), "--name", ORIGIN
               ).returncode == 0
    assert cli("log", "keygen", "--out", str(tmp_path / "rel.key"), "--name", "rel"
               ).returncode == 0
    (tmp_path / "lax.key").write_text((tmp_path / "log.key").read_text())
    (tmp_path / "lax.key").chmod(0o644)
    config = tmp_path / "log.toml"
    config.write_text(f'log_key = "{tmp_path / "lax.key"}"\n'
                      f'release_key = "{tmp_path / "rel.key.pub"}"\n')
    lax = cli("log", "serve", "--port", "0", "--state-dir", str(tmp_path / "st"),
              "--config", str(config))
    assert lax.returncode == 1
    assert "group or world" in lax.stderr
    proc = subprocess.Popen(
        [*hushcc, "log", "serve", "--port", "0", "--state-dir", str(tmp_path / "st"),
         "--config", str(config), "--log-key", str(tmp_path / "log.key")],
        stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("listening on http://127.0.0.1:")
        url = line.split()[-1]
        entry = tmp_path / "entry.json"
        entry.write_text(release(5).to_bytes().decode())
        added = cli("log", "add", str(entry), "--url", url, "--release-key",
                    str(tmp_path / "rel.key"), "--log-key", str(tmp_path / "log.key.pub"))
        assert added.returncode == 0, added.stderr
        assert "inclusion proof verified" in added.stderr
        assert json.loads(added.stdout)["index"] == 0  # the stapled release JSON
        state = tmp_path / "seen"
        first = cli("log", "verify", "--url", url, "--log-key", str(tmp_path / "log.key.pub"),
                    "--state", str(state))
        assert first.returncode == 0, first.stderr
        assert "tree size 1" in first.stdout
        other_entry = tmp_path / "entry7.json"
        other_entry.write_text(release(7).to_bytes().decode())
        cli("log", "add", str(other_entry), "--url", url, "--release-key",
            str(tmp_path / "rel.key"))
        second = cli("log", "verify", "--url", url, "--log-key", str(tmp_path / "log.key.pub"),
                     "--state", str(state))
        assert "consistent with the last seen tree of size 1" in second.stdout
        wrong = cli("log", "add", str(entry), "--url", url, "--release-key",
                    str(tmp_path / "log.key"))
        assert wrong.returncode == 1
        assert "403" in wrong.stderr
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
        assert proc.stdout is not None
        proc.stdout.close()
    # A different log at the same origin (a fork) is reported with both checkpoints.
    forked = subprocess.Popen(
        [*hushcc, "log", "serve", "--port", "0", "--state-dir", str(tmp_path / "fork"),
         "--log-key", str(tmp_path / "log.key"), "--release-key", str(tmp_path / "rel.key.pub")],
        stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert forked.stdout is not None
        url = forked.stdout.readline().split()[-1]
        other = tmp_path / "other.json"
        for n in (6, 8):
            other.write_text(release(n).to_bytes().decode())
            cli("log", "add", str(other), "--url", url, "--release-key", str(tmp_path / "rel.key"))
        report = cli("log", "verify", "--url", url, "--log-key", str(tmp_path / "log.key.pub"),
                     "--state", str(tmp_path / "seen"))
        assert report.returncode == 1
        assert "FORK DETECTED" in report.stdout
        assert "--- last seen checkpoint ---" in report.stdout
        assert "--- checkpoint now served ---" in report.stdout
        assert report.stdout.count(f"{ORIGIN}\n2\n") == 2  # both size-2 views, as evidence
    finally:
        forked.send_signal(signal.SIGTERM)
        assert forked.wait(timeout=20) == 0
        assert forked.stdout is not None
        forked.stdout.close()


@pytest.mark.parametrize("missing", ["log_key", "release_key"])
def test_cli_serve_requires_keys(tmp_path: Path, missing: str) -> None:
    args = ["log", "serve", "--port", "0", "--state-dir", str(tmp_path)]
    if missing != "log_key":
        args += ["--log-key", str(tmp_path / "nope.key")]
    assert main(args) == 1


def test_storage_failure_is_503_and_nothing_published(tmp_path: Path) -> None:
    import errno  # noqa: PLC0415

    class FailOnce(FileOps):
        armed = False

        def fsync(self, fd: int) -> None:
            if self.armed:
                self.armed = False
                raise OSError(errno.EIO, "injected")
            super().fsync(fd)

    ops = FailOnce()

    async def body(s: ClientSession, base: str, server: LogServer) -> None:
        rel: Signer = server.release_signer  # type: ignore[attr-defined]
        url = base + "/add"
        ops.armed = True
        async with s.post(url, data=sign_entry(release(1), rel)) as r:
            assert r.status == 503
        assert server.storage.size == 0
        async with s.post(url, data=sign_entry(release(2), rel)) as r:
            assert r.status == 200  # the twin: the log recovered and appends again
            assert (await r.json())["index"] == 0

    _run(tmp_path, body, ops=ops)


def test_idle_log_is_resigned_with_fresh_timestamp(tmp_path: Path) -> None:
    from transparency_log.client import LogTrust, verify_checkpoint  # noqa: PLC0415

    clock = [1_000_000.0]

    async def body(_s: ClientSession, _url: str, server: LogServer) -> None:
        storage = server.storage
        trust = LogTrust(storage.signer.verifier(), ORIGIN, max_age=60)
        first = storage.checkpoint_note
        assert verify_checkpoint(first, trust, now=1_000_030).size == 0
        clock[0] = 1_000_100.0
        with pytest.raises(VerificationError):
            verify_checkpoint(first, trust, now=1_000_100)  # stale without a re-sign
        for _ in range(200):
            await asyncio.sleep(0.02)
            if storage.checkpoint_note != first:
                break
        assert verify_checkpoint(storage.checkpoint_note, trust, now=1_000_100).size == 0

    _run(tmp_path, body, clock=lambda: clock[0], config=ServerConfig(resign_interval=1.0))


def test_keygen_never_prints_the_private_key(tmp_path: Path, canaries: object) -> None:
    from transparency_log.keys import read_signer  # noqa: PLC0415

    assert main(["log", "keygen", "--out", str(tmp_path / "k"), "--name", "n.example"]) == 0
    signer = read_signer(tmp_path / "k")
    # PRIVATE+KEY+name+hash+base64: split at the four field separators only, since the
    # base64 field itself may contain '+' (a fragment of it would then be a too-short canary).
    secret = signer.to_string().split("+", 4)[4]
    assert len(secret) == 44  # base64 of 0x01 || 32-byte seed
    canaries.add(secret)  # type: ignore[attr-defined]
    assert (tmp_path / "k.pub").read_text().strip() == signer.verifier().to_string()
    assert secret not in repr(signer)
    assert (tmp_path / "k").stat().st_mode & 0o077 == 0
    assert main(["log", "keygen", "--out", str(tmp_path / "k")]) == 1  # never overwrites


def test_batcher_reports_any_writer_failure_and_keeps_running(tmp_path: Path) -> None:
    from transparency_log.server import Batcher  # noqa: PLC0415
    from transparency_log.storage import StorageError  # noqa: PLC0415

    storage = LogStorage(tmp_path, Signer.generate(ORIGIN))
    real = storage.append_batch
    calls = [0]

    def flaky(entries: Sequence[bytes]) -> tuple[int, bytes]:
        calls[0] += 1
        if calls[0] == 1:
            raise RuntimeError("unexpected")
        return real(entries)

    storage.append_batch = flaky  # type: ignore[method-assign]

    async def main() -> None:
        batcher = Batcher(storage)
        batcher.start()
        with pytest.raises(StorageError):
            await asyncio.wait_for(batcher.add(b"a"), 10)
        index, _ = await asyncio.wait_for(batcher.add(b"b"), 10)  # twin: the writer survived
        assert index == 0
        await batcher.close()

    asyncio.run(main())
    storage.close()
