"""Bundle build + verify (DESIGN.md "Attestation bundle"): binding, steps, A1/A3/A7 twins."""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import hashlib
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from attestation.amd import AMD_TRUST
from attestation.bundle import (
    Bundle,
    Evidence,
    Release,
    canonical_gpu_evidence,
)
from attestation.gpu import GpuPolicy
from attestation.gpu.simulated import SimulatedGpu
from attestation.policy import Policy
from attestation.report import AttestationError
from attestation.sevsnp import SnpReport
from attestation.simulated import WITH_SIMULATED
from attestation.simulated_node import release_entry
from attestation.verify_bundle import VerifiedBundle, verify_bundle
from hushcc.errors import ProtocolError, VerificationError
from tests.attestation.bundle_helpers import (
    KEY_CONFIG,
    MEASUREMENT,
    NOW,
    SIM_POLICY,
    Node,
    edit,
    make_node,
)


@pytest.fixture(scope="module")
def node() -> Node:
    return make_node()


@pytest.fixture(scope="module")
def good(node: Node) -> bytes:
    return node.bundle().to_json()


def verify(node: Node, data: bytes, *, policy: Policy = SIM_POLICY,
           now: datetime = NOW + timedelta(minutes=5), **kw: Any) -> VerifiedBundle:
    kw.setdefault("gpu_policy", node.gpu_policy)
    kw.setdefault("log", node.log)
    kw.setdefault("cpu_trust", WITH_SIMULATED)
    return verify_bundle(data, policy=policy, now=now, **kw)


def rejected_at(node: Node, data: bytes, **kw: Any) -> str:
    with pytest.raises(AttestationError) as exc:
        verify(node, data, **kw)
    step = exc.value.report.first_failure
    assert step is not None
    assert not exc.value.report.passed
    return step.name


def test_simulated_bundle_verifies(node: Node, good: bytes) -> None:
    verified = verify(node, good)
    assert verified.key_config == KEY_CONFIG
    assert verified.measurement == MEASUREMENT
    names = [s.name for s in verified.report.steps]
    for prefix in ("(0)", "(1)", "(2)", "(3)", "(4)", "(5)", "(6)"):
        assert any(n.startswith(prefix) for n in names), prefix
    assert "(1) simulated: report signature" in names
    assert "(2) GPU 0: nonce" in names
    assert all(s.passed for s in verified.report.steps)


def test_round_trip_and_canonical(good: bytes) -> None:
    bundle = Bundle.from_json(good)
    assert bundle.to_json() == good
    assert Bundle.from_json(bundle.to_json()) == bundle


def test_binding_matches_design_formula(node: Node) -> None:
    nonce = b"\x44" * 32
    bundle = node.bundle(nonce=nonce)
    report = SnpReport.from_bytes(bundle.cpu.evidence)
    times = b"2026-11-23T20:00:00Z" + b"2026-11-24T08:00:00Z"
    tail = bundle.node_id + times + nonce
    expected = hashlib.sha512(b"hushcc/attest/v2" + hashlib.sha256(KEY_CONFIG).digest()
                              + hashlib.sha256(canonical_gpu_evidence(bundle.gpu)).digest()
                              + tail).digest()
    assert report.report_data == expected == bundle.binding.report_data(bundle.gpu)
    assert bundle.binding.gpu_nonce() == hashlib.sha256(
        b"hushcc/gpu/v2" + hashlib.sha256(KEY_CONFIG).digest() + tail).digest()
    assert b'"version":2' in bundle.to_json()


def test_v1_bundle_refused(node: Node, good: bytes) -> None:
    assert rejected_at(node, edit(good, lambda d: d.update(version=1))) == "(0) parse"


# A1 (issue 9 item 4): every field a step decides on is bound. Each rewrite fails at the binding:
# with GPUs the GPU nonce catches it first, without GPUs report_data does.
def _other_key(doc: dict[str, Any]) -> None:
    doc["key_config"] = base64.b64encode(b"\x02" + KEY_CONFIG[1:]).decode()


