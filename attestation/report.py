"""The verification report every attestation verifier fills in, step by step (fail closed).

Invariants:
* A verifier records every step it runs, in order, with pass/fail and a reason a person can
  read; reasons name what was compared, never secret or request data.
* `VerificationReport.require()` raises `AttestationError` (a `VerificationError`) naming the
  first failed step, carrying the whole report; a caller gets nothing usable on failure.
* One way to name a step: `with report.step("chain") as step: ...; step.passed("reason")`
  (or `report.check(...)` for a single condition). A `ProtocolError` / `VerificationError`
  raised inside the block fails exactly that step with the error's message; a block that ends
  without `passed` fails too (fail closed). Sub-verifiers' steps come in through
  `report.include`, which returns the sub-verifier's result.
* A check the policy lets go unperformed (revocation under "best-effort") is a WARNING step:
  it does not fail the report, and it never renders or counts as a pass (`warnings`).
* Pure: no I/O, no clock (time is a parameter of the verifiers, not of the report).
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar

from hushcc.errors import ProtocolError, VerificationError

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Step:
    """One numbered verification step and its outcome."""

    name: str
    passed: bool
    reason: str
    warning: bool = False  # not failed, but NOT checked: never shown or counted as a pass

    def line(self) -> str:
        """Render as one report line: `[PASS] name: reason` (or FAIL, WARN)."""
        label = "WARN" if self.warning else "PASS" if self.passed else "FAIL"
        return f"[{label}] {self.name}: {self.reason}"


@dataclass(slots=True)
class StepOutcome:
    """What a `report.step` block says when it succeeds (`passed(reason)`)."""

    reason: str | None = None
    warning: bool = False

    def passed(self, reason: str) -> None:
        """Mark the step as passed with a reason a person can read."""
        self.reason = reason

    def warn(self, reason: str) -> None:
        """Mark the step as NOT checked, allowed by policy: a warning, not a pass."""
        self.reason, self.warning = reason, True


@dataclass(slots=True)
class VerificationReport:
    """An ordered list of steps; the subject says what was verified (e.g. `sev-snp report`)."""

    subject: str
    steps: list[Step] = field(default_factory=list)

    def ok(self, name: str, reason: str) -> None:
        """Record a passed step."""
        self.steps.append(Step(name, passed=True, reason=reason))

    def fail(self, name: str, reason: str) -> AttestationError:
        """Record a failed step and return the error to raise (`raise report.fail(...)`)."""
        self.steps.append(Step(name, passed=False, reason=reason))
        return AttestationError(self)

    def check(self, condition: bool, name: str, passed: str, failed: str) -> None:  # noqa: FBT001
        """Record `name` as passed when `condition` holds, else record it failed and raise."""
        if not condition:
            raise self.fail(name, failed)
        self.ok(name, passed)

    @contextmanager
    def step(self, name: str) -> Iterator[StepOutcome]:
        """Run one named step (module docstring): its errors fail it, `passed` records it.

        Raises:
            AttestationError: The block raised `ProtocolError` / `VerificationError`, or ended
                without calling `passed`.
        """
        outcome = StepOutcome()
        try:
            yield outcome
        except AttestationError:
            raise
        except (ProtocolError, VerificationError) as exc:
            raise self.fail(name, str(exc)) from exc
        if outcome.reason is None:
            raise self.fail(name, "the step recorded no outcome")
        self.steps.append(Step(name, passed=True, reason=outcome.reason, warning=outcome.warning))

    def include(self, subject: str, verify: Callable[[], tuple[T, VerificationReport]]) -> T:
        """Run a sub-verifier and take its steps, prefixed with `subject`; return its result.

        Raises:
            AttestationError: The sub-verifier failed (this report then holds its steps too).
        """
        try:
            result, sub = verify()
        except AttestationError as exc:
            self.extend(VerificationReport(subject, exc.report.steps))
            raise AttestationError(self) from exc
        self.extend(VerificationReport(subject, sub.steps))
        return result

    def extend(self, other: VerificationReport) -> None:
        """Append another report's steps, prefixed with its subject."""
        self.steps.extend(
            Step(f"{other.subject}: {s.name}", s.passed, s.reason, s.warning) for s in other.steps
        )

    @property
    def passed(self) -> bool:
        """True when at least one step ran and none failed."""
        return bool(self.steps) and all(s.passed for s in self.steps)

    @property
    def warnings(self) -> list[Step]:
        """The steps that were NOT checked (allowed by policy)."""
        return [s for s in self.steps if s.warning]

    @property
    def first_failure(self) -> Step | None:
        """The first failed step, if any."""
        return next((s for s in self.steps if not s.passed), None)

    def require(self) -> None:
        """Raise `AttestationError` unless every step passed (and at least one ran)."""
        if not self.passed:
            raise AttestationError(self)

    def render(self) -> str:
        """The report as text, one line per step, headed by the subject and the verdict."""
        verdict = "VERIFIED" if self.passed else "REJECTED"
        if self.passed and self.warnings:
            verdict += f" with {len(self.warnings)} WARNING(s)"
        return "\n".join([f"{self.subject}: {verdict}", *(s.line() for s in self.steps)])


class AttestationError(VerificationError):
    """Verification failed at a named step; `.report` holds every step that ran."""

    def __init__(self, report: VerificationReport) -> None:
        """Wrap the report; the message names the first failed step."""
        self.report = report
        failure = report.first_failure
        where = f"{failure.name}: {failure.reason}" if failure else "no verification step ran"
        super().__init__(f"{report.subject} rejected at step {where}")
