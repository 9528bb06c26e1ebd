"""Intel TDX quote verification (dcap-qvl + our parser and policy) on real quotes.

Vectors: ../shared/vectors/attestation/intel_tdx.json and intel_tdx/dcap_qvl_samples/README.json
(which quote verifies with which collateral at which time). Every negative has a positive twin.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
from typing import TYPE_CHECKING, Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from attestation import tdx
from attestation.gpu.anchors import load_root
from attestation.report import AttestationError, Step
from attestation.tdx import TdxPolicy, verify_tdx_quote
from attestation.tdx_quote import MEASUREMENT_FIELDS, TdReport, TdxQuote
from hushcc.errors import ProtocolError

if TYPE_CHECKING:
    from pathlib import Path


def _failure(err: pytest.ExceptionInfo[AttestationError]) -> Step:
    step = err.value.report.first_failure
    assert step is not None
    return step


def _at(unix: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(unix, dt.UTC)


PAIRS = {
    # id: (quote file, hex?, collateral file, verification time from README.json)
    "tdx_v4_uptodate": ("tdx_quote", False, "tdx_quote_collateral.json", 1751328000),
    "tdx_v4_uptodate_near": (
        "near_gas_test_quote_hex.txt",
        True,
        "near_gas_test_quote_collateral.json",
        1757462400,
    ),
}


@pytest.fixture(scope="module")
def samples(shared_vectors: Path) -> Path:
    return shared_vectors / "attestation" / "intel_tdx" / "dcap_qvl_samples"


def _load(samples: Path, pair: str) -> tuple[bytes, str, dt.datetime]:
    quote_file, is_hex, coll_file, unix = PAIRS[pair]
    raw = (samples / quote_file).read_bytes()
    quote = bytes.fromhex(raw.decode().strip()) if is_hex else raw
    return quote, (samples / coll_file).read_text(), _at(unix)


def _pinned(quote: bytes) -> TdxPolicy:
    r = TdxQuote.from_bytes(quote).report
    return TdxPolicy(**{name: getattr(r, name) for name in MEASUREMENT_FIELDS})


@pytest.mark.parametrize("pair", sorted(PAIRS))
def test_real_quote_verifies_with_every_value_pinned(samples: Path, pair: str) -> None:
    quote, collateral, now = _load(samples, pair)
    report = verify_tdx_quote(quote, collateral, now=now, policy=_pinned(quote))
    assert report.passed
    reasons = {s.name: s.reason for s in report.steps}
    assert reasons["tcb status"] == "platform TCB UpToDate is allowed"
    for name in MEASUREMENT_FIELDS:
        assert reasons[name] == "equals the expected value"


@pytest.mark.parametrize("field", MEASUREMENT_FIELDS)
def test_each_pinned_value_mutated_in_turn_fails(samples: Path, field: str) -> None:
    quote, collateral, now = _load(samples, "tdx_v4_uptodate")
    policy = _pinned(quote)
    good: bytes = getattr(policy, field)
    bad: dict[str, Any] = {field: bytes([good[0] ^ 1]) + good[1:]}
    with pytest.raises(AttestationError) as err:
        verify_tdx_quote(quote, collateral, now=now, policy=dataclasses.replace(policy, **bad))
    assert _failure(err).name == field
    # positive twin: the unmutated policy passes the same step
    ok = verify_tdx_quote(quote, collateral, now=now, policy=policy)
    assert next(s for s in ok.steps if s.name == field).passed


def test_values_match_the_published_parse(shared_vectors: Path, samples: Path) -> None:
    readme = json.loads((samples / "README.json").read_text())
    parsed = next(p for p in readme["pairs"] if p["id"] == "tdx_v4_uptodate")["quote_parsed"]
    r = TdxQuote.from_bytes((samples / "tdx_quote").read_bytes()).report
    assert r.mr_td.hex() == parsed["mr_td"]
    assert [r.rtmr0.hex(), r.rtmr1.hex(), r.rtmr2.hex(), r.rtmr3.hex()] == [
        parsed["rt_mr0"],
        parsed["rt_mr1"],
        parsed["rt_mr2"],
        parsed["rt_mr3"],
    ]


@pytest.mark.parametrize(
    ("unix", "verifies"),
    [
        (1750329147, True),  # first second of the collateral window
        (1750329146, False),  # QE identity issued in the future
        (1752919234, True),  # last second
        (1752919235, False),  # CRL expired
        (1780272000, False),  # 2026-06-01
    ],
)
def test_collateral_time_window(samples: Path, unix: int, verifies: bool) -> None:
    quote, collateral, _ = _load(samples, "tdx_v4_uptodate")
    if verifies:
        assert verify_tdx_quote(quote, collateral, now=_at(unix), policy=TdxPolicy()).passed
    else:
        with pytest.raises(AttestationError) as err:
            verify_tdx_quote(quote, collateral, now=_at(unix), policy=TdxPolicy())
        assert _failure(err).name == "dcap-qvl"


def test_tcb_status_policy(samples: Path) -> None:
    quote, collateral, now = _load(samples, "tdx_v4_uptodate")
    strict_other = TdxPolicy(allowed_tcb_statuses=frozenset({"OutOfDate"}))
    with pytest.raises(AttestationError) as err:
        verify_tdx_quote(quote, collateral, now=now, policy=strict_other)
    assert _failure(err).name == "tcb status"
    assert verify_tdx_quote(quote, collateral, now=now, policy=TdxPolicy()).passed


def test_v5_quote_below_every_tcb_level_rejected(samples: Path) -> None:
    quote = (samples / "tdx_quote_outdated").read_bytes()
    parsed = TdxQuote.from_bytes(quote)
    assert parsed.version == 5
    assert parsed.report.mr_service_td  # TDX 1.5 body
    collateral = (samples / "tdx_quote_outdated_collateral.json").read_text()
    with pytest.raises(AttestationError) as err:
        verify_tdx_quote(quote, collateral, now=_at(1772323200), policy=TdxPolicy())
    failure = _failure(err)
    assert failure.name == "dcap-qvl"
    assert "No matching TCB level" in failure.reason


def test_wrong_pinned_root_rejected(samples: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    quote, collateral, now = _load(samples, "tdx_v4_uptodate")
    monkeypatch.setattr(tdx, "load_intel_root", lambda: load_root("device_identity_root.pem"))
    with pytest.raises(AttestationError) as err:
        verify_tdx_quote(quote, collateral, now=now, policy=TdxPolicy())
    assert _failure(err).name == "intel root"
    monkeypatch.undo()
    assert verify_tdx_quote(quote, collateral, now=now, policy=TdxPolicy()).passed


def test_one_byte_mutations_of_signed_region_rejected(samples: Path) -> None:
    quote, collateral, now = _load(samples, "tdx_v4_uptodate")
    signed_end = 48 + 584 + 4 + int.from_bytes(quote[632:636], "little")
    for pos in [*range(0, signed_end, 7), signed_end - 1]:
        mutated = bytearray(quote)
        mutated[pos] ^= 0x01
        with pytest.raises(AttestationError):
            verify_tdx_quote(bytes(mutated), collateral, now=now, policy=TdxPolicy())


def test_debug_attribute_parsed(samples: Path) -> None:
    body = bytearray(TdxQuote.from_bytes((samples / "tdx_quote").read_bytes()).report.td_attributes)
    assert not TdReport.from_bytes(bytes(584)).debug
    raw = bytearray(584)
    raw[120] = 0x01
    assert TdReport.from_bytes(bytes(raw)).debug
    assert body[0] & 1 == 0


# --- go-tdx-guest quotes: parse; no signed collateral exists for them ---------------------------


@pytest.mark.parametrize(
    ("name", "key"),
    [("tdx_prod_quote_SPR_E4.dat", "quote_v4"), ("quote_v5_sample.dat", "quote_v5")],
)
def test_go_tdx_guest_quotes_parse_to_published_values(
    shared_vectors: Path, name: str, key: str
) -> None:
    meta = json.loads((shared_vectors / "attestation" / "intel_tdx.json").read_text())["parsed"][
        key
    ]
    q = TdxQuote.from_bytes((shared_vectors / "attestation" / "intel_tdx" / name).read_bytes())
    assert q.version == meta["version"]
    assert q.report.mr_td.hex() == meta["mr_td"]
    assert q.report.rtmr0.hex() == meta["rtmr0"]
    assert q.report.report_data.hex() == meta["report_data"]
    assert q.report.mr_seam.hex() == meta["mr_seam"]
    assert q.pck_chain_pem.startswith(b"-----BEGIN CERTIFICATE-----")


# --- parser fuzzing: only ProtocolError escapes ------------------------------------------------


@settings(max_examples=200)
@given(st.binary(max_size=1200))
def test_fuzz_arbitrary_bytes(data: bytes) -> None:
    with contextlib.suppress(ProtocolError):
        TdxQuote.from_bytes(data)


@settings(max_examples=150)
@given(st.data())
def test_fuzz_mutated_real_quote(shared_vectors: Path, data: st.DataObject) -> None:
    quote = shared_vectors / "attestation" / "intel_tdx" / "dcap_qvl_samples" / "tdx_quote"
    raw = bytearray(quote.read_bytes())
    pos = data.draw(st.integers(0, len(raw) - 1))
    raw[pos] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(raw)))
    with contextlib.suppress(ProtocolError):
        TdxQuote.from_bytes(bytes(raw[:cut]))


# --- collateral-independent checks for the quotes without signed collateral -----------------------

SIG_ONLY = [
    # (file under intel_tdx/, a time when its PCK certificate was valid)
    ("tdx_prod_quote_SPR_E4.dat", "2023-07-01T01:00:00+00:00"),  # go-tdx-guest test time
    ("quote_v5_sample.dat", "2026-02-03T01:00:00+00:00"),  # go-tdx-guest test time
    ("dcap_qvl_samples/tdx_quote_outdated", "2026-03-01T00:00:00+00:00"),
]


@pytest.mark.parametrize(("name", "when"), SIG_ONLY)
def test_signatures_and_chain_without_collateral(
    shared_vectors: Path, name: str, when: str
) -> None:
    quote = (shared_vectors / "attestation" / "intel_tdx" / name).read_bytes()
    report = tdx.verify_quote_signatures(quote, now=dt.datetime.fromisoformat(when))
    assert report.passed
    assert report.steps[-1].reason.startswith("NOT checked")
    assert report.warnings == [report.steps[-1]]  # a warning, never shown as a plain pass
    assert all(not s.warning for s in report.steps[:-1])  # the twin: what was checked passed
    signed_end = len(TdxQuote.from_bytes(quote).signed_region)
    for pos in (0, 200, signed_end - 1, signed_end + 10, signed_end + 200, signed_end + 700):
        mutated = bytearray(quote)
        mutated[pos] ^= 0x01
        with pytest.raises(AttestationError):
            tdx.verify_quote_signatures(bytes(mutated), now=dt.datetime.fromisoformat(when))


def test_signatures_rejected_before_pck_certificate_validity(shared_vectors: Path) -> None:
    quote = (shared_vectors / "attestation" / "intel_tdx" / "quote_v5_sample.dat").read_bytes()
    with pytest.raises(AttestationError) as err:
        tdx.verify_quote_signatures(quote, now=dt.datetime(2025, 1, 1, tzinfo=dt.UTC))
    assert _failure(err).name == "pck chain"