_REWRITES: dict[str, Callable[[dict[str, Any]], object]] = {
    "key_config": _other_key,
    "node_id": lambda d: d.update(node_id="ee" * 32),
    "not_before": lambda d: d.update(not_before="2026-11-23T20:01:00Z"),
    "not_after": lambda d: d.update(not_after="2026-11-24T09:00:00Z"),
    "nonce": lambda d: d.update(nonce="22" * 32),
}
_NOGPU = Policy(allow_simulated=True, require_gpu=False)


@pytest.fixture(scope="module")
def with_nonce(node: Node) -> dict[str, bytes]:
    nonce = b"\x11" * 32
    return {"gpu": node.bundle(nonce=nonce).to_json(),
            "no-gpu": node.bundle(nonce=nonce, gpus=[]).to_json()}


@pytest.mark.parametrize("field", sorted(_REWRITES))
@pytest.mark.parametrize(("kind", "step", "policy"), [
    pytest.param("gpu", "(2) GPU 0: nonce", SIM_POLICY, id="gpu"),
    pytest.param("no-gpu", "(3) binding", _NOGPU, id="no-gpu"),
])
def test_rewritten_field_fails_binding(
    *, node: Node, with_nonce: dict[str, bytes], field: str, kind: str, step: str, policy: Policy,
) -> None:
    data = with_nonce[kind]
    assert verify(node, data, policy=policy).report.passed  # positive twin
    assert rejected_at(node, edit(data, _REWRITES[field]), policy=policy) == step


def test_swapped_gpu_evidence_breaks_binding(node: Node, good: bytes) -> None:
    other = SimulatedGpu()
    ev, certs = other.attest(Bundle.from_json(good).binding.gpu_nonce())
    swapped = edit(good, lambda d: d["gpu"][0].update(
        evidence=base64.b64encode(ev).decode(),
        certs=[base64.b64encode(c).decode() for c in certs]))
    assert rejected_at(node, swapped) == "(3) binding"


def test_per_request_nonce(node: Node, with_nonce: dict[str, bytes]) -> None:
    nonce, other = b"\x11" * 32, b"\x22" * 32
    data = with_nonce["gpu"]
    assert verify(node, data, expected_nonce=nonce).report.passed
    assert rejected_at(node, data, expected_nonce=other) == "(3) nonce"
    assert rejected_at(node, node.bundle().to_json(), expected_nonce=nonce) == "(3) nonce"
    # the nonce is folded into both bindings: replacing it breaks the GPU nonce first
    assert rejected_at(node, edit(data, lambda d: d.update(nonce=other.hex())),
                       expected_nonce=other) == "(2) GPU 0: nonce"


@pytest.mark.parametrize(("delta", "step"), [
    pytest.param(timedelta(hours=12), "(6) validity window", id="at-not-after"),
    pytest.param(timedelta(days=3), "(6) validity window", id="expired"),
    pytest.param(-timedelta(minutes=1), "(6) validity window", id="before-not-before"),
])
def test_validity_window(node: Node, good: bytes, delta: timedelta, step: str) -> None:
    assert verify(node, good, now=NOW + timedelta(hours=12) - timedelta(seconds=1))
    assert rejected_at(node, good, now=NOW + delta) == step


def test_max_age_and_lifetime(node: Node, good: bytes) -> None:
    strict = dataclasses.replace(SIM_POLICY, max_age=timedelta(hours=1))
    assert verify(node, good, policy=strict, now=NOW + timedelta(minutes=59)).report.passed
    assert rejected_at(node, good, policy=strict, now=NOW + timedelta(hours=2)) == "(6) age"
    short = dataclasses.replace(SIM_POLICY, max_validity=timedelta(hours=1))
    assert rejected_at(node, good, policy=short) == "(6) lifetime"


# A2/A3: the measurement is compared with the logged one; the log proof is required.
def test_measurement_whose_release_is_not_logged(node: Node) -> None:
    # a node measuring other files staples a (true) entry for its measurement: not in the log
    data = node.bundle(measurement=bytes(48)).to_json()
    assert rejected_at(node, data) == "(5) log inclusion"


