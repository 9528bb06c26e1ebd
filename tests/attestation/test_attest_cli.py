"""`hushcc attest simulate | show | verify | measure` through the one CLI entry point."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path

import pytest

from app.cli import main
from attestation.bundle import Bundle
from attestation.simulated_node import release_entry
from ohttp.keyconfig import serialize_key_configs
from tests.ohttp.ohttp_helpers import make_key
from transparency_log import merkle
from transparency_log.checkpoint import Checkpoint, sign_checkpoint
from transparency_log.cosignature import Cosigner
from transparency_log.note import Signer

ORIGIN = "log.hushcc.test"


@pytest.fixture
def simulated(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    key_config = tmp_path / "kc.bin"
    key_config.write_bytes(serialize_key_configs([make_key().config]))
    out = tmp_path / "bundle.json"
    assert main(["attest", "simulate", "--key-config", str(key_config), "--out", str(out)]) == 0
    assert "not logged" in capsys.readouterr().out
    return out


def _log_release(tmp_path: Path, bundle_path: Path) -> tuple[Path, str]:
    """Log the bundle's release entry in a fresh log; return (release file, log key)."""
    entry = Bundle.from_json(bundle_path.read_bytes()).release.entry
    signer = Signer.generate(ORIGIN)
    tree = merkle.MerkleTree()
    tree.append(release_entry(b"\x01" * 48))
    tree.append(entry)
    note = sign_checkpoint(Checkpoint(ORIGIN, tree.size, tree.root())
                           .with_timestamp(int(time.time())), signer)
    release = tmp_path / "release.json"
    release.write_text(json.dumps({
        "entry": base64.b64encode(entry).decode(), "index": 1, "checkpoint": note.decode(),
        "inclusion_proof": [base64.b64encode(h).decode()
                            for h in merkle.inclusion_proof(tree, 1, tree.size)]}))
    return release, signer.verifier().to_string()


def test_show(simulated: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["attest", "show", str(simulated)]) == 0
    out = capsys.readouterr().out
    assert "cpu:         simulated" in out
    assert "gpu[0]:      simulated" in out
    assert "measurement:" in out


