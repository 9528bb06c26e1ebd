"""The node staples its release proof fetched from a real log at start-up; a client verifies the
whole bundle (evidence, binding v2 with node_id, log inclusion) before sending (L9, K1)."""

from __future__ import annotations

import base64
import json
import select
import subprocess
import sys
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import pytest

from attestation.gpu import GpuPolicy
from attestation.gpu.simulated import SimulatedGpu
from attestation.measure import measure_sources, source_root
from attestation.policy import Policy
from attestation.report import AttestationError
from attestation.simulated import WITH_SIMULATED
from attestation.simulated_node import release_entry
from attestation.verify_bundle import StapledLogVerifier, verify_bundle
from tests.node.node_client import CHAT, inner, open_whole, seal
from tests.node.node_process import post_sync, start_node
from transparency_log.entry import ReleaseEntry, sign_entry
from transparency_log.keys import write_key_pair
from transparency_log.note import Signer

if TYPE_CHECKING:
    from pathlib import Path


def start_log(tmp: Path) -> tuple[subprocess.Popen[bytes], str, str, Signer]:
    write_key_pair(tmp / "log.key", Signer.generate("test.hushcc/log"))
    release_signer = Signer.generate("test.hushcc/release")
    write_key_pair(tmp / "release.key", release_signer)
    log = subprocess.Popen(
        [sys.executable, "-m", "app", "log", "serve", "--host", "127.0.0.1", "--port", "0",
         "--state-dir", str(tmp / "state"), "--log-key", str(tmp / "log.key"),
         "--release-key", (tmp / "release.key.pub").read_text().strip()],
        stdout=subprocess.PIPE)
    assert log.stdout is not None
    ready, _, _ = select.select([log.stdout], [], [], 60)
    assert ready
    line = log.stdout.readline().decode().strip()
    assert line.startswith("listening on ")
    return log, line.removeprefix("listening on "), (tmp / "log.key.pub").read_text().strip(), \
        release_signer


def verify(bundle: bytes, log_key: str) -> object:
    now = datetime.now(UTC)
    return verify_bundle(
        bundle, policy=Policy(allow_simulated=True, log_key=log_key), now=now,
        log=StapledLogVerifier(log_key, now),
        gpu_policy=GpuPolicy(reference_measurements=SimulatedGpu().reference_measurements()),
        cpu_trust=WITH_SIMULATED)


def test_bundle_from_log_stapled_release_verifies(tmp_path: Path) -> None:
    log, log_url, log_key, release_signer = start_log(tmp_path)
    try:
        measurement = measure_sources(source_root())[0].digest
        entry = ReleaseEntry.from_bytes(release_entry(measurement))
        import urllib.request  # noqa: PLC0415

        add = urllib.request.Request(log_url + "/add", data=sign_entry(entry, release_signer),
                                     method="POST")
        with urllib.request.urlopen(add, timeout=30) as response:
            index = json.loads(response.read())["index"]
        release = tmp_path / "release.json"  # only entry + index: the node fetches the proof
        release.write_text(json.dumps({"entry": base64.b64encode(entry.to_bytes()).decode(),
                                       "index": index}))
        node = start_node(tmp_path / "node", "--tiny-model", "--release", str(release),
                          "--log-url", log_url)
    finally:
        log.terminate()
        log.wait(timeout=30)
    try:  # the log is gone: the node never contacts it per request (L9)
        bundle = node.get("/attestation")
        verified = verify(bundle, log_key)
        assert verified.node_id.hex() == json.loads(bundle)["node_id"]  # type: ignore[attr-defined]
        with pytest.raises(AttestationError):  # twin: another pinned log key refuses it
            verify(bundle, Signer.generate("other.hushcc/log").verifier().to_string())
        body, ctx = seal(node.key_config(), inner(CHAT, {"messages": [
            {"role": "user", "content": "hi"}], "max_tokens": 2}), chunked=False)
        assert open_whole(ctx, b"".join(post_sync(node, body, "message/ohttp-req").chunks)
                          ).status == 200
        events = [e["event"] for e in node.audit_lines()]
        assert "release.refreshed" in events
    finally:
        assert node.stop() == 0
        time.sleep(0)
