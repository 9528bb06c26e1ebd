"""The one way to name a verification step (`report.step`, `report.include`), fail closed."""

from __future__ import annotations

import pytest

from attestation.report import AttestationError, VerificationReport
from hushcc.errors import ProtocolError


def test_step_records_a_pass() -> None:
    report = VerificationReport("x")
    with report.step("one") as step:
        step.passed("fine")
    assert [(s.name, s.passed, s.reason) for s in report.steps] == [("one", True, "fine")]


def test_error_inside_a_step_fails_that_step() -> None:
    report = VerificationReport("x")
    with pytest.raises(AttestationError) as exc, report.step("two"):
        raise ProtocolError("bad bytes")
    assert exc.value.report.first_failure is not None
    assert (exc.value.report.first_failure.name, exc.value.report.first_failure.reason) == \
        ("two", "bad bytes")


def test_step_without_outcome_fails_closed() -> None:
    report = VerificationReport("x")
    with pytest.raises(AttestationError), report.step("silent"):
        pass
    assert not report.passed


def test_include_returns_the_result_and_prefixes_steps() -> None:
    def sub_ok() -> tuple[int, VerificationReport]:
        sub = VerificationReport("sub")
        sub.ok("a", "fine")
        return 7, sub

    def sub_bad() -> tuple[int, VerificationReport]:
        sub = VerificationReport("sub")
        raise sub.fail("b", "broken")

    report = VerificationReport("x")
    assert report.include("(1) sub", sub_ok) == 7
    with pytest.raises(AttestationError):
        report.include("(2) sub", sub_bad)
    assert [(s.name, s.passed) for s in report.steps] == [("(1) sub: a", True),
                                                          ("(2) sub: b", False)]