def test_release_for_other_measurement(node: Node, good: bytes) -> None:
    entry = base64.b64encode(release_entry(b"\x01" * 48)).decode()
    assert rejected_at(node, edit(good, lambda d: d["release"].update(entry=entry))) == \
        "(4) measurement"


def test_allowed_measurements(node: Node, good: bytes) -> None:
    ok = dataclasses.replace(SIM_POLICY, allowed_measurements=frozenset({MEASUREMENT}))
    assert verify(node, good, policy=ok).report.passed
    other = dataclasses.replace(SIM_POLICY, allowed_measurements=frozenset({bytes(48)}))
    assert rejected_at(node, good, policy=other) == "(4) allowed measurement"


def test_log_required(node: Node, good: bytes) -> None:
    assert rejected_at(node, good, log=None) == "(5) log inclusion"
    moved = edit(good, lambda d: d["release"].update(index=1))
    assert rejected_at(node, moved) == "(5) log inclusion"


# A7: simulated roots, relabelled types, debug, GPU not in CC mode.
def test_simulated_refused_by_default(node: Node, good: bytes) -> None:
    default = dataclasses.replace(SIM_POLICY, allow_simulated=False)
    assert rejected_at(node, good, policy=default) == "(1) CPU type"


def test_simulated_root_needs_injected_anchors(node: Node, good: bytes) -> None:
    # the verifier knows AMD's roots only; the simulated root comes from the caller
    assert rejected_at(node, good, cpu_trust=AMD_TRUST) == "(1) CPU trust anchor"
    assert verify(node, good, cpu_trust=WITH_SIMULATED).report.passed


def test_simulated_chain_labelled_sev_snp_hits_amd_root(node: Node, good: bytes) -> None:
    relabelled = edit(good, lambda d: d["cpu"].update(type="sev-snp"))
    assert rejected_at(node, relabelled) == "(1) sev-snp: ARK pinned"


def test_simulated_gpu_labelled_h100_refused(node: Node, good: bytes) -> None:
    relabelled = edit(good, lambda d: d["gpu"][0].update(type="nvidia-h100"))
    assert rejected_at(node, relabelled) == "(2) GPU 0: chain"


def test_gpu_not_in_cc_mode(node: Node) -> None:
    off = SimulatedGpu(cc_mode=False)
    policy = GpuPolicy(reference_measurements=off.reference_measurements())
    data = node.bundle(gpus=[off]).to_json()
    assert rejected_at(node, data, gpu_policy=policy) == "(2) GPU 0: measurements"


def test_gpu_required(node: Node) -> None:
    data = node.bundle(gpus=[]).to_json()
    assert rejected_at(node, data) == "(2) GPU present"
    assert rejected_at(node, data, gpu_policy=None) == "(2) GPU present"
    assert rejected_at(node, node.bundle().to_json(), gpu_policy=None) == "(2) GPU 0"


def test_debug_guest_refused(node: Node) -> None:
    data = node.bundle().to_json()
    bundle = Bundle.from_json(data)
    debug = node.tee.report(SnpReport.from_bytes(bundle.cpu.evidence).report_data, MEASUREMENT,
                            debug=True)
    patched = edit(data, lambda d: d["cpu"].update(evidence=base64.b64encode(debug).decode()))
    assert rejected_at(node, patched) == "(1) simulated: debug"
    allowed = dataclasses.replace(SIM_POLICY, allow_debug=True)
    assert verify(node, patched, policy=allowed).report.passed


@pytest.mark.parametrize("bad", [
    pytest.param(b"", id="empty"), pytest.param(b"[]", id="list"),
    pytest.param(b'{"version": 2}', id="missing-keys"),
])
def test_parse_failures(node: Node, bad: bytes) -> None:
    assert rejected_at(node, bad) == "(0) parse"


