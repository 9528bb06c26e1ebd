"""`hushcc node serve` refusals: one-line errors, exit 1, never a ready line or a traceback."""

from __future__ import annotations

import base64
import json
from typing import TYPE_CHECKING

import pytest

from attestation.simulated_node import release_entry
from tests.node.node_process import serve_refused

if TYPE_CHECKING:
    from pathlib import Path


def release_file(tmp_path: Path) -> Path:
    path = tmp_path / "release.json"
    path.write_text(json.dumps({"entry": base64.b64encode(release_entry(bytes(48))).decode(),
                                "index": 0}))
    return path


@pytest.mark.parametrize(("args", "message"), [
    pytest.param(("--tee", "configfs-tsm", "--tiny-model"), "needs --release", id="hw-no-release"),
    pytest.param(("--tiny-model", "--log-url", "http://127.0.0.1:9"), "needs --release",
                 id="log-url-without-release"),
    pytest.param(("--model", "/nonexistent/model"), "model not found", id="missing-model"),
    pytest.param(("--tiny-model", "--release", "/nonexistent.json"), "release file not found",
                 id="missing-release"),
])
def test_refusals_are_one_line(tmp_path: Path, args: tuple[str, ...], message: str) -> None:
    done = serve_refused(*args, cwd=tmp_path)
    assert done.returncode == 1
    assert "listening on" not in done.stdout
    assert "Traceback" not in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("hushcc: error:")
    assert message in last


def test_hardware_tee_absent_here_is_refused(tmp_path: Path) -> None:
    done = serve_refused("--tee", "configfs-tsm", "--tiny-model", "--release",
                         str(release_file(tmp_path)), cwd=tmp_path)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("hushcc: error:")


def test_unknown_config_key_is_named(tmp_path: Path) -> None:
    config = tmp_path / "node.toml"
    config.write_text("max_bodyy = 5\n")
    done = serve_refused("--tiny-model", "--config", str(config), cwd=tmp_path)
    assert done.returncode == 1
    assert "unknown config keys: max_bodyy" in done.stderr
