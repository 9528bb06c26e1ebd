"""`hushcc log ...` as a newcomer meets it (issue 11): one-line errors, checks before appending,
and `keygen -> serve -> entry -> add -> attest simulate -> attest verify` with real processes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from app.cli import main
from tests.transparency_log.tlog_helpers import release
from transparency_log.keys import write_key_pair
from transparency_log.note import Signer

if TYPE_CHECKING:
    from collections.abc import Callable

HUSHCC = [sys.executable, "-m", "app"]
REPO = Path(__file__).resolve().parents[2]
NOT_UTF8 = b"\xff\xfe\x80 not utf-8 \xc3\x28\n"


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    """Good keys and entries, and bad files of every kind."""
    write_key_pair(tmp_path / "log.key", Signer.generate("cli.test.log"))
    write_key_pair(tmp_path / "rel.key", Signer.generate("release.test"))
    out = {"log.key": tmp_path / "log.key", "log.pub": tmp_path / "log.key.pub",
           "rel.key": tmp_path / "rel.key", "rel.pub": tmp_path / "rel.key.pub"}
    for name, data in {"bin": NOT_UTF8, "empty": b"", "entry": release(1).to_bytes(),
                       "deep": b"[" * 100_000, "state": b"not a note\n"}.items():
        (tmp_path / name).write_bytes(data)
        (tmp_path / name).chmod(0o600)
        out[name] = tmp_path / name
    out["dir"] = tmp_path
    return out


URL = "http://127.0.0.1:9"  # never contacted: every case fails before any request
BAD: list[tuple[str, Callable[[dict[str, Path]], list[str]], str]] = [
    ("serve non-UTF-8 --config", lambda f: ["log", "serve", "--state-dir", str(f["dir"] / "s"),
                                            "--config", str(f["bin"])], "not UTF-8"),
    ("serve --config missing", lambda f: ["log", "serve", "--state-dir", str(f["dir"] / "s"),
                                          "--config", str(f["dir"] / "nope.toml")], "not found"),
    ("serve non-UTF-8 --log-key", lambda f: ["log", "serve", "--state-dir", str(f["dir"] / "s"),
                                             "--log-key", str(f["bin"]), "--release-key",
                                             str(f["rel.pub"])], "not UTF-8"),
    ("serve public --log-key", lambda f: ["log", "serve", "--state-dir", str(f["dir"] / "s"),
                                          "--log-key", str(f["log.pub"]), "--release-key",
                                          str(f["rel.pub"])], "public verifier key"),
    ("serve non-UTF-8 --release-key", lambda f: ["log", "serve", "--state-dir",
                                                 str(f["dir"] / "s"), "--log-key",
                                                 str(f["log.key"]), "--release-key",
                                                 str(f["bin"])], "not UTF-8"),
    ("serve private --release-key", lambda f: ["log", "serve", "--state-dir",
                                               str(f["dir"] / "s"), "--log-key",
                                               str(f["log.key"]), "--release-key",
                                               str(f["rel.key"])], "private key"),
    ("serve --port 99999", lambda f: ["log", "serve", "--port", "99999", "--state-dir",
                                      str(f["dir"] / "s")], "port out of range"),
    ("serve --port x", lambda _f: ["log", "serve", "--port", "x", "--state-dir", "s"],
     "not a port number"),
    ("add non-UTF-8 entry", lambda f: ["log", "add", str(f["bin"]), "--url", URL,
                                       "--release-key", str(f["rel.key"])], "not UTF-8"),
    ("add empty entry", lambda f: ["log", "add", str(f["empty"]), "--url", URL], "empty"),
    ("add entry is a directory", lambda f: ["log", "add", str(f["dir"]), "--url", URL],
     "directory"),
    ("add deeply nested entry", lambda f: ["log", "add", str(f["deep"]), "--url", URL],
     "not JSON"),
    ("add --url without scheme", lambda f: ["log", "add", str(f["entry"]), "--url",
                                            "localhost:8081"], "not an http(s) URL"),
    ("add --url not a url", lambda f: ["log", "add", str(f["entry"]), "--url", "not a url"],
     "not an http(s) URL"),
    ("add private --log-key", lambda f: ["log", "add", str(f["entry"]), "--url", URL,
                                         "--release-key", str(f["rel.key"]), "--log-key",
                                         str(f["log.key"])], "private key"),
    ("add public --release-key", lambda f: ["log", "add", str(f["entry"]), "--url", URL,
                                            "--release-key", str(f["rel.pub"])],
     "public verifier key"),
    ("add non-UTF-8 --release-key", lambda f: ["log", "add", str(f["entry"]), "--url", URL,
                                               "--release-key", str(f["bin"])], "not UTF-8"),
    ("add plain entry unsigned", lambda f: ["log", "add", str(f["entry"]), "--url", URL],
     "needs --release-key"),
    ("verify malformed state", lambda f: ["log", "verify", "--url", URL, "--log-key",
                                          str(f["log.pub"]), "--state", str(f["state"])],
     "state file"),
    ("verify non-UTF-8 --log-key", lambda f: ["log", "verify", "--url", URL, "--log-key",
                                              str(f["bin"]), "--state", str(f["state"])],
     "not UTF-8"),
    ("verify --max-age -1", lambda f: ["log", "verify", "--url", URL, "--log-key",
                                       str(f["log.pub"]), "--state", "s", "--max-age", "-1"],
     "--max-age"),
    ("keygen 100,000-character --name", lambda f: ["log", "keygen", "--out",
                                                   str(f["dir"] / "k"), "--name", "n" * 100_000],
     "longer than 255 bytes"),
    ("keygen --name with a space", lambda f: ["log", "keygen", "--out", str(f["dir"] / "k"),
                                              "--name", "a b"], "space"),
    ("keygen --name with a plus", lambda f: ["log", "keygen", "--out", str(f["dir"] / "k"),
                                             "--name", "a+b"], "'+'"),
    ("entry bad measurement", lambda _f: ["log", "entry", "--image-digest", "d",
                                          "--measurement", "sim=XYZ"], "lowercase hex"),
    ("entry measurement without =", lambda _f: ["log", "entry", "--image-digest", "d",
                                                "--measurement", "sim"], "KEY=VALUE"),
]


@pytest.mark.parametrize(("case", "argv", "says"), BAD, ids=[b[0] for b in BAD])
def test_bad_input_is_one_line_error_exit_1_nothing_written(
        files: dict[str, Path], capsys: pytest.CaptureFixture[str], case: str,
        argv: Callable[[dict[str, Path]], list[str]], says: str) -> None:
    before = sorted(p.name for p in files["dir"].iterdir())
    assert main(argv(files)) == 1, case
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 1, captured.err[:500]
    assert lines[0].startswith("hushcc: error: ")
    assert says in lines[0]
    assert "Traceback" not in captured.err + captured.out
    assert "n" * 300 not in lines[0]  # a 100,000-character name is not echoed back
    assert sorted(p.name for p in files["dir"].iterdir()) == before


def test_keygen_name_rules_positive_twin(files: dict[str, Path]) -> None:
    name = "log.example.com/" + "x" * (255 - 16)  # exactly 255 bytes: accepted
    assert main(["log", "keygen", "--out", str(files["dir"] / "k"), "--name", name]) == 0
    assert (files["dir"] / "k.pub").read_text().startswith(name + "+")


def _run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*HUSHCC, *args], capture_output=True, text=True, check=False,
                          timeout=120, cwd=cwd, env=dict(os.environ, PYTHONPATH=str(REPO)))


def _ok(*args: str) -> subprocess.CompletedProcess[str]:
    result = _run(*args)
    assert result.returncode == 0, (args, result.stderr[-2000:])
    assert "Traceback" not in result.stderr
    return result


def test_keygen_serve_entry_add_simulate_verify_chain_without_hand_built_files(
        tmp_path: Path) -> None:
    """The commands chain as documented: each one's output file is the next one's input."""
    d = tmp_path
    _ok("log", "keygen", "--out", str(d / "log.key"), "--name", "chain.test.log")
    _ok("log", "keygen", "--out", str(d / "rel.key"), "--name", "chain.test.release")
    _ok("ohttp", "keygen", "--out", str(d / "gw.key"))
    server = subprocess.Popen(
        [*HUSHCC, "log", "serve", "--port", "0", "--state-dir", str(d / "state"), "--log-key",
         str(d / "log.key"), "--release-key", str(d / "rel.key.pub")],
        stdout=subprocess.PIPE, text=True, env=dict(os.environ, PYTHONPATH=str(REPO)))
    try:
        assert server.stdout is not None
        url = server.stdout.readline().split()[-1]
        measured = _ok("attest", "measure", "--root", str(REPO)).stdout.split()[0]
        _ok("log", "entry", "--image-digest", "sha256:dev", "--measurement", f"sim={measured}",
            "--out", str(d / "entry.json"))
        # A wrong --log-key is caught before anything is appended (the retry then is clean).
        wrong = d / "other.key"
        write_key_pair(wrong, Signer.generate("chain.test.log"))
        refused = _run("log", "add", str(d / "entry.json"), "--url", url, "--release-key",
                       str(d / "rel.key"), "--log-key", str(d / "other.key.pub"))
        assert refused.returncode == 1
        assert refused.stderr.startswith("hushcc: error:")
        assert len(refused.stderr.splitlines()) == 1
        assert refused.stdout == ""
        added = _ok("log", "add", str(d / "entry.json"), "--url", url, "--release-key",
                    str(d / "rel.key"), "--log-key", str(d / "log.key.pub"))
        stapled = json.loads(added.stdout)
        assert set(stapled) == {"entry", "index", "checkpoint", "inclusion_proof"}
        assert stapled["index"] == 0  # the refused add appended nothing
        assert "inclusion proof verified" in added.stderr
        root_hex = added.stderr.split("root ")[1].split()[0]
        assert len(root_hex) == 64 and int(root_hex, 16) >= 0  # noqa: PT018 - digests in hex
        (d / "release.json").write_text(added.stdout)
        retry = _ok("log", "add", str(d / "entry.json"), "--url", url, "--release-key",
                    str(d / "rel.key"), "--out", str(d / "again.json"))
        assert json.loads((d / "again.json").read_text())["index"] == 0  # a retry dedupes
        assert "logged at index 0" in retry.stdout
        _ok("attest", "simulate", "--key-config", str(d / "gw.key.pub"), "--out",
            str(d / "bundle.json"), "--release", str(d / "release.json"))
        log_pub = (d / "log.key.pub").read_text().strip()
        (d / "policy.toml").write_text(f'allow_simulated = true\nlog_key = "{log_pub}"\n')
        verified = _ok("attest", "verify", str(d / "bundle.json"), "--policy",
                       str(d / "policy.toml"))
        assert "VERIFIED" in verified.stdout
        seen = _ok("log", "verify", "--url", url, "--log-key", str(d / "log.key.pub"),
                   "--state", str(d / "seen"))
        assert f"tree size 1, root {root_hex}" in seen.stdout
    finally:
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=20) == 0
        assert server.stdout is not None
        server.stdout.close()
