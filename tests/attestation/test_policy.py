"""Policy TOML: strict defaults, every key checked."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from attestation.policy import Policy, load_policy, parse_policy
from attestation.vcek import TcbVersion
from hushcc.errors import ConfigError

M = "ab" * 48


def test_defaults_are_strict() -> None:
    p = parse_policy("")
    assert p == Policy()
    assert not p.allow_debug
    assert not p.allow_simulated
    assert p.require_gpu
    assert p.allowed_measurements == frozenset()
    assert p.max_checkpoint_age == timedelta(days=2)
    assert p.revocation_required(simulated=False)
    assert not p.revocation_required(simulated=True)


def test_full_policy(tmp_path: Path) -> None:
    path = tmp_path / "policy.toml"
    path.write_text(f"""
allow_debug = true
allow_simulated = true
require_gpu = false
vmpl = 1
max_age_seconds = 3600
max_validity_seconds = 7200
allowed_measurements = ["{M}"]
log_key = "log.example+1234abcd+AAAA"
max_checkpoint_age_seconds = 600
revocation = "best-effort"
[min_tcb]
bootloader = 3
snp = 8
microcode = 115
""")
    p = load_policy(path)
    assert p.allow_debug
    assert p.allow_simulated
    assert not p.require_gpu
    assert p.vmpl == 1
    assert p.max_age == timedelta(hours=1)
    assert p.max_validity == timedelta(hours=2)
    assert p.allowed_measurements == frozenset({bytes.fromhex(M)})
    assert p.min_tcb == TcbVersion(bootloader=3, tee=0, snp=8, microcode=115)
    assert p.log_key == "log.example+1234abcd+AAAA"
    assert p.max_checkpoint_age == timedelta(minutes=10)
    assert not p.revocation_required(simulated=False)
    assert parse_policy('revocation = "required"').revocation_required(simulated=True)


@pytest.mark.parametrize("text", [
    pytest.param("allow_debgu = true", id="typo-key"),
    pytest.param('allow_debug = "yes"', id="string-bool"),
    pytest.param("vmpl = 4", id="vmpl-range"),
    pytest.param("vmpl = true", id="vmpl-bool"),
    pytest.param("max_age_seconds = -1", id="negative-age"),
    pytest.param('allowed_measurements = ["abcd"]', id="short-measurement"),
    pytest.param('allowed_measurements = ["zz"]', id="not-hex"),
    pytest.param('allowed_measurements = "ab"', id="not-list"),
    pytest.param("[min_tcb]\nsnp = 256", id="spl-range"),
    pytest.param("[min_tcb]\nfoo = 1", id="spl-unknown"),
    pytest.param("min_tcb = 1", id="min-tcb-not-table"),
    pytest.param('log_key = ""', id="empty-log-key"),
    pytest.param("allow_debug = ", id="not-toml"),
    pytest.param('revocation = "maybe"', id="revocation-mode"),
    pytest.param("max_checkpoint_age_seconds = -5", id="negative-checkpoint-age"),
    pytest.param("[sev_snp_guest_policy]\nallow_migrate = true", id="guest-unknown"),
    pytest.param("[sev_snp_guest_policy]\nallow_smt = 1", id="guest-not-bool"),
    pytest.param("[sev_snp_guest_policy]\nmin_abi_major = 256", id="guest-abi-range"),
])
def test_invalid_policies(text: str) -> None:
    with pytest.raises(ConfigError):
        parse_policy(text)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        load_policy(tmp_path / "absent.toml")


def test_log_witnesses() -> None:
    p = parse_policy('log_witnesses = ["w1+abcd+AAAA", "w2+abcd+BBBB"]\n'
                     "log_witness_threshold = 2\n")
    assert p.log_witnesses == ("w1+abcd+AAAA", "w2+abcd+BBBB")
    assert p.log_witness_threshold == 2
    assert parse_policy('log_witnesses = ["w1+abcd+AAAA"]').log_witness_threshold == 1
    assert parse_policy("").log_witnesses == ()


@pytest.mark.parametrize("text", [
    pytest.param('log_witnesses = ["w1"]\nlog_witness_threshold = 2', id="threshold-above-count"),
    pytest.param('log_witnesses = ["w1"]\nlog_witness_threshold = 0', id="zero-threshold"),
    pytest.param('log_witnesses = [""]', id="empty-key"),
    pytest.param('log_witnesses = "w1"', id="not-a-list"),
    pytest.param("log_witness_threshold = 1", id="threshold-without-witnesses"),
])
def test_invalid_witnesses(text: str) -> None:
    with pytest.raises(ConfigError):
        parse_policy(text)
