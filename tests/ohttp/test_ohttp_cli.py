"""`hushcc ohttp keygen` / `show-config` through `app.cli.main`."""

from __future__ import annotations

import stat
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from app.cli import main
from ohttp.encapsulation import decapsulate_request, encapsulate_request
from ohttp.keyconfig import GatewayKey, parse_key_configs
from ohttp.suites import AeadId

if TYPE_CHECKING:
    from tests.canary_guard import CanaryRegistry


def test_keygen_writes_private_0600_and_public_config(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], canaries: CanaryRegistry
) -> None:
    out = tmp_path / "gw.key"
    assert main(["ohttp", "keygen", "--out", str(out), "--key-id", "7",
                 "--aead", "chacha20poly1305", "--aead", "aes256gcm"]) == 0
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    key = GatewayKey.from_key_file(out.read_bytes())
    secret = key.to_key_file().decode().split('"private_key": "')[1][:64]
    canaries.add(secret)
    (config,) = parse_key_configs((tmp_path / "gw.key.pub").read_bytes())
    assert config == key.config
    assert config.key_id == 7
    assert [s.aead_id for s in config.suites] == [AeadId.CHACHA20_POLY1305, AeadId.AES_256_GCM]
    # The pair works end to end.
    request, _ = encapsulate_request(config, b"\x00\x03GET\x05https\x00\x01/")
    assert decapsulate_request(request, key)[0] == b"\x00\x03GET\x05https\x00\x01/"
    assert main(["ohttp", "show-config", str(tmp_path / "gw.key.pub")]) == 0
    shown = capfd.readouterr().out
    assert "private" in shown
    assert secret not in shown
    assert "key_id=7" in shown
    assert config.public_key.hex() in shown
    assert "CHACHA20_POLY1305" in shown


def test_keygen_refuses_to_overwrite(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "gw.key"
    assert main(["ohttp", "keygen", "--out", str(out)]) == 0
    before = out.read_bytes()
    assert main(["ohttp", "keygen", "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("hushcc: error: refusing to overwrite")
    assert err.count("\n") == 1
    assert out.read_bytes() == before
    (tmp_path / "other.key.pub").write_bytes(b"x")
    assert main(["ohttp", "keygen", "--out", str(tmp_path / "other.key")]) == 1
    assert not (tmp_path / "other.key").exists()


def test_keygen_bad_key_id_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ohttp", "keygen", "--out", str(tmp_path / "k"), "--key-id", "256"]) == 1
    err = capsys.readouterr().err
    assert err == "hushcc: error: --key-id: 256 is out of range 0-255\n"
    assert not (tmp_path / "k").exists()


def test_show_config_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.pub"
    bad.write_bytes(b"\x00\x05hello")
    assert main(["ohttp", "show-config", str(bad)]) == 1
    assert capsys.readouterr().err.startswith("hushcc: error: ")
    assert main(["ohttp", "show-config", str(tmp_path / "missing.pub")]) == 1
    missing = tmp_path / "missing.pub"
    assert capsys.readouterr().err == f"hushcc: error: key config not found: {missing}\n"


def test_show_config_accepts_a_bare_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    raw = bytes.fromhex(
        "01002031e1f05a740102115220e9af918f738674aec95f54db6e04eb705aae8e79815500080001000100010003"
    )
    path = tmp_path / "rfc.cfg"
    path.write_bytes(raw)
    assert main(["ohttp", "show-config", str(path)]) == 0
    assert "key_id=1" in capsys.readouterr().out


def test_help_and_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["ohttp", "keygen", "--help"])
    assert info.value.code == 0
    assert "--out" in capsys.readouterr().out
    with pytest.raises(SystemExit) as info:
        main(["ohttp", "keygen"])
    assert info.value.code == 2
    assert main(["ohttp"]) == 2