def test_verify_default_policy_refuses_simulated(
    simulated: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text("")
    assert main(["attest", "verify", str(simulated), "--policy", str(policy)]) == 1
    captured = capsys.readouterr()
    assert "[FAIL] (1) CPU type" in captured.out
    assert "rejected at step (1) CPU type" in captured.err


def test_verify_unlogged_fails_at_log_step(
    simulated: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text("allow_simulated = true\n")
    assert main(["attest", "verify", str(simulated), "--policy", str(policy)]) == 1
    captured = capsys.readouterr()
    assert "[PASS] (3) binding" in captured.out
    assert "rejected at step (5) log inclusion" in captured.err


def test_simulate_with_logged_release_verifies(
    tmp_path: Path, simulated: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    release, log_key = _log_release(tmp_path, simulated)
    out = tmp_path / "logged.json"
    key_config = tmp_path / "kc.bin"
    assert main(["attest", "simulate", "--key-config", str(key_config), "--out", str(out),
                 "--release", str(release)]) == 0
    policy = tmp_path / "policy.toml"
    policy.write_text(f'allow_simulated = true\nlog_key = "{log_key}"\n')
    capsys.readouterr()
    assert main(["attest", "verify", str(out), "--policy", str(policy)]) == 0
    captured = capsys.readouterr()
    assert captured.out.startswith("attestation bundle: VERIFIED with")
    assert "[PASS] (5) log inclusion" in captured.out
    # simulated evidence has no CRL: by default NOT checked is a warning, never a pass ...
    assert "[WARN] (1) simulated: revocation: NOT checked" in captured.out
    # ... and a policy requiring revocation fails closed without a cached CRL
    required = tmp_path / "required.toml"
    required.write_text(policy.read_text() + 'revocation = "required"\n')
    (tmp_path / "cache").mkdir()
    assert main(["attest", "verify", str(out), "--policy", str(required),
                 "--revocation-cache", str(tmp_path / "cache")]) == 1
    assert "rejected at step (1) simulated: revocation" in capsys.readouterr().err
    # twin: after not_after the same bundle fails at the validity step
    after = Bundle.from_json(out.read_bytes()).not_after.isoformat()
    assert main(["attest", "verify", str(out), "--policy", str(policy), "--at", after]) == 1
    assert "rejected at step (6) validity window" in capsys.readouterr().err


def test_verify_bad_inputs(
    simulated: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text("allow_simulated = maybe\n")
    assert main(["attest", "verify", str(simulated), "--policy", str(policy)]) == 1
    assert "policy is not valid TOML" in capsys.readouterr().err
    policy.write_text("")
    assert main(["attest", "verify", str(simulated), "--policy", str(policy),
                 "--at", "yesterday"]) == 1
    assert main(["attest", "show", str(tmp_path / "absent.json")]) == 1
    garbage = tmp_path / "garbage.json"
    garbage.write_text("{}")
    assert main(["attest", "show", str(garbage)]) == 1
    assert "hushcc: error:" in capsys.readouterr().err


def test_measure(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "a.py").write_text("x = 1\n")
    assert main(["attest", "measure", "--root", str(tmp_path), "a.py"]) == 0
    first = capsys.readouterr().out.split()[0]
    (tmp_path / "a.py").write_text("x = 2\n")
    assert main(["attest", "measure", "--root", str(tmp_path), "a.py"]) == 0
    assert capsys.readouterr().out.split()[0] != first
    assert len(first) == 96


def test_verify_with_witness_policy(
    tmp_path: Path, simulated: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    release, log_key = _log_release(tmp_path, simulated)
    witness = Cosigner.generate("witness.test")
    policy = tmp_path / "policy.toml"
    policy.write_text(f'allow_simulated = true\nlog_key = "{log_key}"\n'
                      f'log_witnesses = ["{witness.verifier().to_string()}"]\n')
    bundles = {}
    for name, cosign in (("plain", False), ("cosigned", True)):
        doc = json.loads(release.read_text())
        if cosign:
            doc["checkpoint"] = witness.cosign(doc["checkpoint"].encode(), 1).decode()
        staple = tmp_path / f"{name}.release.json"
        staple.write_text(json.dumps(doc))
        bundles[name] = tmp_path / f"{name}.json"
        assert main(["attest", "simulate", "--key-config", str(tmp_path / "kc.bin"),
                     "--out", str(bundles[name]), "--release", str(staple)]) == 0
    capsys.readouterr()
    assert main(["attest", "verify", str(bundles["cosigned"]), "--policy", str(policy)]) == 0
    assert main(["attest", "verify", str(bundles["plain"]), "--policy", str(policy)]) == 1
    assert "rejected at step (5) log inclusion" in capsys.readouterr().err


def test_simulate_measures_the_model_and_config_a_node_would_serve(
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    from attestation.measure import measure_node, source_root  # noqa: PLC0415

    key_config = tmp_path / "kc.bin"
    key_config.write_bytes(serialize_key_configs([make_key().config]))
    model = tmp_path / "weights.gguf"
    model.write_bytes(b"GGUF\x03weights")
    config = tmp_path / "node.toml"
    config.write_text("max_num_seqs = 4\n")
    entries = {}
    for name, extra in (("code", []), ("served", ["--model", str(model), "--config", str(config)])):
        out, entry = tmp_path / f"{name}.json", tmp_path / f"{name}.entry.json"
        assert main(["attest", "simulate", "--key-config", str(key_config), "--out", str(out),
                     "--entry-out", str(entry), *extra]) == 0
        entries[name] = json.loads(entry.read_bytes())["measurements"]["sim"]
    capsys.readouterr()
    assert entries["served"] == measure_node(source_root(), model, config)[0].hex
    assert entries["code"] == measure_node(source_root())[0].hex  # a --tiny-model node's
    assert entries["served"] != entries["code"]
