"""`hushcc relay|issuer ...` refuse bad configuration with one line and exit 1 (never serve)."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.cli import main as hushcc
from tests.relay.relay_helpers import NODE_ID, make_issuer


@pytest.fixture(scope="module")
def pub(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_issuer(tmp_path_factory.mktemp("issuer")).pub


def _relay(pub: Path, *extra: str) -> list[str]:
    return ["relay", "serve", "--port", "0", "--issuer-key", str(pub), "--issuer-name", "i.test",
            *extra]


@pytest.mark.parametrize(("extra", "message"), [
    pytest.param((), "at least one node", id="no-node"),
    pytest.param(("--node", "abc=http://127.0.0.1:1"), "64 lowercase hex", id="short-id"),
    pytest.param(("--node", f"{NODE_ID}=ftp://x"), "http(s)", id="bad-url"),
    pytest.param(("--node", NODE_ID), "ID=URL", id="no-url"),
    pytest.param(("--node", f"{NODE_ID}=http://a", "--node", f"{NODE_ID}=http://b"),
                 "duplicate node id", id="duplicate"),
    pytest.param(("--node", f"{NODE_ID}=http://a", "--config", "/nonexistent.toml"),
                 "not found", id="missing-config"),
])
def test_relay_serve_refuses_bad_config(pub: Path, capsys: pytest.CaptureFixture[str],
                                        extra: tuple[str, ...], message: str) -> None:
    assert hushcc(_relay(pub, *extra)) == 1
    err = capsys.readouterr().err
    assert err.startswith("hushcc: error: ")
    assert message in err
    assert err.count("\n") == 1


@pytest.mark.parametrize(("toml", "message"), [
    pytest.param("[limits]\nmax_bodyy = 1\n", "unknown [limits] keys: max_bodyy", id="typo"),
    pytest.param("[limits]\nmax_body = -1\n", "positive", id="negative"),
    pytest.param("[limits]\nmax_body = true\n", "positive", id="bool"),
    pytest.param("[[nodes]]\nid = 1\n", "string id and url", id="node-type"),
    pytest.param("nodes = [", "relay config is not valid TOML", id="bad-toml"),
    pytest.param("issuer_nam = 'i'\n", "unknown relay config keys: issuer_nam", id="top-typo"),
])
def test_relay_config_file_errors_are_one_line(pub: Path, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str],
                                               toml: str, message: str) -> None:
    path = tmp_path / "relay.toml"
    path.write_text(toml)
    assert hushcc(_relay(pub, "--node", f"{NODE_ID}=http://a", "--config", str(path))) == 1
    assert message in capsys.readouterr().err


def test_relay_and_issuer_need_their_key_files(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    assert hushcc(["relay", "serve", "--node", f"{NODE_ID}=http://a", "--issuer-name", "i"]) == 1
    assert "--issuer-key" in capsys.readouterr().err
    assert hushcc(_relay(tmp_path / "missing.pub", "--node", f"{NODE_ID}=http://a")) == 1
    assert "issuer public key not found" in capsys.readouterr().err
    keys = tmp_path / "keys"
    keys.write_text("k\n")
    keys.chmod(0o600)
    assert hushcc(["issuer", "serve", "--key", str(tmp_path / "none.key"), "--api-keys",
                   str(keys)]) == 1
    assert "issuer key not found" in capsys.readouterr().err
    assert hushcc(["issuer", "serve", "--key", "k", "--api-keys", str(keys), "--quota",
                   "0"]) == 1
    assert "--quota" in capsys.readouterr().err
