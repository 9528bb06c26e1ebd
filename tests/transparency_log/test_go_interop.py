"""Go's reference tile-log client reads our log (issue 3: "standard tlog-tiles tooling").

`tlog_go/main.go` uses golang.org/x/mod's `sumdb/note` and `sumdb/tlog` (the code C2SP
tlog-checkpoint / tlog-tiles / signed-note were specified from) against a real log server on
loopback: it verifies the checkpoint note, recomputes the root from hash tiles alone, proves every
entry's inclusion and the consistency with an earlier checkpoint. Its only adaptations are the
two C2SP path changes (no height segment; `entries` data tiles with length prefixes).

Needs Go and Debian's golang-golang-x-mod-dev (the Makefile installs both when run as root).
"""

from __future__ import annotations

import asyncio
import base64
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from aiohttp.test_utils import TestServer

from tests.transparency_log.tlog_helpers import release
from transparency_log.note import Signer
from transparency_log.server import LogServer
from transparency_log.storage import LogStorage

GOPATH = Path("/usr/share/gocode")
SOURCE = Path(__file__).with_name("tlog_go") / "main.go"

pytestmark = pytest.mark.skipif(
    shutil.which("go") is None or not (GOPATH / "src/golang.org/x/mod/sumdb/tlog").is_dir(),
    reason="Go and golang-golang-x-mod-dev are not installed (make test installs them as root)",
)


@pytest.fixture(scope="module")
def tlogcheck(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("go")
    env = dict(os.environ, GO111MODULE="off", GOPATH=str(GOPATH), GOCACHE=str(out / "cache"))
    subprocess.run(["go", "build", "-o", str(out / "tlogcheck"), str(SOURCE)], env=env,
                   check=True, capture_output=True, timeout=300)
    return out / "tlogcheck"


def _serve_and_check(tmp_path: Path, tlogcheck: Path, *, vkey_of: str = "log",
                     forged_old_root: bool = False) -> subprocess.CompletedProcess[bytes]:
    log = Signer.generate("interop.test.hushcc")
    other = Signer.generate("interop.test.hushcc")  # same name, another key

    async def main() -> subprocess.CompletedProcess[bytes]:
        storage = LogStorage(tmp_path, log)
        entries = [release(i).to_bytes() for i in range(300)]  # one full tile, one partial
        storage.append_batch(entries[:10])
        old_note = storage.checkpoint_note
        storage.append_batch(entries[10:])
        server = TestServer(LogServer(storage, Signer.generate("rel").verifier()).app(),
                            host="127.0.0.1")
        await server.start_server()
        try:
            vkey = (log if vkey_of == "log" else other).verifier().to_string()
            old_root = old_note.split(b"\n")[2].decode()
            if forged_old_root:  # a split view: size 10 with another root
                old_root = base64.b64encode(bytes(32)).decode()
            proc = await asyncio.create_subprocess_exec(
                str(tlogcheck), "-url", str(server.make_url("")), "-vkey", vkey,
                "-old-size", "10", "-old-root", old_root,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            out, err = await asyncio.wait_for(proc.communicate(), timeout=120)
            return subprocess.CompletedProcess([], proc.returncode or 0, out, err)
        finally:
            await server.close()
            storage.close()

    return asyncio.run(main())


def test_go_reference_client_verifies_checkpoint_tiles_and_proofs(tmp_path, tlogcheck):
    result = _serve_and_check(tmp_path, tlogcheck)
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout.decode().startswith("ok: 300 entries")


def test_go_reference_client_rejects_a_checkpoint_under_another_key(tmp_path, tlogcheck):
    result = _serve_and_check(tmp_path, tlogcheck, vkey_of="other")
    assert result.returncode == 1
    assert "checkpoint note" in result.stderr.decode()


def test_go_reference_client_rejects_a_forked_earlier_checkpoint(tmp_path, tlogcheck):
    result = _serve_and_check(tmp_path, tlogcheck, forged_old_root=True)
    assert result.returncode == 1
    assert "consistency with size 10" in result.stderr.decode()