def test_duplicate_keys_and_strict_base64(good: bytes) -> None:
    with pytest.raises(ProtocolError):
        Bundle.from_json(good[:-1] + b',"version":2}')
    with pytest.raises(ProtocolError):
        Bundle.from_json(edit(good, lambda d: d.update(key_config=d["key_config"] + "!")))
    with pytest.raises(ProtocolError):
        Bundle.from_json(edit(good, lambda d: d.update(not_after="2026-11-24T08:00:00+00:00")))


# A9: only typed errors escape.
@given(st.binary(max_size=512))
@settings(max_examples=100)
def test_fuzz_bundle_parser(data: bytes) -> None:
    with contextlib.suppress(ProtocolError):
        Bundle.from_json(data)


@given(data=st.data())
@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_fuzz_verify_mutated_bundle(node: Node, good: bytes, data: st.DataObject) -> None:
    blob = bytearray(good)
    for _ in range(data.draw(st.integers(1, 3))):
        blob[data.draw(st.integers(0, len(blob) - 1))] = data.draw(st.integers(0, 255))
    with contextlib.suppress(VerificationError):
        verify(node, bytes(blob))


_b = st.binary(max_size=64)
_ev = st.builds(lambda t, e, c: Evidence(t, e, tuple(c)),
                st.sampled_from(["sev-snp", "tdx", "simulated"]), _b, st.lists(_b, max_size=3))


@given(key_config=_b, ev=_ev, gpus=st.lists(_b, max_size=3), index=st.integers(0, 1 << 40),
       checkpoint=st.text(max_size=40), nonce=st.none() | st.binary(min_size=32, max_size=32),
       seconds=st.integers(0, 10**9))
@settings(max_examples=60)
def test_bundle_round_trip(
    *, key_config: bytes, ev: Evidence, gpus: list[bytes], index: int, checkpoint: str,
    nonce: bytes | None, seconds: int,
) -> None:
    start = datetime.fromtimestamp(seconds, tz=UTC)
    bundle = Bundle(b"\x0f" * 32, key_config, start, start + timedelta(hours=1), ev,
                    tuple(Evidence("nvidia-h100", g, (g,)) for g in gpus),
                    Release(b"{}", index, checkpoint, (b"\x00" * 32,)), nonce)
    data = bundle.to_json()
    assert Bundle.from_json(data) == bundle
    assert Bundle.from_json(data).to_json() == data


def test_real_milan_report_through_the_bundle_path(shared_vectors: Path) -> None:
    """A real AMD report goes through step (1) of the bundle verifier (AMD roots, debug allowed)
    and is then refused at (3): its report_data is go-sev-guest's test nonce, not our binding."""
    base = shared_vectors / "attestation" / "sev_snp"
    report = (base / "attestation.bin").read_bytes()
    at = datetime(2023, 6, 1, tzinfo=UTC)
    bundle = Bundle(b"\xab" * 32, KEY_CONFIG, at, at + timedelta(hours=1),
                    Evidence("sev-snp", report, ((base / "vcek.der").read_bytes(),)), (),
                    Release(release_entry(SnpReport.from_bytes(report).measurement), 0, "", ()))
    policy = dataclasses.replace(SIM_POLICY, allow_simulated=False, allow_debug=True,
                                 require_gpu=False, revocation="best-effort")
    with pytest.raises(AttestationError) as exc:
        verify_bundle(bundle.to_json(), policy=policy, now=at, log=None)
    steps = {s.name: s.passed for s in exc.value.report.steps}
    assert steps["(1) sev-snp: report signature"]
    assert steps["(1) sev-snp: debug"]
    assert exc.value.report.first_failure is not None
    assert exc.value.report.first_failure.name == "(3) binding"
    strict = dataclasses.replace(policy, allow_debug=False)
    with pytest.raises(AttestationError) as exc:
        verify_bundle(bundle.to_json(), policy=strict, now=at, log=None)
    assert exc.value.report.first_failure is not None
    assert exc.value.report.first_failure.name == "(1) sev-snp: debug"
